"""The Cirrus parameter server is a real process that steps after n pushes and always stops."""

from __future__ import annotations

import socket
from multiprocessing import AuthenticationError
from multiprocessing.connection import Client, Connection

import numpy as np
import pytest

from siegecraft.engines.serverless.baselines.cirrus import run_cirrus
from siegecraft.engines.serverless.baselines.common import BaselineFailed
from siegecraft.engines.serverless.baselines.parameter_server import ParameterServer
from siegecraft.engines.serverless.emulated import EmulatedPlatform
from siegecraft.engines.serverless.layout import from_bytes, to_bytes
from siegecraft.engines.serverless.memory_store import MemoryStoreServer
from siegecraft.engines.serverless.specs import Config, JobSpec
from siegecraft.engines.serverless.store import connect

from ..conftest import tiny_data


def _request(conn: Connection, *msg: object, body: bytes | None = None) -> tuple[str, str]:
    conn.send(msg)
    if body is not None:
        conn.send_bytes(body)
    return conn.recv()


def test_server_steps_after_all_pushes_and_exits_cleanly() -> None:
    w = np.ones(5, dtype=np.float32)
    with ParameterServer(wait_s=5) as server:
        server.init(w, np.zeros_like(w), workers=2, start_it=0, lr=0.5, momentum_coef=0.0, weight_decay=0.0)
        a, b = (Client(server.address, authkey=server.authkey) for _ in range(2))
        assert _request(a, "pull", 0, 0) == ("ok", "")
        assert np.array_equal(from_bytes(a.recv_bytes()), w)
        assert _request(a, "push", 0, 0, body=to_bytes(np.full(5, 1.0, np.float32))) == ("ok", "")
        assert server.state().it == 0  # one push of two: no step yet
        status, message = _request(b, "push", 3, 1, body=to_bytes(np.zeros(5, np.float32)))
        assert status == "error" and "iteration 0" in message  # a push for the wrong iteration is refused
        assert _request(b, "push", 0, 1, body=to_bytes(np.full(5, 3.0, np.float32))) == ("ok", "")
        state = server.state()
        assert state.it == 1 and np.allclose(state.weights, 1.0 - 0.5 * 2.0)
        with pytest.raises(AuthenticationError):  # a client without the key is refused; the server goes on
            Client(server.address, authkey=b"wrong")
        socket.create_connection(server.address).close()  # one that leaves mid-handshake changes nothing
        with Client(server.address, authkey=server.authkey) as c:
            assert _request(c, "pull", 0, 0)[0] == "error"  # still accepting (iteration 0 is gone)
        assert _request(b, "pull", 1, 1) == ("ok", "")
        assert np.allclose(from_bytes(b.recv_bytes()), 0.0)
        a.close()
        b.close()
    assert not server.alive and server.process.exitcode == 0


def test_pull_times_out_when_a_worker_never_pushes() -> None:
    with ParameterServer(wait_s=0.2) as server:
        w = np.zeros(3, dtype=np.float32)
        server.init(w, w, workers=2, start_it=0, lr=0.1, momentum_coef=0.0, weight_decay=0.0)
        with Client(server.address, authkey=server.authkey) as conn:
            status, message = _request(conn, "pull", 1, 0)
    assert status == "error" and "not ready" in message
    assert not server.alive


def test_a_failed_worker_fails_the_run_and_stops_the_server(platform: EmulatedPlatform) -> None:
    data = tiny_data(4096)
    w = np.zeros(10, dtype=np.float32)
    with MemoryStoreServer() as store_server, connect(store_server.spec) as store:
        # synthetic gradients, a 1 s time limit and far more iterations than fit: the platform kills workers
        spec = JobSpec(
            "cirrus-fail", store_server.spec, "cnn", 1, 4, 12, len(data.y), w.size, synthetic_gradients=True
        )
        with ParameterServer(wait_s=30) as server:
            with pytest.raises(BaselineFailed, match="timeout"):
                run_cirrus(
                    spec,
                    store,
                    platform,
                    server,
                    Config(2, 1024, 1),
                    10**7,
                    x=data.x,
                    y=data.y,
                    init_weights=w,
                    timeout_s=1.0,
                )
            assert not server.alive  # stopped at the first failure, so the other worker stopped waiting
    assert server.process.exitcode is not None
