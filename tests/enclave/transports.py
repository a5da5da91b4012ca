"""Fixtures that run a deployment over each transport: "shm" (pipes + shared memory), "tcp" (the network
transport, local processes) and "ray" (the network transport, every role in a Ray actor)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

NETWORK = ("tcp", "ray")
ALL_TRANSPORTS = ("shm", *NETWORK)


@pytest.fixture(scope="module")
def ray_instance() -> Iterator[None]:
    """A private local Ray instance for the module (the platform's authority joins it as a second driver)."""
    ray = pytest.importorskip("ray")
    started = not ray.is_initialized()
    if started:
        ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield
    if started:
        ray.shutdown()


@pytest.fixture(params=ALL_TRANSPORTS)
def transport(request: pytest.FixtureRequest) -> str:
    """Each transport in turn; "ray" starts (once per module) the private Ray instance it needs."""
    if request.param == "ray":
        request.getfixturevalue("ray_instance")
    return str(request.param)


@pytest.fixture(params=("shm", "tcp"))
def local_transport(request: pytest.FixtureRequest) -> str:
    """The cheap pair (no Ray start-up): shared memory and the network transport with local processes."""
    return str(request.param)
