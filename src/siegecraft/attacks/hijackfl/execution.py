"""Execution: how an attack answers the hijacking task by querying a (final) global model.

A `Hijacker` turns each hijacking input into Q queries, sends them to the model, and decodes the Q
probability vectors into one hijacking label. HijackFL sends K cloaked copies (one per cloak) and picks
the cloak whose mapped class is most probable; poisoning sends the raw input and reads the mapped class.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import torch

from siegecraft.attacks.hijackfl.cloaks import BlendPatterns
from siegecraft.attacks.hijackfl.mapping import ClassMapping
from siegecraft.core.models import SiegeModel

__all__ = ["CloakedHijacker", "Hijacker", "ProgramHijacker", "RawHijacker"]


class Hijacker(ABC):
    """Answers the hijacking task through any model with the original task's input and classes."""

    def __init__(self, mapping: ClassMapping) -> None:
        self.mapping = mapping

    @abstractmethod
    def queries(self, x: torch.Tensor) -> torch.Tensor:
        """The inputs sent for `x` [B, C, H, W]: [Q, B, C, H, W]."""

    @abstractmethod
    def decode(self, probs: torch.Tensor) -> torch.Tensor:
        """Hijacking labels [B] from the model's softmax outputs [Q, B, num_original]."""

    def own_query(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The input the attacker sends for a sample of hijacking class `y` (for figures, SSIM, L2)."""
        del y
        return self.queries(x)[0]

    def pattern_images(self) -> torch.Tensor | None:
        """The attack's learned patterns as images (one per cloak), if it has any."""
        return None

    @torch.no_grad()
    def probabilities(self, model: SiegeModel, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """Softmax outputs [Q, B, num_original] of every query, in batches of inputs."""
        model.eval()
        outs = []
        for xb in x.split(batch_size):
            q = self.queries(xb)
            outs.append(model(q.flatten(0, 1)).softmax(1).view(q.shape[0], len(xb), -1))
        return torch.cat(outs, 1)

    def predict(self, model: SiegeModel, x: torch.Tensor) -> torch.Tensor:
        """Hijacking labels [B] for `x`, answered by `model`."""
        return self.decode(self.probabilities(model, x))


class RawHijacker(Hijacker):
    """One uncloaked query; the most probable mapped class, translated back (also the no-cloak reference)."""

    def queries(self, x: torch.Tensor) -> torch.Tensor:
        return x[None]

    def decode(self, probs: torch.Tensor) -> torch.Tensor:
        return self.mapping.decode(probs[0])


class ProgramHijacker(RawHijacker):
    """One query blended with a single program (adversarial reprogramming)."""

    def __init__(self, mapping: ClassMapping, program: BlendPatterns) -> None:
        super().__init__(mapping)
        self.program = program

    def queries(self, x: torch.Tensor) -> torch.Tensor:
        return self.program.apply(x, 0)[None]

    def pattern_images(self) -> torch.Tensor:
        return self.program.images()


class CloakedHijacker(Hijacker):
    """K cloaked queries per input; the label is the cloak whose mapped class scores highest.

    `decoding="mapped"` scores cloak k by the probability of its mapped class; `"top1"` keeps that score
    only when the mapped class is the query's top-1 prediction (falling back to `mapped` when no cloak's is).
    With several cloak sets (independent searches), every set sends its K queries and the scores of the
    sets are summed per class: an ensemble that evens out how much one search's random start matters.
    """

    def __init__(
        self, mapping: ClassMapping, cloaks: BlendPatterns | Sequence[BlendPatterns], decoding: str = "mapped"
    ) -> None:
        super().__init__(mapping)
        self.sets = [cloaks] if isinstance(cloaks, BlendPatterns) else list(cloaks)
        if not self.sets:
            raise ValueError("at least one cloak set is needed")
        for s in self.sets:
            if len(s) != mapping.num_hijack:
                raise ValueError(f"{len(s)} cloaks for {mapping.num_hijack} hijacking classes")
        self.cloaks = self.sets[0]
        self.decoding = decoding

    def queries(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([s.apply(x, k) for s in self.sets for k in range(len(s))])

    def own_query(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.stack([self.cloaks.apply(xi, int(k)) for xi, k in zip(x, y)]) if len(x) else x

    def scores(self, probs: torch.Tensor) -> torch.Tensor:
        """[B, K] score of each hijacking class for each input, summed over the cloak sets."""
        k = len(self.cloaks)
        return torch.stack([self._set_scores(probs[i * k:(i + 1) * k]) for i in range(len(self.sets))]).sum(0)

    def _set_scores(self, probs: torch.Tensor) -> torch.Tensor:
        k = len(self.cloaks)
        targets = torch.tensor(self.mapping.targets)
        mapped = probs[torch.arange(k), :, targets].T  # p(map(k) | x under cloak k)
        if self.decoding == "mapped":
            return mapped
        is_top = (probs.argmax(2) == targets[:, None]).T
        top = torch.where(is_top, mapped, torch.zeros_like(mapped))
        return torch.where(is_top.any(1, keepdim=True), top, mapped)

    def decode(self, probs: torch.Tensor) -> torch.Tensor:
        return self.scores(probs).argmax(1)

    def pattern_images(self) -> torch.Tensor:
        return self.cloaks.images()
