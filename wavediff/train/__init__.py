"""Training: the crop dataset of a feature dump, the training loop, GTA fine-tuning."""
