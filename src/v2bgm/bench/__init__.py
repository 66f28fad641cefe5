"""Benchmark commands for the GPU machine (not timed unit tests): each prints a JSON report."""
