"""The topology registry: how drivers find an engine's experiment schema and its runner.

An engine registers a `Topology` subclass with `@TOPOLOGIES.register("name")`; `[topology]` in a config
picks it. The drivers validate the config with `schema`, call `preflight` (checks that need the data,
before any run directory exists) and then `run`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from siegecraft.core.config import ExperimentBase
from siegecraft.core.data.image_dataset import ImageDataset
from siegecraft.core.registry import Registry
from siegecraft.core.results.rundir import RunDir

Progress = Callable[..., None]


class Topology:
    """One engine's entry point: the experiment model it accepts and how to run one."""

    schema: ClassVar[type[ExperimentBase]] = ExperimentBase
    #: dotted config keys (or whole sections) `--resume` may change besides output.* and tracking.*,
    #: e.g. the federated round count, which a resumed run extends from its last checkpoint
    resume_may_differ: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def preflight(cls, exp: Any, train_set: ImageDataset) -> None:
        """Checks that need the data (`train_set`, already loaded: its class count, ...); raise FieldError."""
        del exp, train_set

    @classmethod
    def run(cls, exp: Any, run: RunDir, *, progress: Progress | None = None, resume: bool = False) -> dict[str, Any]:
        """Run `exp` into `run` and return the summary's `final` metrics."""
        raise NotImplementedError

    @classmethod
    def success_metric(cls, exp: Any) -> str | None:
        """The `final` key that measures the configured attack's success (None without an attack)."""
        del exp
        return None


TOPOLOGIES: Registry[type[Topology]] = Registry("topology")
