"""Helpers of `scripts/bench`: timing and statistics, an AWS endpoint on loopback, and one module per row."""
