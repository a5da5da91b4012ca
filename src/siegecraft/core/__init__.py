"""The core layer: registry, config base, data, models, training loop, results, topology registry.

Nothing here imports from `siegecraft.engines`, the add-ons or `siegecraft.drivers`.
"""
