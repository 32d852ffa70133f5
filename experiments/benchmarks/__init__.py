"""Benchmarks against PyTorch and of the data, training and canonicalisation pipelines; results go to
``experiments/results/<machine>/``."""
