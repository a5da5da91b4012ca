"""A seeded hostile host for live deployments: the relay's `tamper` hook, driven by one schedule per round.

The host sees every frame's public header (kind, src, dst, seq, and `epoch` where the wire carries it) and
decides, per frame, what reaches the receiver: pass, drop, duplicate, delay (held for k later frames, or
until the round boundary), reorder (held until the next frame on the same path, which overtakes it, or
on another path) or replay (the frame passes and a copy of an earlier round's frame is injected too).

Usage::

    host = HostileHost()
    session = CitadelSession(cfg, tamper=host)
    host.attach(session.relay)             # deliveries go straight into the relay's queues (see below)
    host.next_round(1)                     # round 1 untouched
    host.next_round(2, Schedule.random(seed, leaves))   # releases what was held, then attacks round 2
    host.flush()                           # release everything, stop attacking

Determinism. Schedule parameters come from `random.Random(seed)`; each frame's decision comes from a
generator seeded by (seed, kind, src, dst, n), n counting that (kind, src, dst) within the round, so a
decision does not depend on how the relay's reader threads interleave. Held frames leave at a point the
host controls: after k later frames, right after the frame that triggers a reorder, at `next_round`,
`release` or `flush` - never on a timer.

Ordering. Once attached, the host delivers every frame itself, under its lock, through the relay's
`_deliver` (the hook then returns []), so the receiver's queue gets frames in exactly the order the host
decided; a path with held frames queues later frames behind them, so a delay never reorders a channel
by accident (only `reorder` on the same path and `drop` break a channel, on purpose). Without `attach`
the hook returns its deliveries, which the relay's calling thread then enqueues; frames released for
another path can then race with that path's own reader thread.

Channel model. A channel's receiver keeps the newest epoch (round) it accepted, the highest sequence
number in it and the numbers it skipped: a frame of an older epoch is stale, a number already accepted a
replay (both dropped harmlessly), a skipped number is accepted late once, and a newer epoch resets the
window. So the host can predict every receiver's verdict on what it delivers (accepted or replay), and
`verdicts` counts the predictions, which a test can compare with the roles' audit logs. No direction
stays broken (the next round resynchronises it), so `broken_paths()` is always empty.
"""

from __future__ import annotations

import random
import threading
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

ACTIONS = ("drop", "duplicate", "delay", "reorder", "replay")
#: the kinds each kind of path carries in a round today: the normal flow, then alerts and aborts (a target
#: without kinds also hits kinds added later)
FLOW_KINDS: dict[tuple[str, str], tuple[str, ...]] = {
    ("owner", "admin"): ("ROUND_PLAN",),
    ("owner", "te"): ("ROUND_START",),
    ("te", "admin"): ("READY", "SUBMITTED"),
    ("admin", "te"): ("MASK",),
    ("admin", "agg"): ("EXPECT",),
    ("admin", "root"): ("EXPECT", "COMMIT"),
    ("admin", "owner"): ("PLANNED", "COMMITTED"),
    ("te", "agg"): ("MASKED",),
    ("agg", "agg"): ("PARTIAL",),
    ("agg", "root"): ("PARTIAL",),
    ("root", "owner"): ("RESULT",),
    ("root", "admin"): ("SUMMED",),
}
FAILURE_KINDS: dict[tuple[str, str], tuple[str, ...]] = {
    ("admin", "owner"): ("ABORT",),
    ("admin", "te"): ("ABORT",),
    ("admin", "agg"): ("ABORT",),
    ("admin", "root"): ("ABORT",),
    ("te", "admin"): ("ALERT",),
    ("agg", "admin"): ("ALERT",),
    ("root", "admin"): ("ALERT",),
}
Path = tuple[str, str]


def role_class(role: str) -> str:
    """'te' for training enclaves, 'agg' for intermediate aggregators, else the role itself."""
    if role.startswith("te-"):
        return "te"
    if role.startswith("agg-"):
        return "agg"
    return role


def _role_matches(pattern: str | None, role: str) -> bool:
    return pattern is None or pattern == role or pattern == role_class(role)


