"""Billing records and price tables: what one function invocation costs, the way a FaaS provider bills it.

The default `PriceTable` is AWS Lambda on x86: $0.0000166667 per GB-second billed in 1 ms steps plus
$0.20 per million requests. Since August 2025 Lambda also bills the INIT phase of a cold start, so
`bill_init` defaults to True.
"""

from __future__ import annotations

import json
import math
import os
import time
import uuid
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field


class PriceTable(BaseModel):
    """Prices of one platform; `gb_second_usd` is per GB (1024 MB) of configured memory per second."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    gb_second_usd: float = Field(0.0000166667, ge=0)
    request_usd: float = Field(0.20 / 1_000_000, ge=0)
    granularity_ms: int = Field(1, ge=1)
    bill_init: bool = True
    min_memory_mb: int = Field(128, ge=1)
    max_memory_mb: int = Field(10240, ge=1)
    mb_per_vcpu: float = Field(1769.0, gt=0)

    def billed_ms(self, duration_ms: float, init_ms: float = 0.0) -> int:
        """Round the charged time up to the billing granularity (init included when billed)."""
        charged = duration_ms + (init_ms if self.bill_init else 0.0)
        steps = math.ceil(max(charged, 0.0) / self.granularity_ms - 1e-9)
        return max(1, steps) * self.granularity_ms

    def cost(self, billed_ms: float, memory_mb: int, requests: int = 1) -> float:
        """Dollar cost of `billed_ms` at `memory_mb` plus the request fee."""
        return billed_ms / 1000.0 * memory_mb / 1024.0 * self.gb_second_usd + requests * self.request_usd

    def vcpus(self, memory_mb: int) -> float:
        """CPU share a function of `memory_mb` gets (Lambda: one vCPU per 1,769 MB, proportional below)."""
        return memory_mb / self.mb_per_vcpu


AWS_LAMBDA_X86 = PriceTable()
AWS_LAMBDA_ARM = PriceTable(gb_second_usd=0.0000133334)


@dataclass(frozen=True)
class BillingRecord:
    """One invocation as the provider's REPORT line shows it, plus its dollar cost."""

    function: str
    memory_mb: int
    duration_ms: float
    init_ms: float
    billed_ms: int
    cold: bool
    max_memory_used_mb: float
    cost_usd: float
    status: str = "ok"
    started_at: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


def make_record(
    prices: PriceTable,
    *,
    function: str,
    memory_mb: int,
    duration_ms: float,
    init_ms: float,
    cold: bool,
    max_memory_used_mb: float = 0.0,
    status: str = "ok",
    started_at: float = 0.0,
) -> BillingRecord:
    """Build a `BillingRecord`, computing billed time and cost from `prices`."""
    billed = prices.billed_ms(duration_ms, init_ms)
    return BillingRecord(
        function=function,
        memory_mb=memory_mb,
        duration_ms=round(duration_ms, 3),
        init_ms=round(init_ms, 3),
        billed_ms=billed,
        cold=cold,
        max_memory_used_mb=round(max_memory_used_mb, 1),
        cost_usd=prices.cost(billed, memory_mb),
        status=status,
        started_at=started_at,
    )


@dataclass
class LedgerTotals:
    """Sums over a set of billing records."""

    invocations: int = 0
    cold_starts: int = 0
    failures: int = 0
    billed_ms: int = 0
    gb_seconds: float = 0.0
    cost_usd: float = 0.0


class CostLedger:
    """Every billing record of a job, tagged by phase ("profile", "train", ...), with running totals.

    With a `path` it is also an append-only file (one JSON line per billed invocation, flushed and fsynced
    as it is billed), so a killed driver loses nothing already billed; a new ledger on the same path and job
    loads those lines first (by id, so none counts twice; a torn last line is skipped).
    """

    def __init__(self, path: str | Path | None = None, *, job: str | None = None) -> None:
        self.entries: list[tuple[str, BillingRecord]] = []
        self.path = Path(path) if path is not None else None
        self.job = job
        self.ids: set[str] = set()
        self.prior_invocations = 0  # entries loaded from the file, billed by earlier drivers
        self.prior_last_billed_at: float | None = None  # wall clock of the last of them
        if self.path is not None and self.path.exists():
            self._load()

    def _load(self) -> None:
        assert self.path is not None
        names = {f.name for f in fields(BillingRecord)}
        for line in self.path.read_text().splitlines():
            try:
                raw = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line torn by a killed driver: that invocation was never recorded as billed
            if not isinstance(raw, dict) or raw.get("id") in self.ids or raw.get("job") != self.job:
                continue
            self.ids.add(raw["id"])
            self.entries.append((raw.get("phase", "train"), BillingRecord(**{k: v for k, v in raw.items() if k in names})))
            at = raw.get("billed_at")
            if at is not None:
                self.prior_last_billed_at = max(self.prior_last_billed_at or at, at)
        self.prior_invocations = len(self.entries)

    def add(self, records: Iterable[BillingRecord], phase: str = "train") -> None:
        for r in records:
            self.bill(r, phase=phase)

    def bill(self, record: BillingRecord, *, phase: str = "train", **tags: str | int) -> str:
        """Record one billed invocation (and append it to the file, durably); returns its id."""
        entry_id = uuid.uuid4().hex
        self.ids.add(entry_id)
        self.entries.append((phase, record))
        if self.path is not None:
            line = {"id": entry_id, "job": self.job, "phase": phase, "billed_at": time.time(), **tags,
                    **record.to_dict()}  # fmt: skip
            with self.path.open("a+b") as fh:
                fh.seek(0, os.SEEK_END)
                if fh.tell() > 0:  # complete a line torn by a killed driver so this one stays parseable
                    fh.seek(-1, os.SEEK_END)
                    if fh.read(1) != b"\n":
                        fh.write(b"\n")
                fh.write((json.dumps(line, sort_keys=True) + "\n").encode())
                fh.flush()
                os.fsync(fh.fileno())
        return entry_id

    def totals(self, phase: str | None = None) -> LedgerTotals:
        """Totals over all records, or over one phase."""
        out = LedgerTotals()
        for tag, r in self.entries:
            if phase is not None and tag != phase:
                continue
            out.invocations += 1
            out.cold_starts += int(r.cold)
            out.failures += int(r.status != "ok")
            out.billed_ms += r.billed_ms
            out.gb_seconds += r.billed_ms / 1000.0 * r.memory_mb / 1024.0
            out.cost_usd += r.cost_usd
        return out

    @property
    def cost_usd(self) -> float:
        return sum(r.cost_usd for _, r in self.entries)


def read_ledger(path: str | Path) -> list[dict]:
    """The parseable lines of a ledger file (tests, reports)."""
    out = []
    for line in Path(path).read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out
