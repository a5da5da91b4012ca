"""Counters and flags shared by the main process and the workers (shared-memory tensors).

Every counter has one writer (the worker owning its row), so no locks are needed: the global step
(the model's version) is the sum of the per-worker applied-update counts.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

READ, WRITE = 0, 1  # columns of `traps`: trap before reading the parameters / before writing them


def _shared(*shape: int, dtype: torch.dtype = torch.int64) -> torch.Tensor:
    return torch.zeros(*shape, dtype=dtype).share_memory_()


@dataclass
class SharedState:
    """Per-worker progress and defense counters plus the trap switches the scheduler sets."""

    steps: torch.Tensor  # batches processed (the progress counter)
    applied: torch.Tensor  # updates written into the model
    dropped: torch.Tensor  # [workers, defenses] updates a defense refused
    max_staleness: torch.Tensor  # largest staleness seen at a write (when tracked)
    done: torch.Tensor  # 1 once a worker finished its epochs
    traps: torch.Tensor  # [workers, 2] uint8: 1 = stop at this point and wait for a grant

    @classmethod
    def create(cls, workers: int, defenses: int = 0) -> SharedState:
        return cls(
            steps=_shared(workers),
            applied=_shared(workers),
            dropped=_shared(workers, max(defenses, 1)),
            max_staleness=_shared(workers),
            done=_shared(workers, dtype=torch.uint8),
            traps=_shared(workers, 2, dtype=torch.uint8),
        )

    @property
    def workers(self) -> int:
        return len(self.steps)

    def version(self) -> int:
        """Global step: updates applied to the shared model so far, by all workers."""
        return int(self.applied.sum())

    def set_traps(self, ranks: list[int] | range, *, read: bool, write: bool) -> None:
        for r in ranks:
            self.traps[r, READ] = int(read)
            self.traps[r, WRITE] = int(write)

    def views(self) -> SharedViews:
        """Numpy views onto the same memory, for the workers' hot loop (no tensor overhead)."""
        return SharedViews(
            self.steps.numpy(), self.applied.numpy(), self.dropped.numpy(),
            self.max_staleness.numpy(), self.done.numpy(), self.traps.numpy(),
        )


@dataclass
class SharedViews:
    """`SharedState` as numpy arrays aliasing the shared memory."""

    steps: np.ndarray
    applied: np.ndarray
    dropped: np.ndarray
    max_staleness: np.ndarray
    done: np.ndarray
    traps: np.ndarray

    def version(self) -> int:
        return int(self.applied.sum())
