"""Benchmarks: scenarios (model x backend x batch), per-process measurements, reports and plots."""
