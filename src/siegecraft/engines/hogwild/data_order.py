"""Each worker's own data order: a fresh shuffle per epoch, optionally conditioned to contain biased batches.

`PlantedRun` conditions the shuffle on an event: `count` consecutive batches, starting at a given local
step, each holding exactly ceil(share * batch_size) samples of one label. The rest of the epoch is a
uniform shuffle of what is left, so the epoch still visits every sample once. This stands in for an
attacker who waits until such a batch occurs naturally; `binomial_tail` gives how rare that is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class PlantedRun:
    """`count` batches from local step `start_step` on, each with at least a `share` of label `label`."""

    label: int
    share: float
    start_step: int
    count: int = 1


def order_seed(seed: int, rank: int, epoch: int) -> int:
    """A well-mixed 63-bit seed for (run seed, worker, epoch)."""
    return int(np.random.SeedSequence([seed, rank, epoch]).generate_state(2, np.uint64)[0] >> np.uint64(1))


def planted_count(share: float, batch_size: int) -> int:
    """Target samples in a planted batch: the fewest that reach `share` (so a `share` threshold holds it)."""
    return min(batch_size, math.ceil(share * batch_size - 1e-9))


def steps_per_epoch(n: int, batch_size: int) -> int:
    return math.ceil(n / batch_size)


class DataOrder:
    """Index batches for one worker, epoch by epoch (the last batch of an epoch may be short)."""

    def __init__(
        self, labels: torch.Tensor, batch_size: int, *, seed: int, rank: int, planted: PlantedRun | None = None
    ) -> None:
        self.labels = labels
        self.batch_size = batch_size
        self.seed, self.rank = seed, rank
        self.planted = planted
        self.steps_per_epoch = steps_per_epoch(len(labels), batch_size)
        if planted is not None:
            self._check_planted(planted)

    def _check_planted(self, run: PlantedRun) -> None:
        first, last = run.start_step, run.start_step + run.count - 1
        full_batches = len(self.labels) // self.batch_size
        if first // self.steps_per_epoch != last // self.steps_per_epoch or last % self.steps_per_epoch >= full_batches:
            raise ValueError(f"planted batches {first}..{last} must lie within full batches of one epoch")
        need = planted_count(run.share, self.batch_size) * run.count
        have = int((self.labels == run.label).sum())
        if need > have or (self.batch_size * run.count - need) > len(self.labels) - have:
            raise ValueError(f"cannot plant {run.count} batches with share {run.share} of label {run.label}")

    def epoch(self, epoch: int) -> list[torch.Tensor]:
        gen = torch.Generator().manual_seed(order_seed(self.seed, self.rank, epoch))
        perm = torch.randperm(len(self.labels), generator=gen)
        run = self.planted
        if run is not None and run.start_step // self.steps_per_epoch == epoch:
            perm = self._conditioned(perm, run, gen)
        return list(perm.split(self.batch_size))

    def _conditioned(self, perm: torch.Tensor, run: PlantedRun, gen: torch.Generator) -> torch.Tensor:
        bs = self.batch_size
        is_target = self.labels[perm] == run.label
        target, other = perm[is_target], perm[~is_target]
        k = planted_count(run.share, bs)
        planted = []
        for j in range(run.count):
            batch = torch.cat([target[j * k:(j + 1) * k], other[j * (bs - k):(j + 1) * (bs - k)]])
            planted.append(batch[torch.randperm(bs, generator=gen)])
        rest = torch.cat([target[run.count * k:], other[run.count * (bs - k):]])
        rest = rest[torch.randperm(len(rest), generator=gen)]
        cut = (run.start_step % self.steps_per_epoch) * bs
        return torch.cat([rest[:cut], *planted, rest[cut:]])


def binomial_tail(batch_size: int, share: float, p: float) -> float:
    """P(X >= ceil(share * batch_size)) for X ~ Binomial(batch_size, p): how often a natural batch is that biased."""
    k_min = math.ceil(share * batch_size - 1e-9)
    if k_min <= 0:
        return 1.0
    if p <= 0:
        return 0.0
    if p >= 1:
        return 1.0
    total = 0.0
    for k in range(k_min, batch_size + 1):
        log_term = (math.lgamma(batch_size + 1) - math.lgamma(k + 1) - math.lgamma(batch_size - k + 1)
                    + k * math.log(p) + (batch_size - k) * math.log1p(-p))
        total += math.exp(log_term)
    return min(total, 1.0)
