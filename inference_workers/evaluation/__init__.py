"""Evaluation scripts that print the held-out metrics the model cards quote."""
