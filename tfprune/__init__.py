"""tfprune: magnitude and structured pruning for Keras 3."""
