"""Run the zoo tests single-threaded: their tensors are tiny, and intra-op threads only add
synchronisation cost (severe when the cores are shared with other processes)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def _single_thread() -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
