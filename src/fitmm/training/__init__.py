"""Training: configuration, negative sampling, the training loop with early stopping."""
