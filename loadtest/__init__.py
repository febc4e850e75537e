"""Benchmarks and load tests; nothing here is imported by the service."""
