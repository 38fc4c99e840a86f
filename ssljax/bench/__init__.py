"""Benchmarks that need no accelerator: compiled-memory analysis of the losses."""
