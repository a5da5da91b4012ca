"""siegecraft: collaborative ML training and its security, in one framework.

The package is layered; imports point only down the layers (tests/test_layering.py enforces it):

1. `siegecraft.core` - what every topology shares: the registry, the config base and its error
   format, data, models, the one training loop and `[train]` section, results, the topology registry.
   It imports nothing above it.
2. `siegecraft.engines` - one package per topology (`federated`, `hogwild`, `serverless`). Each
   publishes its typed experiment schema, registers itself in `TOPOLOGIES`, and declares the extension
   contracts it accepts (adversaries, defenses, secure aggregation) with their registries. Engines import
   only `core`, never each other.
3. Add-ons - `siegecraft.attacks`, `siegecraft.defenses`, `siegecraft.enclave`: implementations of the
   engines' contracts (Citadel plugs into the federated engine as its `zero_sum` secure aggregation).
   They import `core` and `engines`; among themselves only `attacks -> defenses`.
4. `siegecraft.drivers` - the runner, matrix, sweep, plugin loading and the CLI, on top of everything.

User code extends any registry with its decorator and is loaded as a plugin (docs/extending.md).
"""

__version__ = "0.1.0"
