"""Layer 3: networks, losses, guidance, sampling, likelihood, metrics and training."""
