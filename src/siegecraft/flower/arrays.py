"""Flower's parameter lists (one ndarray per tensor) <-> siegecraft's flat float32 weight vectors.

siegecraft's engines and defenses work on one flat vector per model (`flat_params`: parameters and
floating buffers in state_dict order); Flower clients exchange a list of ndarrays. These helpers convert
between the two, keeping each array's shape and dtype, so an honest Flower client sending its
state_dict's floating tensors round-trips exactly.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

NDArrays = list[np.ndarray]


def flat_of(arrays: Sequence[np.ndarray]) -> torch.Tensor:
    """One float32 vector of every array, concatenated in order."""
    if not arrays:
        return torch.zeros(0, dtype=torch.float32)
    return torch.cat([torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)).reshape(-1) for a in arrays])


def arrays_of(flat: torch.Tensor, like: Sequence[np.ndarray]) -> NDArrays:
    """`flat` split back into arrays of `like`'s shapes and dtypes."""
    sizes = [int(a.size) for a in like]
    if flat.dim() != 1 or flat.numel() != sum(sizes):
        raise ValueError(f"flat vector has shape {tuple(flat.shape)}; the arrays need ({sum(sizes)},)")
    chunks = torch.split(flat.detach().cpu(), sizes)
    return [c.numpy().reshape(a.shape).astype(a.dtype, copy=True) for c, a in zip(chunks, like)]


def model_arrays(model: nn.Module) -> NDArrays:
    """The model's parameters and floating buffers as ndarrays, in `flat_params` order (Flower's layout)."""
    return [t.detach().cpu().numpy().copy() for t in model.state_dict().values() if t.is_floating_point()]
