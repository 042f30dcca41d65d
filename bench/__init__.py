"""make bench: the benchmark (not part of make test)."""
