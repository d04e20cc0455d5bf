"""Training: feature dumps and crops, the training loop, checkpoints."""
