"""Aggregator roles: add masked vectors modulo M up the tree; only the root unmasks the total.

An intermediate aggregator only ever holds masked vectors and masked partial sums (uniformly random
on their own, because the masks of any strict subset of parties do not cancel). The root holds the
sum over every surviving party, where the masks cancel and the weights n_i / N sum to one: it decodes
the sample-weighted mean update and sends it to the model owner over their channel.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from siegecraft.enclave.codec import FixedPointCodec
from siegecraft.enclave.roles.base import ADMIN, OWNER, EnclaveRole, Message


@dataclass
class RunningSum:
    """The masked inputs of one (round, attempt) so far, added up as they arrive."""

    total: np.ndarray
    counts: dict[str, int] = field(default_factory=dict)
    children: set[str] = field(default_factory=set)
    t_sent: float = 0.0


class AggregatorRole(EnclaveRole):
    """Sums the inputs of the children the admin named for the current (round, attempt).

    Each input is added to its (round, attempt)'s running sum when it arrives, so no child's vector is
    kept and the additions are done before the last child reports. Only children the admin can name
    ever send for an attempt (it issues that attempt's masks to them alone), so a sum with a
    contributor outside the admin's list is an anomaly: the aggregator alerts and the round fails closed.
    """

    kind = "aggregator"

    def setup(self) -> None:
        super().setup()
        self.codec = FixedPointCodec.from_config(self.config["codec"])
        self.is_root = bool(self.config["is_root"])
        self.parent = self.config.get("parent")
        self.children = set(self.config["children"])
        self.expect: dict[str, Any] | None = None
        self.sums: dict[tuple[int, int], RunningSum] = {}

    def handle(self, msg: Message) -> None:
        if not msg.sealed:
            return
        if msg.kind == "EXPECT" and msg.src == ADMIN:
            self.expect = dict(msg.meta)
            key = (int(msg.meta["rnd"]), int(msg.meta["attempt"]))
            self.sums = {k: v for k, v in self.sums.items() if k >= key}
            self._try_complete()
        elif msg.kind == "ABORT" and msg.src == ADMIN:
            rnd = int(msg.meta["rnd"])
            self.sums = {k: v for k, v in self.sums.items() if k[0] > rnd}
            if self.expect is not None and int(self.expect["rnd"]) <= rnd:
                self.expect = None
        elif msg.kind in ("MASKED", "PARTIAL") and msg.src in self.children:
            self._add(msg)
        else:
            self.audit("ignored", kind=msg.kind, src=msg.src)

    def _add(self, msg: Message) -> None:
        key = (int(msg.meta["rnd"]), int(msg.meta["attempt"]))
        vector = msg.arrays["v"]  # a read-only view into the decrypted payload; only ever read
        if vector.dtype != self.codec.dtype:
            self.audit("ignored", kind=msg.kind, src=msg.src, reason=f"dtype {vector.dtype}")
            return
        running = self.sums.get(key)
        if running is not None and (msg.src in running.children or vector.shape != running.total.shape):
            self.audit("ignored", kind=msg.kind, src=msg.src, reason="second input or wrong size")
            return
        self.audit_vector("input", vector, rnd=key[0], attempt=key[1], src=msg.src, kind=msg.kind)
        if running is None:
            running = self.sums[key] = RunningSum(np.array(vector, copy=True))
        else:
            self.codec.add(running.total, vector)
        running.counts.update({str(k): int(v) for k, v in msg.meta["counts"].items()})
        running.children.add(msg.src)
        running.t_sent = max(running.t_sent, float(msg.meta["t_sent"]))
        self._try_complete()

    def _try_complete(self) -> None:
        expect = self.expect
        if expect is None:
            return
        key = (int(expect["rnd"]), int(expect["attempt"]))
        running = self.sums.get(key)
        wanted = set(expect["children"])
        if running is None or not wanted:
            return
        if not running.children <= wanted:
            del self.sums[key]
            self.expect = None
            extra = sorted(running.children - wanted)
            self.audit("rejected", kind="EXPECT", rnd=key[0], attempt=key[1], unexpected=extra)
            self.send(ADMIN, "ALERT", {"reason": f"{self.id}: inputs from {extra}, which the admin did not name "
                                       f"for round {key[0]} attempt {key[1]}", "rnd": key[0]})
            return
        if running.children != wanted:
            return
        del self.sums[key]
        self.expect = None
        total = running.total
        self.audit_vector("output", total, rnd=key[0], attempt=key[1], root=self.is_root)
        meta = {"rnd": key[0], "attempt": key[1], "counts": running.counts, "t_sent": running.t_sent}
        if self.is_root:
            self._finish(total, meta, expect)
        else:
            self.send(str(self.parent), "PARTIAL", meta, {"v": total})

    def _finish(self, total: np.ndarray, meta: dict[str, Any], expect: dict[str, Any]) -> None:
        """Root only: the masks cancelled and the weights (n_i / N) summed to one, so the decoded total
        is the sample-weighted mean update; report it once the counts add up to the admin's N."""
        t_total = time.monotonic()
        num_samples = sum(meta["counts"].values())
        if num_samples != int(expect["total_samples"]):
            self.audit("rejected", kind="RESULT", rnd=meta["rnd"], attempt=meta["attempt"])
            self.send(ADMIN, "ALERT", {"reason": f"{self.id}: the inputs' sample counts add up to {num_samples}, "
                                       f"the admin's total is {expect['total_samples']}", "rnd": meta["rnd"]})
            return
        mean = self.codec.decode(total)
        self.send(OWNER, "RESULT", {**meta, "num_samples": num_samples, "t_ready": expect.get("t_ready", 0.0),
                                    "t_total": t_total}, {"mean": mean})
        self.send(ADMIN, "AGGREGATED", {"rnd": meta["rnd"], "attempt": meta["attempt"]})
        self.audit("unmasked", rnd=meta["rnd"], attempt=meta["attempt"], num_samples=num_samples)
