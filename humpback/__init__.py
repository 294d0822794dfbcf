"""Instruction backtranslation (Li et al., 2023, "Humpback") as a cached DVC pipeline."""

__version__ = "0.1.0"
