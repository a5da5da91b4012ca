"""Aggregator roles: add masked vectors modulo M up the tree; only the root unmasks the total.

An intermediate aggregator only ever holds masked vectors and masked partial sums (uniformly random
on their own, because the masks of any strict subset of parties do not cancel). The root holds the
sum over every surviving party of an attempt, where the parties' masks add up to the attempt's blinding
mask: still uniformly random. It reports SUMMED to the admin and keeps the blinded total; only the
admin's COMMIT for that (round, attempt) carries the blinding seed. Then, and at most once per round,
the root removes the blinding, decodes the sample-weighted mean update (the weights n_i / N sum to
one) and sends it to the model owner over their channel.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from siegecraft.enclave.codec import FixedPointCodec
from siegecraft.enclave.masks import MaskDomain, MaskGrant
from siegecraft.enclave.roles.base import ADMIN, OWNER, EnclaveRole, Message


@dataclass
class RunningSum:
    """The masked inputs of one (round, attempt) so far, added up as they arrive."""

    total: np.ndarray
    counts: dict[str, int] = field(default_factory=dict)
    stats: dict[str, int] = field(default_factory=dict)  # clipping counts, summed over the inputs
    children: set[str] = field(default_factory=set)
    t_sent: float = 0.0


@dataclass
class BlindedTotal:
    """The root's complete but still blinded total of one attempt, waiting for the admin's commit."""

    total: np.ndarray
    meta: dict[str, Any]


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
        #: root only: complete totals awaiting the admin's commit, and the last round released
        self.blinded: dict[tuple[int, int], BlindedTotal] = {}
        self.released_round = -1

    def handle(self, msg: Message) -> None:
        if not msg.sealed:
            return
        if msg.kind == "EXPECT" and msg.src == ADMIN:
            key = (int(msg.meta["rnd"]), int(msg.meta["attempt"]))
            if self.expect is not None and key < (int(self.expect["rnd"]), int(self.expect["attempt"])):
                self.audit("ignored", kind=msg.kind, src=msg.src, reason="older than the current EXPECT")
                return
            self.expect = dict(msg.meta)
            self.sums = {k: v for k, v in self.sums.items() if k >= key}
            self.blinded = {k: v for k, v in self.blinded.items() if k[0] >= key[0]}
            self._try_complete()
        elif msg.kind == "COMMIT" and msg.src == ADMIN and self.is_root:
            self._release(int(msg.meta["rnd"]), int(msg.meta["attempt"]), msg.meta)
        elif msg.kind == "ABORT" and msg.src == ADMIN:
            rnd = int(msg.meta["rnd"])
            self.sums = {k: v for k, v in self.sums.items() if k[0] > rnd}
            self.blinded = {k: v for k, v in self.blinded.items() if k[0] > rnd}
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
        for name, value in dict(msg.meta.get("stats", {})).items():
            running.stats[str(name)] = running.stats.get(str(name), 0) + int(value)
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
        meta = {"rnd": key[0], "attempt": key[1], "counts": running.counts, "stats": running.stats,
                "t_sent": running.t_sent}
        if self.is_root:
            self._finish(total, meta, expect)
        else:
            self.send(str(self.parent), "PARTIAL", meta, {"v": total})

    def _finish(self, total: np.ndarray, meta: dict[str, Any], expect: dict[str, Any]) -> None:
        """Root only: the attempt's total is complete but still blinded; report it to the admin and keep it
        until the admin commits this attempt (or the round moves on)."""
        meta = {**meta, "t_total": time.monotonic(), "t_ready": expect.get("t_ready", 0.0)}
        num_samples = sum(meta["counts"].values())
        if num_samples != int(expect["total_samples"]):
            self.audit("rejected", kind="SUMMED", rnd=meta["rnd"], attempt=meta["attempt"])
            self.send(ADMIN, "ALERT", {"reason": f"{self.id}: the inputs' sample counts add up to {num_samples}, "
                                       f"the admin's total is {expect['total_samples']}", "rnd": meta["rnd"]})
            return
        self.blinded[(int(meta["rnd"]), int(meta["attempt"]))] = BlindedTotal(total, {**meta,
                                                                                     "num_samples": num_samples})
        self.send(ADMIN, "SUMMED", {"rnd": meta["rnd"], "attempt": meta["attempt"], "num_samples": num_samples})
        self.audit("summed", rnd=meta["rnd"], attempt=meta["attempt"], num_samples=num_samples)

    def _release(self, rnd: int, attempt: int, commit: dict[str, Any]) -> None:
        """Root only: lift the committed attempt's blinding, decode the mean and send it to the model owner.

        At most one release per round, whatever arrives: a round at or below the last released one is
        refused, and every other attempt of the round is discarded with the release."""
        held = self.blinded.get((rnd, attempt))
        if held is None or rnd <= self.released_round:
            self.audit("ignored", kind="COMMIT", rnd=rnd, attempt=attempt, released_round=self.released_round)
            return
        self.released_round = rnd
        self.blinded = {k: v for k, v in self.blinded.items() if k[0] > rnd}
        domain = MaskDomain(self.session, rnd, attempt, self.id)
        try:
            layout = [int(n) for n in commit["layout"]]
            MaskGrant(domain, seed=bytes.fromhex(str(commit["unblind"]))).remove_from(
                held.total, layout, self.codec.modulus_bits)
        except (KeyError, TypeError, ValueError) as exc:
            self.send(ADMIN, "ALERT", {"reason": f"{self.id}: unusable COMMIT for attempt {attempt}: {exc}",
                                       "rnd": rnd})
            return
        self.audit_vector("unblinded", held.total, rnd=rnd, attempt=attempt)
        mean = self.codec.decode(held.total)
        meta = {**held.meta, "t_ready": float(commit.get("t_ready", held.meta["t_ready"]))}
        self.send(OWNER, "RESULT", meta, {"mean": mean})
        self.audit("released", rnd=rnd, attempt=attempt, num_samples=meta["num_samples"])
