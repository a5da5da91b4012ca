"""Citadel role processes: admin, training enclaves, aggregators (and their shared machinery)."""
