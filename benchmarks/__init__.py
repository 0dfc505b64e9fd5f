"""Benchmark reports live in benchmarks/results/; the harness itself is hart.bench."""
