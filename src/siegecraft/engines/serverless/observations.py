"""`Measurement`: what one executed plan cost and where its time went, the planner's only input."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from siegecraft.engines.serverless.specs import Config


@dataclass
class Measurement:
    """Measured (or, in the planner study, simulated) outcome of running `iterations` with `config`.

    Times are seconds: `wall_s` = `startup_s` + `iterations` x `iter_s`; `iter_s` = `compute_s` (mean per
    worker and iteration) + `comm_s` (store traffic, waiting for the slowest peer, polling).
    """

    config: Config
    phase: str
    iterations: int
    samples: int
    wall_s: float
    startup_s: float
    iter_s: float
    compute_s: float
    comm_s: float
    cost_usd: float
    invocations: int = 0
    cold_starts: int = 0
    failures: int = 0
    retries: int = 0
    bytes_per_worker: float = 0.0
    busiest_role_bytes: float = 0.0
    requests_per_worker: float = 0.0  # store round trips per worker and iteration (polls included)
    values_per_worker: float = 0.0  # keys written or read per worker and iteration
    train_loss: float = float("nan")
    switched: bool = True

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Measurement:
        return cls(**{**raw, "config": Config(**raw["config"])})
