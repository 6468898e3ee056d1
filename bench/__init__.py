"""Benchmarks of the purchase path, run by hand (`make bench`); never part of the tests."""
