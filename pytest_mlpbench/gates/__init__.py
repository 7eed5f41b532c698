"""Regression gates on saved pytest-benchmark history."""
