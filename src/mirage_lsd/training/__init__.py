"""Training the built-in model: data, config and the training loop."""
