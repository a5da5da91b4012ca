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

Hierarchical synchronisation (`Hierarchy`) keeps the same weight/momentum shards and adds:

    {job}/{plan}/h1/{it}/{i}/{j}     worker i's level-1 gradient shard j (for the member j of i's group)
    {job}/{plan}/h2/{it}/{a}/{k}     group a's partial sum of final shard k (for the owner of k)
    {job}/{plan}/w1/{it}/{j}         level-1 weight shard j (final shards j*G .. j*G+G-1, concatenated)
"""

from __future__ import annotations

import math
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


def auto_group_size(workers: int) -> int:
    """The divisor of `workers` closest to sqrt(workers) (the larger on a tie): O(sqrt n) requests per level."""
    root = math.sqrt(workers)
    divisors = [d for d in range(1, workers + 1) if workers % d == 0]
    return min(divisors, key=lambda d: (abs(d - root), -d))


@dataclass(frozen=True)
class Hierarchy:
    """Two-level scatter-reduce over n = G x g workers: role r = a*g + j is member j of group a.

    Final shards are the flat layout (`shard_bounds(P, n)`); level-1 shard j is final shards j*G .. j*G+G-1
    (contiguous), which member j of every group sums over its group; worker (a, j) then owns final shard
    k = j*G + a, summing the G groups' partial sums of it.
    """

    workers: int
    group_size: int

    def __post_init__(self) -> None:
        if self.group_size < 1 or self.workers % self.group_size:
            raise ValueError(f"group size {self.group_size} does not divide {self.workers} workers")

    @property
    def groups(self) -> int:
        return self.workers // self.group_size

    def position(self, role: int) -> tuple[int, int]:
        """(group a, index j) of `role`."""
        return divmod(role, self.group_size)

    def members(self, group: int) -> list[int]:
        """Roles of group `group`, in index order."""
        return list(range(group * self.group_size, (group + 1) * self.group_size))

    def owned(self, role: int) -> int:
        """The final shard `role` averages, steps and writes."""
        a, j = self.position(role)
        return j * self.groups + a

    def finals(self, j: int) -> list[int]:
        """Final shards that make up level-1 shard j."""
        return list(range(j * self.groups, (j + 1) * self.groups))

    def owner(self, k: int) -> int:
        """The role that owns final shard k."""
        j, a = divmod(k, self.groups)
        return a * self.group_size + j

    def level1_bounds(self, length: int) -> list[tuple[int, int]]:
        """Bounds of the g level-1 shards of a vector of `length` values."""
        final, g = shard_bounds(length, self.workers), self.groups
        return [(final[j * g][0], final[j * g + g - 1][1]) for j in range(self.group_size)]


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

    def level1_grad(self, plan: str, it: int, worker: int, j: int) -> str:
        return f"{self.job}/{plan}/h1/{it}/{worker}/{j}"

    def level2_grad(self, plan: str, it: int, group: int, k: int) -> str:
        return f"{self.job}/{plan}/h2/{it}/{group}/{k}"

    def level1_weights(self, plan: str, it: int, j: int) -> str:
        return f"{self.job}/{plan}/w1/{it}/{j}"
