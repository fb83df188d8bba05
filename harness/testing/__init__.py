"""Helpers for the harness's own tests and benchmarks; the harness itself never imports this package."""
