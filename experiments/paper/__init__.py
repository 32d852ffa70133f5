"""Reproduction of the paper's tables: the paper's numbers, the recipes (``recipes/*.toml``), the runner and
the summary (RESULTS.md)."""
