"""The hostile-host scheduler on its own (no processes): ordering, release points, the channel model."""

from __future__ import annotations

import threading
from types import SimpleNamespace

from .hostile_host import HostileHost, Schedule, Target


class FakeRelay:
    def __init__(self) -> None:
        self.delivered: list[tuple[str, bytes]] = []
        self.lock = threading.Lock()

    def _deliver(self, dst: str, data: bytes) -> None:
        with self.lock:
            self.delivered.append((dst, data))


class Wire:
    """Sends frames through the host as the relay would, numbering each direction like a channel."""

    def __init__(self, host: HostileHost) -> None:
        self.host = host
        self.seq: dict[tuple[str, str], int] = {}

    def send(self, kind: str, src: str, dst: str) -> list[bytes]:
        seq = self.seq.get((src, dst), 0)
        self.seq[src, dst] = seq + 1
        return self.host(header(kind, src, dst, seq), f"{kind} {src}>{dst} {seq}".encode())


def header(kind: str, src: str, dst: str, seq: int) -> SimpleNamespace:
    """What the hook reads of a frame's parsed header."""
    return SimpleNamespace(kind=kind, src=src, dst=dst, seq=seq)


def names(relay: FakeRelay, dst: str | None = None) -> list[str]:
    return [data.decode() for d, data in relay.delivered if dst is None or d == dst]


def setup(schedule: Schedule | None = None) -> tuple[HostileHost, FakeRelay, Wire]:
    host, relay = HostileHost(), FakeRelay()
    host.attach(relay)
    host.next_round(1, schedule)
    return host, relay, Wire(host)


def test_held_frames_keep_their_path_order_and_leave_at_the_boundary() -> None:
    host, relay, wire = setup(Schedule.hold(Target("te-1", "admin", frozenset({"SUBMITTED"})), Target("root", "admin")))
    assert wire.send("READY", "te-1", "admin") == []  # delivered by the host itself, not returned
    wire.send("SUBMITTED", "te-1", "admin")
    wire.send("ALERT", "te-1", "admin")  # not targeted, but queued behind the held frame on its path
    wire.send("SUBMITTED", "te-2", "admin")
    wire.send("SUMMED", "root", "admin")
    assert names(relay) == ["READY te-1>admin 0", "SUBMITTED te-2>admin 0"]
    assert host.held() == 3 and host.count("SUBMITTED", "te", "admin") == 2
    host.next_round(2)
    assert names(relay)[2:] == ["SUBMITTED te-1>admin 1", "ALERT te-1>admin 2", "SUMMED root>admin 0"]
    assert host.broken_paths() == [] and host.verdicts["admin", "te-1", "ALERT", "accepted"] == 1
    wire.send("READY", "te-1", "admin")  # round 2 is untouched
    assert names(relay)[-1] == "READY te-1>admin 3" and host.held() == 0


def test_a_delay_of_k_frames_releases_after_k_later_frames() -> None:
    schedule = Schedule(7, (Target(kinds=frozenset({"MASK"})),), 1.0, (("delay", 1.0),), (2, 2))
    host, relay, wire = setup(schedule)
    wire.send("MASK", "admin", "te-0")
    wire.send("EXPECT", "admin", "root")
    assert names(relay) == ["EXPECT admin>root 0"]
    wire.send("EXPECT", "admin", "agg-1-0")
    assert names(relay) == ["EXPECT admin>root 0", "EXPECT admin>agg-1-0 0", "MASK admin>te-0 0"]
    assert host.stats["delay"] == 1 and host.held() == 0


