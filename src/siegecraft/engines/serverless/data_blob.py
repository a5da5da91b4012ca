"""Upload a training set to the store once and read it back inside functions (cached per container).

Images in [0, 1] that are exact multiples of 1/255 (every 8-bit image dataset) travel as uint8, a quarter
of the float32 size; anything else travels as float32. Warm containers keep the decoded tensors, so only
cold starts pay the download, as in SMLT.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import torch

from siegecraft.engines.serverless.layout import JobKeys
from siegecraft.engines.serverless.store import Store

_CACHE: dict[tuple[str, str], tuple[torch.Tensor, torch.Tensor]] = {}


def pack(x: torch.Tensor, y: torch.Tensor) -> dict[str, bytes]:
    """The three blobs (meta, x, y) that describe a dataset; uint8 when that is lossless."""
    x = x.detach().to(torch.float32).contiguous()
    as_u8 = torch.round(x * 255.0).clamp(0, 255).to(torch.uint8)
    lossless = bool(torch.equal(as_u8.to(torch.float32) / 255.0, x))
    body = as_u8.numpy().tobytes() if lossless else x.numpy().tobytes()
    meta = {"shape": list(x.shape), "dtype": "uint8" if lossless else "float32", "n": int(y.numel())}
    return {"meta": json.dumps(meta).encode(), "x": body, "y": y.to(torch.int64).numpy().tobytes()}


def upload(store: Store, keys: JobKeys, x: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:
    """Write the dataset under the job's data keys (skipped if already there); returns its meta."""
    existing = store.get(keys.data("meta"))
    if existing is not None:
        return json.loads(existing)
    blobs = pack(x, y)
    store.put_many({keys.data("x"): blobs["x"], keys.data("y"): blobs["y"]})
    store.put(keys.data("meta"), blobs["meta"])
    return json.loads(blobs["meta"])


def fetch(store: Store, keys: JobKeys) -> tuple[torch.Tensor, torch.Tensor]:
    """The dataset as (x float32, y int64), from this container's cache when it is warm."""
    cache_key = (f"{store.spec.url}", keys.job)
    if cache_key in _CACHE:
        return _CACHE[cache_key]
    meta_raw, x_raw, y_raw = store.get_many([keys.data("meta"), keys.data("x"), keys.data("y")])
    if meta_raw is None or x_raw is None or y_raw is None:
        raise KeyError(f"dataset of job {keys.job!r} is not in the store")
    meta = json.loads(meta_raw)
    if meta["dtype"] == "uint8":
        x = torch.from_numpy(np.frombuffer(x_raw, dtype=np.uint8).copy()).to(torch.float32) / 255.0
    else:
        x = torch.from_numpy(np.frombuffer(x_raw, dtype=np.float32).copy())
    x = x.reshape(meta["shape"])
    y = torch.from_numpy(np.frombuffer(y_raw, dtype=np.int64).copy())
    _CACHE.clear()
    _CACHE[cache_key] = (x, y)
    return x, y


def is_cached(store: Store, keys: JobKeys) -> bool:
    """Whether this container already holds the job's dataset (a warm start)."""
    return (f"{store.spec.url}", keys.job) in _CACHE
