"""pwru's benchmarks (``make bench``; see docs/benchmarks.md)."""
