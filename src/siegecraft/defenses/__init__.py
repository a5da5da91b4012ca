"""Defenses: robust aggregation, clipping, input-side detection and asynchronous defenses."""
