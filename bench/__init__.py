"""Benchmarks of the storage worker against the broker's own limit (``python -m bench.throughput``)."""
