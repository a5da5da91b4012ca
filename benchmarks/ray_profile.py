"""Where the `ray` executor's time goes on vs_flower.py's workload, against `processes` (one run each).

Wraps each executor's prepare / start / run / close with timers and prints, before close, the CPU seconds of
every process in the tree (driver, workers or actors, Ray's helper processes). Not a benchmark of
record: single runs, for the breakdown in docs/scale_out.md.

    PYTHONPATH=src .venv/bin/python benchmarks/ray_profile.py ray [TRAIN_LIMIT]
    PYTHONPATH=src .venv/bin/python benchmarks/ray_profile.py processes [TRAIN_LIMIT]
"""

from __future__ import annotations

import sys
import tempfile
import time
from typing import Any

import psutil
import vs_flower

from siegecraft.drivers.experiment import build_experiment
from siegecraft.drivers.runner import run_experiment
from siegecraft.engines.federated.executors import ProcessExecutor, RayExecutor

TIMES: dict[str, Any] = {}


def tree_cpu() -> dict[int, tuple[str, float]]:
    """(command line, CPU seconds) of this process and all its descendants."""
    me, out = psutil.Process(), {}
    for p in [me, *me.children(recursive=True)]:
        try:
            c = p.cpu_times()
            out[p.pid] = (" ".join(p.cmdline())[:70], c.user + c.system)
        except psutil.Error:
            pass
    return out


def instrument(cls: type, t0: list[float]) -> None:
    prepare, start, run, close = cls.prepare, cls.start, cls.run, cls.close

    def timed_prepare(self: Any) -> None:  # runs while the engine loads the data on another thread
        TIMES["before_prepare_s"] = time.perf_counter() - t0[0]
        t = time.perf_counter()
        prepare(self)
        TIMES["prepare_s"] = time.perf_counter() - t

    def timed_start(self: Any, trainer: Any) -> None:
        TIMES["before_start_s"] = time.perf_counter() - t0[0]
        t = time.perf_counter()
        start(self, trainer)
        TIMES["start_s"] = time.perf_counter() - t

    def timed_run(self: Any, *args: Any) -> Any:
        t = time.perf_counter()
        result = run(self, *args)
        TIMES.setdefault("rounds_s", []).append(round(time.perf_counter() - t, 2))
        return result

    def timed_close(self: Any) -> None:
        if "close_s" not in TIMES:
            for cmd, cpu in sorted(tree_cpu().values(), key=lambda v: -v[1]):
                if cpu > 0.05:
                    print(f"{cpu:6.2f} CPU s  {cmd}")
        t = time.perf_counter()
        close(self)
        TIMES.setdefault("close_s", time.perf_counter() - t)

    cls.prepare, cls.start, cls.run, cls.close = timed_prepare, timed_start, timed_run, timed_close


def main() -> None:
    executor = sys.argv[1]
    limit = int(sys.argv[2]) if len(sys.argv) > 2 else None
    t0 = [0.0]
    for cls in (RayExecutor, ProcessExecutor):
        instrument(cls, t0)
    exp = build_experiment(vs_flower.siegecraft_config(executor, limit))
    with tempfile.TemporaryDirectory() as tmp:
        t0[0] = time.perf_counter()
        run_experiment(exp, out_root=tmp)
        TIMES["total_s"] = time.perf_counter() - t0[0]
    print({k: round(v, 2) if isinstance(v, float) else v for k, v in TIMES.items()})


if __name__ == "__main__":
    main()
