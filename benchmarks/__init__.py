"""Reproducible comparisons against peers; run each as `python -m benchmarks.<name>`."""
