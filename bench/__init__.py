"""Benchmarks and the development-set builders they share (run the scripts from the repo root)."""
