"""Benchmark scripts (``python -m benchmarks.<name>``); each prints its figures and the ratio it is judged by."""