def test_reorder_on_the_same_path_and_drops_leave_the_channel_usable() -> None:
    """The channels keep a replay window: an overtaken frame is still accepted once, a gap is skipped."""
    schedule = Schedule(3, (Target("te-0", "agg"),), 1.0, (("reorder", 1.0),), same_path_share=1.0)
    host, relay, wire = setup(schedule)
    wire.send("MASKED", "te-0", "agg-1-0")
    wire.send("MASKED", "te-0", "agg-1-0")  # overtakes the first one
    assert names(relay) == ["MASKED te-0>agg-1-0 1", "MASKED te-0>agg-1-0 0"]
    assert host.verdicts["agg-1-0", "te-0", "MASKED", "accepted"] == 2
    assert host.broken_paths() == []

    host, relay, wire = setup(Schedule(3, (Target("te-0", "admin"),), 1.0, (("drop", 1.0),)))
    wire.send("READY", "te-0", "admin")
    host.next_round(2)
    wire.send("READY", "te-0", "admin")
    assert names(relay) == ["READY te-0>admin 1"] and host.verdicts["admin", "te-0", "READY", "accepted"] == 1
    assert host.broken_paths() == []


def test_reorder_across_paths_keeps_channels_intact() -> None:
    schedule = Schedule(3, (Target(kinds=frozenset({"EXPECT"})),), 1.0, (("reorder", 1.0),))
    host, relay, wire = setup(schedule)
    wire.send("EXPECT", "admin", "root")
    wire.send("MASK", "admin", "te-0")
    assert names(relay) == ["MASK admin>te-0 0", "EXPECT admin>root 0"] and host.broken_paths() == []


def test_replays_come_from_earlier_rounds_and_are_predicted_refused() -> None:
    host, relay, wire = setup()
    wire.send("MASKED", "te-0", "agg-1-0")
    host.next_round(2, Schedule(5, (Target(kinds=frozenset({"MASKED"})),), 1.0, (("replay", 1.0),)))
    wire.send("MASKED", "te-0", "agg-1-0")
    assert names(relay) == ["MASKED te-0>agg-1-0 0", "MASKED te-0>agg-1-0 1", "MASKED te-0>agg-1-0 0"]
    assert host.replays == [(2, 1, "agg-1-0", "te-0", "MASKED", 0, "replay")]
    assert host.verdicts["agg-1-0", "te-0", "MASKED", "replay"] == 1 and host.broken_paths() == []


def test_duplicates_are_refused_copies() -> None:
    host, relay, wire = setup(Schedule(1, (Target("root", "owner"),), 1.0, (("duplicate", 1.0),)))
    wire.send("RESULT", "root", "owner")
    assert names(relay) == ["RESULT root>owner 0"] * 2
    assert host.verdicts["owner", "root", "RESULT", "replay"] == 1


def test_decisions_depend_on_the_seed_and_frame_not_on_arrival_order() -> None:
    a = Schedule.random(1234, ["te-0", "te-1", "te-2"])
    b = Schedule.random(1234, ["te-0", "te-1", "te-2"])
    assert a == b
    frames = [(k, s, d, i) for k in ("READY", "MASKED", "RESULT", "MASK")
              for s, d in (("te-0", "admin"), ("root", "owner"), ("admin", "te-1")) for i in range(5)]
    assert [a.decide(*f) for f in frames] == [b.decide(*f) for f in reversed(frames)][::-1]
    shapes = {Schedule.random(seed, ["te-0", "te-1"]).label.split()[0] for seed in range(60)}
    assert shapes == {"random", "withhold"}


def test_concurrent_reader_threads_keep_every_path_in_order() -> None:
    schedule = Schedule(99, (Target(),), 0.5, (("delay", 1.0), ("duplicate", 0.5), ("reorder", 0.5)), (1, 6),
                        boundary_share=0.3)
    host, relay, _ = setup(schedule)
    senders = [f"te-{i}" for i in range(6)]

    def reader(src: str) -> None:  # one relay reader thread per sending role
        for seq in range(200):
            dst = ("admin", "agg-1-0")[seq % 2]
            host(header("MASKED", src, dst, seq // 2),
                 f"{src}>{dst} {seq // 2}".encode())

    threads = [threading.Thread(target=reader, args=(s,)) for s in senders]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    host.flush()
    for src in senders:
        for dst in ("admin", "agg-1-0"):
            seqs = [int(n.split()[1]) for n in names(relay, dst) if n.startswith(f"{src}>")]
            first = [s for i, s in enumerate(seqs) if s not in seqs[:i]]  # duplicates aside
            assert first == list(range(100)), (src, dst, seqs[:20])
    assert host.broken_paths() == [] and not host.errors
