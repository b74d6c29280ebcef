"""Checks: Great Expectations suites on MNIST, the checks on a new batch, drift statistics."""
