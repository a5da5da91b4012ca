"""Citadel as the federated engine's `zero_sum` secure aggregation (`[secure] aggregation = "zero_sum"`).

`ZeroSumAggregation.open(exp, partitions)` launches the deployment; its `round(rnd, weights, clients)`
gives (mean update or None, info) like the plain path; an aborted round (on_dropout = "abort", or
fewer than two survivors) leaves the global model unchanged and is recorded in `info`.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch

from siegecraft.core.config import FieldError
from siegecraft.core.data.datasets import load_dataset
from siegecraft.enclave.backends import backend_names
from siegecraft.enclave.deployment import CitadelRuntime, CitadelSpec
from siegecraft.enclave.errors import RoundAbortedError
from siegecraft.engines.federated.config import FederatedExperiment, SecureConfig
from siegecraft.engines.federated.secure import SECURE_AGGREGATIONS, SecureAggregation

log = logging.getLogger("siegecraft.enclave")


def spec_from_experiment(exp: FederatedExperiment, partitions: list[np.ndarray]) -> CitadelSpec:
    """The CitadelSpec of an experiment: same data, model input shape, training recipe and seed."""
    d, m = exp.data, exp.model
    train = load_dataset(d.dataset, "train", data_dir=d.data_dir, **d.options)
    c, h, _ = train.shape
    channels, size = m.channels or c, m.image_size or h
    data_options = dict(d.options)
    if (channels, size) != (c, h):
        data_options.update(channels=channels, size=size)
    model_options = {"in_channels": channels, "num_classes": train.num_classes, "image_size": size, **m.options}
    return CitadelSpec(
        dataset=d.dataset, data_options=data_options, data_dir=d.data_dir, partitions=list(partitions),
        model=m.name, model_options=model_options, train=exp.train.model_dump(), seed=exp.seed,
        fanout=exp.secure.fanout, on_dropout=exp.secure.on_dropout, attestation=exp.secure.attestation,
        max_update_norm=exp.secure.max_update_norm,
    )


class CitadelRound:
    """The engine's handle on a running Citadel deployment."""

    def __init__(self, runtime: CitadelRuntime) -> None:
        self.runtime = runtime

    def round(self, rnd: int, global_weights: torch.Tensor, clients: list[int]) -> tuple[torch.Tensor | None,
                                                                                          dict[str, Any]]:
        try:
            result = self.runtime.run_round(rnd, global_weights, clients)
        except RoundAbortedError as exc:
            log.warning("%s; the global model is unchanged", exc)
            return None, {"dropped": exc.dropped, "aborted": exc.reason}
        info = {"dropped": result.dropped, "num_samples": result.num_samples,
                "secure_clipped_updates": result.clipped_updates,
                "secure_clipped_coordinates": result.clipped_coordinates,
                **{f"secure_{k}": v for k, v in result.timings.items()}}
        return result.mean_update, info

    def close(self) -> None:
        self.runtime.close()


def open_secure_aggregation(exp: FederatedExperiment, partitions: list[np.ndarray]) -> CitadelRound:
    """Launch the deployment for `exp` (called once per run by the federated engine)."""
    return CitadelRound(CitadelRuntime(spec_from_experiment(exp, partitions)))


@SECURE_AGGREGATIONS.register("zero_sum")
class ZeroSumAggregation(SecureAggregation):
    """Citadel: zero-sum masks and hierarchical aggregation across attested enclaves; the server sees the sum."""

    sum_only = True

    @classmethod
    def check(cls, secure: SecureConfig) -> None:
        if secure.attestation not in backend_names():
            raise FieldError(("attestation",), secure.attestation,
                             f"unknown attestation backend; allowed: {', '.join(backend_names())}")

    @classmethod
    def open(cls, exp: FederatedExperiment, partitions: list[np.ndarray]) -> CitadelRound:
        return open_secure_aggregation(exp, partitions)
