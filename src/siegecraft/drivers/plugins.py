"""Loading extensions: the built-in engines and add-ons, `plugins = [...]` modules, and installed plugins.

A plugin is any importable module that registers extensions with the registries' decorators
(`@ATTACKS.register("name")`, `@AGGREGATORS.register(...)`, `@MODELS.register(...)`, `@DATASETS.register(...)`,
...). Name it in a config (`plugins = ["mypkg.attacks"]`), on the command line (`--plugin mypkg.attacks`),
or publish it in the entry-point group `siegecraft.plugins` of an installed package.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Iterable
from importlib.metadata import entry_points

from siegecraft.core.config import ConfigError
from siegecraft.engines.federated.runners import INSTALL_HINTS

ENTRY_POINT_GROUP = "siegecraft.plugins"

#: the built-in engines and add-ons; importing them registers their topologies and extensions
BUILTINS = (
    "siegecraft.engines.federated.engine",
    "siegecraft.engines.hogwild.runner",
    "siegecraft.engines.serverless.runner",
    "siegecraft.attacks",
    "siegecraft.defenses",
    "siegecraft.enclave.federated_bridge",
)

#: built-ins that need an optional dependency: module -> (dependency, the fl.engine it registers). Imported
#: only when the dependency is installed; without it (or when it fails to import) that engine is refused
#: naming fl.engine, and every other command keeps working
OPTIONAL_BUILTINS = {"siegecraft.flower": ("flwr", "flower")}

_loaded: set[str] = set()


def load_builtins() -> None:
    """Import every built-in engine and add-on, and each optional one whose dependency is installed (idempotent)."""
    for name in BUILTINS:
        importlib.import_module(name)
    for name, (dependency, engine) in OPTIONAL_BUILTINS.items():
        if name in sys.modules or importlib.util.find_spec(dependency) is None:
            continue
        try:
            importlib.import_module(name)
        except ImportError as err:  # e.g. another flwr release: say so when the engine is asked for
            INSTALL_HINTS[engine] = (f"{name} failed to import ({err}); it needs flwr 1.41: "
                                     "pip install 'siegecraft[flower]'")


def load_entry_points() -> list[str]:
    """Import the modules of installed packages' `siegecraft.plugins` entry points; returns their names."""
    names = []
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.value not in _loaded:
            try:
                importlib.import_module(ep.module)
            except Exception as err:  # noqa: BLE001  (a broken installed plugin is a user-fixable setup problem)
                raise ConfigError(f"entry point {ENTRY_POINT_GROUP}:{ep.name} = {ep.value!r}: import failed "
                                  f"({type(err).__name__}: {err})") from None
            _loaded.add(ep.value)
        names.append(ep.value)
    return names


def load_plugins(modules: Iterable[str], *, key: str = "plugins") -> None:
    """Import each named plugin module once; a missing or failing module is a ConfigError naming it."""
    for i, module in enumerate(modules):
        if module in _loaded or module in sys.modules:
            _loaded.add(module)
            continue
        named = f"{key} {module!r}" if key.startswith("--") else f"{key}[{i}] = {module!r}"
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as err:
            raise ConfigError(f"{named}: module not found ({err.name}); it must be importable "
                              "(installed, or on PYTHONPATH)") from None
        except Exception as err:  # noqa: BLE001  (any failure inside a user plugin becomes one line)
            raise ConfigError(f"{named}: import failed ({type(err).__name__}: {err})") from None
        _loaded.add(module)


def load_all(modules: Iterable[str] = (), *, key: str = "--plugin") -> None:
    """Built-ins, installed entry points, then the named plugin modules (errors name them as `key`)."""
    load_builtins()
    load_entry_points()
    load_plugins(modules, key=key)
