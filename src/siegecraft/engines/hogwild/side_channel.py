"""The label side channel, simulated: each worker publishes its batch's label histogram before its forward pass.

Game of Threads assumes the (SGX-hosting) OS learns each batch's label mix through a side channel; the
authors' artifact simulates it by having workers report it, and so do we. Nothing here is a real leak:
it is a shared array the worker writes on purpose, documented as a stand-in for the channel.
"""

from __future__ import annotations

import numpy as np
import torch


class LabelSideChannel:
    """A shared [workers, classes] histogram array plus a per-worker report counter."""

    def __init__(self, workers: int, num_classes: int) -> None:
        self.num_classes = num_classes
        self.histograms = torch.zeros(workers, num_classes, dtype=torch.int64).share_memory_()
        self.reports = torch.zeros(workers, dtype=torch.int64).share_memory_()
        self._hist_np: np.ndarray | None = None
        self._reports_np: np.ndarray | None = None

    def report(self, rank: int, labels: torch.Tensor) -> None:
        """Worker side: publish the label histogram of the batch about to be used."""
        if self._hist_np is None:
            self._hist_np, self._reports_np = self.histograms.numpy(), self.reports.numpy()
        self._hist_np[rank] = np.bincount(labels.numpy(), minlength=self.num_classes)[: self.num_classes]
        self._reports_np[rank] += 1

    def histogram(self, rank: int) -> list[int]:
        """Scheduler side: the last histogram `rank` reported."""
        return [int(v) for v in self.histograms[rank]]

    def share(self, rank: int, label: int) -> float:
        """Fraction of `label` in the last batch `rank` reported (0 before any report)."""
        row = self.histograms[rank]
        total = int(row.sum())
        return int(row[label]) / total if total else 0.0
