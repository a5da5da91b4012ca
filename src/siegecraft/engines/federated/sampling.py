"""Client sampling per round, a pure function of (seed, round) so resumed runs pick the same clients."""

from __future__ import annotations

import torch


def sample_clients(rnd: int, num_clients: int, k: int, *, method: str = "random", seed: int = 0) -> list[int]:
    """The sorted client ids taking part in round `rnd` (1-based)."""
    if not 1 <= k <= num_clients:
        raise ValueError(f"cannot sample {k} of {num_clients} clients")
    if method == "random":
        gen = torch.Generator().manual_seed(seed * 7_919 + rnd)
        return sorted(torch.randperm(num_clients, generator=gen)[:k].tolist())
    if method == "round_robin":
        start = (rnd - 1) * k
        return sorted({(start + i) % num_clients for i in range(k)})
    raise ValueError(f"unknown sampling {method!r}; known: random, round_robin")


def client_seed(seed: int, rnd: int, client_id: int) -> int:
    """The training seed of one client in one round; every executor and enclave uses this formula."""
    return seed * 1_000_003 + rnd * 1_009 + client_id
