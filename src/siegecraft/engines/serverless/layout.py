"""Where a training job's state lives in the store, and how a flat vector is cut into shards.

Everything is versioned by plan and iteration, so every value is written once with a deterministic content
and a re-run invocation can only rewrite identical bytes:

    {job}/spec                       the job description (JSON)
    {job}/state                      the driver's progress: plans, measurements, epoch records (JSON)
    {job}/data/{meta,x,y}            the training set, uploaded once (the "object store" role)
    {job}/{plan}/w/{it}/{k}          weight shard k at the start of iteration `it`
    {job}/{plan}/m/{it}/{k}          momentum shard k at the start of iteration `it`
    {job}/{plan}/g/{it}/{i}/{k}      worker i's gradient shard k of iteration `it`
    {job}/{plan}/done/{role}         last iteration role `role` completed in this plan
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def shard_bounds(length: int, shards: int) -> list[tuple[int, int]]:
    """Split range(length) into `shards` contiguous, nearly equal pieces (the first ones one longer)."""
    if shards < 1:
        raise ValueError(f"shards must be >= 1, got {shards}")
    base, extra = divmod(length, shards)
    bounds, start = [], 0
    for k in range(shards):
        end = start + base + (1 if k < extra else 0)
        bounds.append((start, end))
        start = end
    return bounds


def split(vector: np.ndarray, shards: int) -> list[np.ndarray]:
    return [vector[a:b] for a, b in shard_bounds(vector.size, shards)]


def to_bytes(array: np.ndarray) -> bytes:
    return np.ascontiguousarray(array, dtype=np.float32).tobytes()


def from_bytes(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype=np.float32)


@dataclass(frozen=True)
class JobKeys:
    """Key names of one job (see the module docstring for the layout)."""

    job: str

    @property
    def spec(self) -> str:
        return f"{self.job}/spec"

    @property
    def state(self) -> str:
        return f"{self.job}/state"

    def data(self, part: str) -> str:
        return f"{self.job}/data/{part}"

    def plan_prefix(self, plan: str) -> str:
        return f"{self.job}/{plan}/"

    def weights(self, plan: str, it: int, k: int) -> str:
        return f"{self.job}/{plan}/w/{it}/{k}"

    def momentum(self, plan: str, it: int, k: int) -> str:
        return f"{self.job}/{plan}/m/{it}/{k}"

    def grad(self, plan: str, it: int, worker: int, k: int) -> str:
        return f"{self.job}/{plan}/g/{it}/{worker}/{k}"

    def done(self, plan: str, role: int) -> str:
        return f"{self.job}/{plan}/done/{role}"
