"""The performance harness: `make bench` (see benchmarks/README.md)."""
