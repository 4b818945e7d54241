"""Benchmarks of the bridge against the loopback fakes (`make bench`)."""
