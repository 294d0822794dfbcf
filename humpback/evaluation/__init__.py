"""Evaluation: answers, head-to-head win rates and judges, likelihood instruments, report, read-out, export."""
