"""Attacks on collaborative training, registered by name."""
