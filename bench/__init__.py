"""Benchmarks that print ratios against a baseline; run each with `python -m bench.<name>`.

Figures are printed, never asserted: the tests only check that a tiny run
completes and prints its table.
"""
