"""Tooling that applies, refreshes, rebases and tests the sglang-petit series."""
