"""Training: the trainer, EMA weights and checkpoints."""
