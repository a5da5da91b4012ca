"""One deployment over each transport: shared memory (pipes), TCP with local role processes, and Ray actors.

The envelopes are the same sealed ones everywhere, so the same rounds must give bit-identical aggregates;
over the network nothing uses shared memory (the broadcast travels inline), and the relay's TCP door
admits only the roles it issued tickets to. The break-tests of test_session_attacks.py and the abort
test of test_session_dropout.py run over every transport too (their `transport` parameter).
"""

from __future__ import annotations

import socket
import struct
from pathlib import Path

import numpy as np
import pytest

from siegecraft.enclave import CitadelSession, shm
from siegecraft.enclave.net import AdmissionError
from siegecraft.enclave.wire import frame_header

from .round_oracle import mean_problem, wait_until
from .synthetic import config, global_weights
from .test_net import closed_by_listener, send_hello
from .transports import ray_instance, transport  # noqa: F401 - fixtures

ALL = [0, 1, 2]


def parent_cmdline(pid: int) -> str:
    """The command line of `pid`'s parent process (Linux /proc)."""
    ppid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    return Path(f"/proc/{ppid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")


def run_rounds(name: str, rounds: tuple[int, ...] = (1, 2)) -> tuple[list[np.ndarray], CitadelSession]:
    """`rounds` over transport `name`, each checked by the round oracle; the means and the closed session."""
    cfg = config(3, transport=name, record_transcript=True)
    means = []
    with CitadelSession(cfg) as session:
        if name == "ray":  # the platform placed every role under an actor (a Ray worker), not itself
            for role, handle in session.processes.items():
                assert "ray" in parent_cmdline(handle.pid).lower(), role
        for rnd in rounds:
            result = session.run_round(rnd, global_weights(rnd), ALL)
            assert mean_problem(cfg, rnd, result.mean, result.survivors, ALL, result.num_samples) is None
            means.append(result.mean)
        if name != "shm":
            assert not session.owner.broadcasts and shm.live(session.shm_prefix) == []
    return means, session


def check_same_aggregate(name: str) -> None:
    reference, _ = run_rounds("shm")
    means, session = run_rounds(name)
    assert all(np.array_equal(a, b) for a, b in zip(reference, means, strict=True)), name
    frames = session.relay.transcript
    assert frames and all(frame_header(e.data)[1] is None for e in frames), "no shm reference over the network"
    assert not any(b"kappa-7731" in e.data for e in frames), "the bundle's secret crossed in the clear"


def test_the_same_aggregate_over_shared_memory_and_tcp() -> None:
    check_same_aggregate("tcp")


def test_the_same_aggregate_with_every_role_in_a_ray_actor(ray_instance: None) -> None:  # noqa: F811
    check_same_aggregate("ray")


def test_a_stranger_on_the_network_cannot_join_a_live_deployment() -> None:
    """Mid-session, someone on the network connects to the relay's port and replays a frame it captured (and
    then a hello naming a role with a made-up ticket): both are refused, and the rounds stay correct."""
    cfg = config(3, transport="tcp", record_transcript=True)
    with CitadelSession(cfg) as session:
        result = session.run_round(1, global_weights(1), ALL)
        assert mean_problem(cfg, 1, result.mean, result.survivors, ALL, result.num_samples) is None
        listener = session.listener
        assert listener is not None and listener.host == "127.0.0.1"
        captured = next(e.data for e in session.relay.transcript if e.kind == "MASKED")
        with socket.create_connection((listener.host, listener.port), timeout=5.0) as sock:
            sock.sendall(struct.pack("!i", len(captured)) + captured)
            assert closed_by_listener(sock)
        with socket.create_connection((listener.host, listener.port), timeout=5.0) as sock:
            send_hello(sock, "te-0", "00" * 32)
            assert closed_by_listener(sock)
        assert wait_until(lambda: len(listener.refused) == 2, 5.0), listener.refused
        result = session.run_round(2, global_weights(2), ALL)
        assert mean_problem(cfg, 2, result.mean, result.survivors, ALL, result.num_samples) is None


@pytest.mark.parametrize("transport", ["tcp", pytest.param("ray", marks=pytest.mark.slow)], indirect=True)
def test_the_host_kills_and_starves_parties_over_the_network(transport: str) -> None:  # noqa: F811 - ~10 s on Ray
    """The host's powers over an enclave process (through the platform: for Ray, the role's actor) work the
    same over the network: a killed and a stopped party drop out, and the survivors' mean is exact."""
    cfg = config(4, transport=transport, round_timeout_s=3.0)
    with CitadelSession(cfg) as session:
        session.kill_party(3)
        assert wait_until(lambda: not session.process_of(3).is_alive(), 10.0)
        assert session.process_of(3).exitcode == -9
        result = session.run_round(1, global_weights(1), [0, 1, 2, 3])
        assert result.dropped == [3]
        assert mean_problem(cfg, 1, result.mean, result.survivors, [0, 1, 2], result.num_samples) is None
        session.suspend_party(2)
        result = session.run_round(2, global_weights(2), [0, 1, 2])
        assert result.dropped == [2]
        assert mean_problem(cfg, 2, result.mean, result.survivors, [0, 1], result.num_samples) is None
        session.resume_party(2)


def test_a_bad_transport_or_listen_host_is_refused_naming_the_key() -> None:
    with pytest.raises(ValueError, match="transport must be one of .*got 'udp'"):
        config(2, transport="udp")
    with pytest.raises(ValueError, match="listen_host must be"):
        config(2, transport="tcp", listen_host="")
    session = CitadelSession(config(2, transport="tcp", listen_host="203.0.113.254", start_timeout_s=5.0))
    with pytest.raises(AdmissionError, match="listen_host='203.0.113.254'"):  # TEST-NET-3: not this machine's
        session.start()
    assert not session.processes


def test_every_role_process_and_the_listener_are_gone_after_close_over_tcp() -> None:
    with CitadelSession(config(2, transport="tcp")) as session:
        pids = [handle.pid for handle in session.processes.values()]
        listener = session.listener
        assert listener is not None
    assert wait_until(lambda: not any(Path(f"/proc/{pid}").exists() for pid in pids), 10.0)
    with pytest.raises(OSError):
        socket.create_connection((listener.host, listener.port), timeout=2.0)
