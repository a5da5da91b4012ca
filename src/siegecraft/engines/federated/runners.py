"""Which engine executes a federated experiment: `[fl] engine`, a registry of runners.

The federated engine registers its own round loop as `siegecraft`; a bridge to another framework (the
Flower bridge in `siegecraft.flower`) registers itself here, so this layer never imports it. A runner
checks what it cannot honour (`check`, before any work) and runs the experiment into a run directory.
"""

from __future__ import annotations

from typing import Any

from siegecraft.core.registry import Registry
from siegecraft.core.results.rundir import RunDir
from siegecraft.core.topology import Progress

#: how to get a runner that is not registered because its optional dependency is missing
INSTALL_HINTS = {"flower": "needs Flower (flwr 1.41), which is not installed: pip install 'siegecraft[flower]'"}


class FederatedRunner:
    """One way to execute a `FederatedExperiment`; subclasses are registered in `FEDERATED_RUNNERS`."""

    @classmethod
    def check(cls, exp: Any) -> None:
        """Refuse settings this runner cannot honour: raise FieldError with the key path inside the experiment."""
        del exp

    @classmethod
    def run(cls, exp: Any, run: RunDir, *, progress: Progress | None = None, resume: bool = False) -> dict[str, Any]:
        """Run every round into `run` and return the summary's `final` metrics."""
        raise NotImplementedError


FEDERATED_RUNNERS: Registry[type[FederatedRunner]] = Registry("federated engine")


def unknown_runner_message(name: str) -> str:
    """What `fl.engine = name` is missing: an install hint for a known optional engine, else the known names."""
    known = ", ".join(FEDERATED_RUNNERS.names())
    return INSTALL_HINTS.get(name, f"unknown federated engine; known: {known}")