@dataclass(frozen=True)
class Target:
    """Frames a schedule acts on: src and dst are a role ('te-3', 'root') or a class ('te', 'agg'); None: any."""

    src: str | None = None
    dst: str | None = None
    kinds: frozenset[str] | None = None

    def matches(self, kind: str, src: str, dst: str) -> bool:
        return (self.kinds is None or kind in self.kinds) and _role_matches(self.src, src) \
            and _role_matches(self.dst, dst)

    def __str__(self) -> str:
        kinds = "|".join(sorted(self.kinds)) if self.kinds else "*"
        return f"{kinds} {self.src or '*'}->{self.dst or '*'}"


@dataclass(frozen=True)
class Decision:
    action: str
    delay: int | None = None  # delay: k later frames; None: until the round boundary
    scope: str = "other"  # reorder: overtaken by the next frame on the "same" path or on an "other" one


@dataclass(frozen=True)
class Schedule:
    """What the host does to the frames of one round."""

    seed: int
    targets: tuple[Target, ...]
    p: float = 1.0  # probability that a matching frame is acted on (otherwise it passes)
    actions: tuple[tuple[str, float], ...] = (("delay", 1.0),)  # action -> weight
    delay_frames: tuple[int, int] = (1, 8)  # range of k for a delay of k later frames
    boundary_share: float = 0.0  # share of delays held until the round boundary
    same_path_share: float = 0.0  # share of reorders on the same path (breaks that channel)
    label: str = "custom"

    @classmethod
    def hold(cls, *targets: Target, label: str = "hold") -> Schedule:
        """Hold every matching frame until `release`, `next_round` or `flush` (paths keep their order)."""
        return cls(0, tuple(targets), 1.0, (("delay", 1.0),), boundary_share=1.0, label=label)

    @classmethod
    def random(cls, seed: int, leaves: Sequence[str]) -> Schedule:
        """A random schedule; about a quarter withhold one party's SUBMITTED notice and the root's notices to
        the admin (the shape of the known attempt-confusion attack), the rest pick targets, actions and rates."""
        rng = random.Random(seed)
        if rng.random() < 0.25:
            victim = rng.choice(list(leaves))
            targets = (Target(victim, "admin", frozenset({"SUBMITTED"})), Target("root", "admin"))
            boundary = rng.choice([1.0, 1.0, 0.5])
            return cls(seed, targets, 1.0, (("delay", 1.0),), (4, 40), boundary_share=boundary,
                       label=f"withhold {victim} SUBMITTED + root->admin")
        targets: list[Target] = []
        for _ in range(rng.randint(1, 3)):
            if rng.random() < 0.15:
                targets.append(Target())
                continue
            table = FLOW_KINDS if rng.random() < 0.9 else FAILURE_KINDS
            src_class, dst_class = rng.choice(sorted(table))
            src = rng.choice(list(leaves)) if src_class == "te" and rng.random() < 0.5 else src_class
            dst = rng.choice(list(leaves)) if dst_class == "te" and rng.random() < 0.5 else dst_class
            kinds = frozenset({rng.choice(table[src_class, dst_class])}) if rng.random() < 0.5 else None
            targets.append(Target(src, dst, kinds))
        wide = any(t == Target() for t in targets)
        p = rng.choice([0.05, 0.1, 0.2]) if wide else rng.choice([0.3, 0.5, 1.0])
        chosen = rng.sample(ACTIONS, rng.randint(1, 3))
        actions = tuple((a, round(rng.uniform(0.2, 1.0), 2)) for a in chosen)
        return cls(seed, tuple(targets), p, actions, (1, rng.randint(2, 20)),
                   boundary_share=rng.choice([0.0, 0.3, 0.7, 1.0]), same_path_share=rng.choice([0.0, 0.0, 0.3]),
                   label="random")

    def decide(self, kind: str, src: str, dst: str, index: int) -> Decision | None:
        """The action on the `index`-th (kind, src, dst) frame of the round; None: it passes."""
        if not any(t.matches(kind, src, dst) for t in self.targets):
            return None
        rng = random.Random(f"{self.seed}/{kind}/{src}/{dst}/{index}")
        if rng.random() >= self.p:
            return None
        names, weights = zip(*self.actions, strict=True)
        action = rng.choices(names, weights)[0]
        if action == "delay":
            k = None if rng.random() < self.boundary_share else rng.randint(*self.delay_frames)
            return Decision("delay", delay=k)
        if action == "reorder":
            return Decision("reorder", scope="same" if rng.random() < self.same_path_share else "other")
        return Decision(action)

    def describe(self) -> str:
        actions = ", ".join(f"{a}:{w:g}" for a, w in self.actions)
        return (f"{self.label} (seed {self.seed}; p={self.p:g}; targets [{'; '.join(map(str, self.targets))}]; "
                f"actions {actions}; delay k in {self.delay_frames}, boundary share {self.boundary_share:g}; "
                f"same-path reorder share {self.same_path_share:g})")


