"""Training: examples, the step plan, the loss, the trainer, its engines and the process launcher."""
