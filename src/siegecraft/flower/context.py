"""siegecraft's view of a Flower federation: the experiment that describes its task, and the context an
attack sees (data, partitions, model factory, local trainer), built once per process.

Flower runs clients in Ray actors that outlive a round, so the context (which loads the dataset) is
cached per process and per experiment; an actor builds it on its first client and reuses it after.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from siegecraft.core.config import read_toml
from siegecraft.core.data.partition import partition
from siegecraft.core.workload import build_workload
from siegecraft.engines.federated.client import ClientTrainer
from siegecraft.engines.federated.config import FederatedExperiment
from siegecraft.engines.federated.defense_setup import server_root_split
from siegecraft.engines.federated.extensions import FederationContext

_CONTEXTS: dict[str, FederationContext] = {}


def load_experiment(experiment: FederatedExperiment | Mapping[str, Any] | str | Path) -> FederatedExperiment:
    """A validated federated experiment from an object, a config table, or a TOML file path."""
    if isinstance(experiment, FederatedExperiment):
        return experiment
    if isinstance(experiment, (str, Path)):
        experiment = read_toml(Path(experiment))
    table = {k: v for k, v in experiment.items() if k not in ("topology", "plugins")}
    return FederatedExperiment.model_validate(table)


def experiment_key(exp: FederatedExperiment) -> str:
    """One string per experiment content (the context cache key)."""
    return json.dumps(exp.model_dump(mode="json"), sort_keys=True, default=str)


def federation_context(experiment: FederatedExperiment | Mapping[str, Any] | str | Path,
                       figures_dir: str | Path | None = None) -> FederationContext:
    """The `FederationContext` of `experiment` (its data split, model factory and trainer), cached per process.

    The clients' data is split exactly as siegecraft's engine splits it (a server root set for FLTrust is
    withheld first), so client `i` here is client `i` there. Figures an attack draws go to `figures_dir`.
    """
    exp = load_experiment(experiment)
    key = experiment_key(exp) + f"|{figures_dir}"
    if key not in _CONTEXTS:
        work = build_workload(exp)
        train = server_root_split(work.train, exp)[0] if exp.defense.names else work.train
        d = exp.data
        parts = partition(train.y, exp.fl.clients, d.partition, seed=exp.seed, **d.partition_params())
        trainer = ClientTrainer(work.model_factory, train, parts, exp.train, exp.seed)
        figures = Path(figures_dir) if figures_dir is not None else Path(tempfile.mkdtemp(prefix="siegecraft-fig-"))
        figures.mkdir(parents=True, exist_ok=True)
        _CONTEXTS[key] = FederationContext(exp, train, work.test, parts, work.model_factory, trainer, figures)
    return _CONTEXTS[key]
