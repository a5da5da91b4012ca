"""Class mapping: which original class answers for each hijacking class, plus the negative class.

The snapshot labels every uncloaked hijacking sample; in the K x C count matrix the largest cells are
taken first, one-to-one, so each hijacking class rides on the original class it already resembles.
The unused class with the largest column sum becomes the negative class (where the other classes'
cloaked inputs are pushed), hence K <= C - 1.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from siegecraft.core.models import SiegeModel
from siegecraft.core.training import predict_logits

__all__ = ["ClassMapping", "greedy_mapping", "index_mapping", "most_distinct_class", "prediction_counts"]


@dataclass(frozen=True)
class ClassMapping:
    """`targets[k]` is the original class of hijacking class k; `negative` is the spare original class."""

    targets: tuple[int, ...]
    negative: int
    num_original: int

    @property
    def num_hijack(self) -> int:
        return len(self.targets)

    def original_labels(self, hijack_labels: torch.Tensor) -> torch.Tensor:
        """Hijacking labels translated to their mapped original labels."""
        return torch.tensor(self.targets, dtype=torch.long)[hijack_labels]

    def decode(self, logits: torch.Tensor) -> torch.Tensor:
        """Hijacking labels from original-task logits: the most likely mapped class, translated back."""
        return logits[:, list(self.targets)].argmax(1)

    def as_dict(self) -> dict[str, object]:
        return {"targets": list(self.targets), "negative": self.negative}


def _check_sizes(k: int, c: int) -> None:
    if k > c - 1:
        raise ValueError(f"{k} hijacking classes need at least {k + 1} original classes (one is negative), got {c}")


def prediction_counts(model: SiegeModel, x: torch.Tensor, y: torch.Tensor, num_hijack: int) -> torch.Tensor:
    """K x C matrix: how often the model predicts original class j for hijacking class i."""
    pred = predict_logits(model, x).argmax(1)
    c = model.num_classes
    counts = torch.zeros(num_hijack, c, dtype=torch.long)
    counts.index_put_((y, pred), torch.ones_like(y), accumulate=True)
    return counts


def greedy_mapping(counts: torch.Tensor, negative: int | None = None) -> ClassMapping:
    """Greedy one-to-one assignment in descending count order (ties: lower index first).

    Without `negative`, the unused original class with the largest column sum becomes the negative class
    (the authors' rule); with it, that class is kept out of the assignment and used as the negative.
    """
    k, c = counts.shape
    _check_sizes(k, c)
    if negative is not None and not 0 <= negative < c:
        raise ValueError(f"negative class {negative} outside 0..{c - 1}")
    order = sorted((-int(counts[i, j]), i, j) for i in range(k) for j in range(c) if j != negative)
    targets: dict[int, int] = {}
    used: set[int] = set()
    for _, i, j in order:
        if i not in targets and j not in used:
            targets[i] = j
            used.add(j)
    if negative is None:
        column = counts.sum(0)
        free = [j for j in range(c) if j not in used]
        negative = max(free, key=lambda j: (int(column[j]), -j))
    return ClassMapping(tuple(targets[i] for i in range(k)), negative, c)


def most_distinct_class(model: SiegeModel, x: torch.Tensor, y: torch.Tensor) -> int:
    """The original class the model recognises best on the attacker's own data (highest recall).

    As the negative class it is the one least confused with any mapped class, so each cloak's
    "mine / not mine" decision is between two well-separated regions of feature space.
    """
    pred = predict_logits(model, x).argmax(1)
    recall = [float((pred[y == c] == c).float().mean()) if bool((y == c).any()) else -1.0
              for c in range(model.num_classes)]
    return max(range(len(recall)), key=lambda c: (recall[c], -c))


def index_mapping(num_hijack: int, num_original: int) -> ClassMapping:
    """Salem et al.'s mapping by index: hijacking class i -> original class i; the next class is negative."""
    _check_sizes(num_hijack, num_original)
    return ClassMapping(tuple(range(num_hijack)), num_hijack, num_original)
