"""Training scripts that reproduce the committed demo weights from synthetic data."""
