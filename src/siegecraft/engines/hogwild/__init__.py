"""Asynchronous (Hogwild) training on a shared-memory model, and the schedulers that decide when workers run.

`train_hogwild(cfg, attack, defenses, ...)` in `runner` runs one experiment from plain objects;
`HogwildTopology` (same module) is the `topology = "hogwild"` entry. Extension points (async defenses,
scheduling adversaries) are in `extensions`. Import from the submodules: worker processes import only
what they need.
"""
