"""Benchmarks run by `make bench`: each a ratio against a baseline measured side by side in the same process."""
