"""Worker optimisers: plain per-worker SGD, or SGD whose momentum buffers live in shared memory.

Per-worker state is what PyTorch's Hogwild example does (and what Game of Threads Variant 1 exploits:
a stalled worker keeps its old learning rate and momentum). Shared buffers give every worker the same,
current optimiser state.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from siegecraft.engines.hogwild.config import HogwildConfig


def warm_up_optimizer() -> None:
    """Build and step a throwaway SGD once, so its lazy imports (about 2 s) happen before the fork, not per worker."""
    p = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([p], lr=0.1, momentum=0.5, weight_decay=1e-4)
    p.grad = torch.ones(1)
    opt.step()


def shared_momentum_buffers(model: nn.Module) -> list[torch.Tensor]:
    """Zero momentum buffers in shared memory, one per trainable parameter (create before forking)."""
    return [torch.zeros_like(p).share_memory_() for p in model.parameters() if p.requires_grad]


def build_optimizer(
    model: nn.Module, cfg: HogwildConfig, shared_buffers: list[torch.Tensor] | None = None
) -> torch.optim.SGD:
    """SGD over the model's trainable parameters; with `shared_buffers`, momentum state is shared."""
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if shared_buffers is not None and cfg.momentum > 0:
        for p, buf in zip(params, shared_buffers, strict=True):
            opt.state[p]["momentum_buffer"] = buf
    return opt


@torch.no_grad()
def prospective_update_norm(opt: torch.optim.SGD, lr: float) -> float:
    """L2 norm of the parameter change `opt.step()` would make at learning rate `lr` (SGD, no Nesterov)."""
    group = opt.param_groups[0]
    momentum, wd, dampening = group["momentum"], group["weight_decay"], group["dampening"]
    total = 0.0
    for p in group["params"]:
        if p.grad is None:
            continue
        d = p.grad if wd == 0 else p.grad + wd * p
        buf = opt.state.get(p, {}).get("momentum_buffer") if momentum else None
        if buf is not None:
            d = momentum * buf + (1 - dampening) * d
        total += float(d.pow(2).sum())
    return lr * math.sqrt(total)
