"""Aggregator roles: add masked vectors modulo M up the tree; only the root unmasks the total.

An intermediate aggregator only ever holds masked vectors and masked partial sums (uniformly random
on their own, because the masks of any strict subset of parties do not cancel). The root holds the
sum over every surviving party, where the masks cancel: it decodes the weighted total, divides by
the public total sample count and sends the mean update to the model owner over their channel.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from siegecraft.enclave.codec import FixedPointCodec
from siegecraft.enclave.roles.base import ADMIN, OWNER, EnclaveRole, Message


class AggregatorRole(EnclaveRole):
    """Sums the inputs of the children the admin named for the current (round, attempt)."""

    kind = "aggregator"

    def setup(self) -> None:
        super().setup()
        self.codec = FixedPointCodec.from_config(self.config["codec"])
        self.is_root = bool(self.config["is_root"])
        self.parent = self.config.get("parent")
        self.children = set(self.config["children"])
        self.expect: dict[str, Any] | None = None
        self.inputs: dict[tuple[int, int], dict[str, tuple[np.ndarray, dict[str, int], float]]] = {}

    def handle(self, msg: Message) -> None:
        if not msg.sealed:
            return
        if msg.kind == "EXPECT" and msg.src == ADMIN:
            self.expect = dict(msg.meta)
            key = (int(msg.meta["rnd"]), int(msg.meta["attempt"]))
            self.inputs = {k: v for k, v in self.inputs.items() if k >= key}
            self._try_complete()
        elif msg.kind == "ABORT" and msg.src == ADMIN:
            rnd = int(msg.meta["rnd"])
            self.inputs = {k: v for k, v in self.inputs.items() if k[0] > rnd}
            if self.expect is not None and int(self.expect["rnd"]) <= rnd:
                self.expect = None
        elif msg.kind in ("MASKED", "PARTIAL") and msg.src in self.children:
            key = (int(msg.meta["rnd"]), int(msg.meta["attempt"]))
            vector = msg.arrays["v"]  # a read-only view into the decrypted payload; only ever read
            if vector.dtype != self.codec.dtype:
                self.audit("ignored", kind=msg.kind, src=msg.src, reason=f"dtype {vector.dtype}")
                return
            self.audit_vector("input", vector, rnd=key[0], attempt=key[1], src=msg.src, kind=msg.kind)
            counts = {str(k): int(v) for k, v in msg.meta["counts"].items()}
            self.inputs.setdefault(key, {})[msg.src] = (vector, counts, float(msg.meta["t_sent"]))
            self._try_complete()
        else:
            self.audit("ignored", kind=msg.kind, src=msg.src)

    def _try_complete(self) -> None:
        expect = self.expect
        if expect is None:
            return
        key = (int(expect["rnd"]), int(expect["attempt"]))
        got = self.inputs.get(key, {})
        wanted = list(expect["children"])
        if any(child not in got for child in wanted):
            return
        total = self.codec.zeros(got[wanted[0]][0].size)
        counts: dict[str, int] = {}
        t_sent = 0.0
        for child in wanted:
            vector, child_counts, child_t = got[child]
            self.codec.add(total, vector)
            counts.update(child_counts)
            t_sent = max(t_sent, child_t)
        del self.inputs[key]
        self.expect = None
        self.audit_vector("output", total, rnd=key[0], attempt=key[1], root=self.is_root)
        meta = {"rnd": key[0], "attempt": key[1], "counts": counts, "t_sent": t_sent}
        if self.is_root:
            self._finish(total, meta, expect)
        else:
            self.send(str(self.parent), "PARTIAL", meta, {"v": total})

    def _finish(self, total: np.ndarray, meta: dict[str, Any], expect: dict[str, Any]) -> None:
        """Root only: the masks cancelled; decode, divide by the public sample count, report."""
        t_total = time.monotonic()
        num_samples = sum(meta["counts"].values())
        self.codec.check_capacity(num_samples)
        mean = self.codec.decode(total) / num_samples
        self.send(OWNER, "RESULT", {**meta, "num_samples": num_samples, "t_ready": expect.get("t_ready", 0.0),
                                    "t_total": t_total}, {"mean": mean})
        self.send(ADMIN, "AGGREGATED", {"rnd": meta["rnd"], "attempt": meta["attempt"]})
        self.audit("unmasked", rnd=meta["rnd"], attempt=meta["attempt"], num_samples=num_samples)