@dataclass
class _Frame:
    order: int
    rnd: int | None
    kind: str
    src: str
    dst: str
    seq: int
    data: bytes
    due: int | None = 0  # may leave once the host has seen this many frames; None: at the round boundary
    after: str | None = None  # reorder: waits for the next frame on the "same" path or an "other" one
    epoch: int = 0  # the channel epoch in its header

    @property
    def path(self) -> Path:
        return self.src, self.dst

    def name(self) -> str:
        return f"{self.kind} {self.src}->{self.dst} seq={self.seq}"


@dataclass(repr=False, eq=False)
class HostileHost:
    """The relay's `tamper` hook; thread-safe (the relay calls it from one reader thread per role)."""

    bank_size: int = 400
    log_limit: int = 20_000
    schedule: Schedule | None = None
    rnd: int | None = None
    frames: int = 0  # frames seen since the start
    stats: Counter[str] = field(default_factory=Counter)  # actions taken, over all rounds
    log: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # exceptions inside the hook (the frame was still delivered)
    #: predicted receiver verdicts: (dst, src, kind, "accepted" | "replay" | "out-of-order") -> count
    verdicts: Counter[tuple[str, str, str, str]] = field(default_factory=Counter)
    #: cross-round replays: (round, round of the copy, dst, src, kind, seq, predicted verdict)
    replays: list[tuple[int | None, int | None, str, str, str, int, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.RLock()
        self._deliver_fn: Callable[[str, bytes], None] | None = None
        self._out: list[bytes] | None = None
        self._held: dict[Path, deque[_Frame]] = {}
        self._order = 0
        self._counts: Counter[tuple[str, str, str]] = Counter()  # (kind, src, dst) seen this round
        self._bank: deque[_Frame] = deque(maxlen=self.bank_size)  # accepted frames, for replays
        self._sent: dict[Path, int] = {}  # highest sequence number seen on the path, plus one
        #: the receiver's window per direction (model): epoch, next sequence number, skipped numbers
        self._next: dict[Path, tuple[int, int, set[int]]] = {}

    # -- control (test thread) -------------------------------------------------------------------
    def attach(self, relay: Any) -> None:
        """Deliver through `relay`'s queues (private `_deliver`: the test hook's only way to inject a frame
        outside a hook call); without it, frames held for release leave with the next hook call."""
        self._deliver_fn = getattr(relay, "_deliver", None)

    def next_round(self, rnd: int, schedule: Schedule | None = None) -> None:
        """Round boundary: release every held frame (in the order they were held), then attack round `rnd`
        with `schedule`, or leave it untouched if None."""
        with self._lock:
            self._release_all(f"boundary before round {rnd}")
            self.rnd, self.schedule = rnd, schedule
            self._counts.clear()
            self._note(f"-- round {rnd}: {schedule.describe() if schedule else 'untouched'}")

    def release(self, *, untouched: bool = False) -> None:
        """Release every held frame now; with `untouched`, leave the rest of the round alone."""
        with self._lock:
            self._release_all("release")
            if untouched:
                self.schedule = None
                self._note(f"-- round {self.rnd}: untouched from here")

    def flush(self) -> None:
        """Release everything and stop attacking (end of a test)."""
        self.release(untouched=True)

    @property
    def attacked(self) -> bool:
        return self.schedule is not None

    def held(self) -> int:
        with self._lock:
            return sum(len(q) for q in self._held.values())

    def count(self, kind: str | None = None, src: str | None = None, dst: str | None = None) -> int:
        """Frames the host has seen this round (before its decision) matching kind, src and dst patterns."""
        with self._lock:
            return sum(n for (k, s, d), n in self._counts.items()
                       if (kind is None or k == kind) and _role_matches(src, s) and _role_matches(dst, d))

    def broken_paths(self) -> list[Path]:
        """Directions whose receiver can never accept anything again: none, since every round's first
        authentic frame resynchronises a channel (kept so callers can still ask)."""
        return []

    def describe(self, last: int = 40, since: int = 0) -> str:
        """The schedule, counters and the log from entry `since` (at most its `last` entries)."""
        with self._lock:
            schedule = self.schedule.describe() if self.schedule else "untouched"
            actions = ", ".join(f"{a}={n}" for a, n in sorted(self.stats.items())) or "none"
            head = (f"host: round {self.rnd}, {schedule}; {self.frames} frames seen, actions {actions}, "
                    f"{self.held()} held, broken paths {self.broken_paths() or 'none'}")
            lines = [head]
            if self.errors:
                lines.append(f"hook errors: {self.errors[:3]}")
            lines += self.log[since:][-last:]
            return "\n".join(lines)

    # -- the hook (relay reader threads) ---------------------------------------------------------
    def __call__(self, env: Any, data: bytes) -> list[bytes]:
        with self._lock:
            out: list[bytes] = []
            self._out = out
            try:
                self._on_frame(env, bytes(data))
            except Exception as exc:  # noqa: BLE001 - the relay would drop the frame; deliver it and report
                self.errors.append(f"{type(exc).__name__}: {exc} (on {env.kind} {env.src}->{env.dst})")
                self._emit(env.dst, bytes(data))
            finally:
                self._out = None
            return out

    def _on_frame(self, env: Any, data: bytes) -> None:
        kind, src, dst, seq = str(env.kind), str(env.src), str(env.dst), int(env.seq)
        path = (src, dst)
        self.frames += 1
        index = self._counts[kind, src, dst]
        self._counts[kind, src, dst] += 1
        if seq >= 0:
            self._sent[path] = max(self._sent.get(path, 0), seq + 1)
        self._order += 1
        epoch = getattr(env, "epoch", None)
        frame = _Frame(self._order, self.rnd, kind, src, dst, seq, data, epoch=int(epoch or 0))
        tag = f"r{self.rnd} #{self.frames} {frame.name()}" + (f" epoch={epoch}" if epoch is not None else "")

        triggered = [q[0] for p, q in self._held.items() if q and q[0].after == "other" and p != path]
        queue = self._held.get(path)
        decision = self.schedule.decide(kind, src, dst, index) if self.schedule is not None else None
        action = decision.action if decision else "pass"
        if queue and queue[0].after == "same":  # this frame overtakes the held one on its own path
            head = queue[0]
            head.after, head.due = None, 0
            self._act("reorder", f"{tag} overtakes {head.name()}")
            self._deliver(frame)
        elif action == "pass":
            self._pass(frame)
        elif action == "drop":
            self._act("drop", tag)
        elif action == "duplicate":
            self._act("duplicate", tag)
            self._pass(frame)
            self._pass(_Frame(frame.order, frame.rnd, kind, src, dst, seq, data, epoch=frame.epoch))
        elif action == "delay":
            assert decision is not None
            frame.due = None if decision.delay is None else self.frames + decision.delay
            self._act("delay", f"{tag} held " + ("until the round boundary" if decision.delay is None
                                                  else f"for {decision.delay} frames"))
            self._hold(frame)
        elif action == "reorder":
            assert decision is not None
            frame.after, frame.due = decision.scope, None
            self._act("reorder", f"{tag} held for the next frame on the {decision.scope} path")
            self._hold(frame)
        elif action == "replay":
            self._pass(frame)
            self._replay(kind, index, tag)
        for head in triggered:
            head.after, head.due = None, 0
            self._note(f"r{self.rnd} {head.name()} released after {tag}")
        self._release_due()

    # -- internals (caller holds the lock) -------------------------------------------------------
    def _pass(self, frame: _Frame) -> None:
        """Deliver now, unless frames are held on the path: then queue behind them (keeps channel order)."""
        queue = self._held.get(frame.path)
        if queue:
            frame.due, frame.after = 0, None
            queue.append(frame)
        else:
            self._deliver(frame)

    def _hold(self, frame: _Frame) -> None:
        self._held.setdefault(frame.path, deque()).append(frame)

    def _release_due(self) -> None:
        while True:
            ready = [q for q in self._held.values()
                     if q and q[0].after is None and q[0].due is not None and q[0].due <= self.frames]
            if not ready:
                return
            queue = min(ready, key=lambda q: q[0].order)
            self._deliver(queue.popleft())

    def _release_all(self, why: str) -> None:
        frames = sorted((f for q in self._held.values() for f in q), key=lambda f: f.order)
        self._held.clear()
        if frames:
            self._note(f"r{self.rnd} {why}: releasing {len(frames)} held frame(s): "
                       + ", ".join(f.name() for f in frames[:12]) + (" ..." if len(frames) > 12 else ""))
        for f in frames:
            self._deliver(f)

    def _replay(self, kind: str, index: int, tag: str) -> None:
        older = [f for f in self._bank if f.rnd is not None and self.rnd is not None and f.rnd < self.rnd]
        if not older:
            self._note(f"{tag}: replay wanted, nothing from an earlier round banked")
            return
        seed = self.schedule.seed if self.schedule is not None else 0
        rng = random.Random(f"{seed}/replay/{kind}/{index}")
        same = [f for f in older if f.kind == kind]
        pick = rng.choice(same or older)
        verdict = self._deliver(_Frame(pick.order, pick.rnd, pick.kind, pick.src, pick.dst, pick.seq, pick.data,
                                       epoch=pick.epoch), bank=False)
        self.replays.append((self.rnd, pick.rnd, pick.dst, pick.src, pick.kind, pick.seq, verdict))
        self._act("replay", f"{tag}: injected round {pick.rnd}'s {pick.name()} (expected: {verdict})")

    def _deliver(self, frame: _Frame, *, bank: bool = True) -> str:
        verdict = "plaintext"
        if frame.seq >= 0:
            epoch, expected, missing = self._next.get(frame.path, (0, 0, set()))
            if frame.epoch > epoch:
                epoch, expected, missing = frame.epoch, 0, set()
            if frame.epoch < epoch or (frame.seq < expected and frame.seq not in missing):
                verdict = "replay"
            else:
                verdict = "accepted"
                if frame.seq in missing:
                    missing.discard(frame.seq)
                else:
                    missing.update(range(expected, frame.seq))
                    expected = frame.seq + 1
            self._next[frame.path] = (epoch, expected, missing)
            self.verdicts[frame.dst, frame.src, frame.kind, verdict] += 1
            if bank and verdict == "accepted" and self.rnd is not None:
                self._bank.append(frame)
        self._emit(frame.dst, frame.data)
        return verdict

    def _emit(self, dst: str, data: bytes) -> None:
        if self._deliver_fn is not None:
            self._deliver_fn(dst, data)
        elif self._out is not None:
            self._out.append(data)
        else:  # released outside a hook call without a relay: hold it until the next call
            self._order += 1
            self._held.setdefault(("host", dst), deque()).append(
                _Frame(self._order, self.rnd, "?", "host", dst, -1, data))

    def _act(self, action: str, text: str) -> None:
        self.stats[action] += 1
        self._note(f"{action}: {text}")

    def _note(self, text: str) -> None:
        if len(self.log) < self.log_limit:
            self.log.append(text)
