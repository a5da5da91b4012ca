"""Executor.prepare: the engine warms an executor up while it loads the workload, and releases it on failure."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest

from siegecraft.core.results import RunDir
from siegecraft.drivers.experiment import build_experiment
from siegecraft.engines.federated import Federation, engine
from siegecraft.engines.federated.executors.base import EXECUTORS, InlineExecutor
from tests.conftest import tiny_raw


class PreparingProbe(InlineExecutor):
    """Inline work, but records when and on which thread each life-cycle call happens."""

    prepares = True
    calls: ClassVar[list[tuple[str, str]]] = []

    def __init__(self, workers: int = 2) -> None:
        self.workers = workers

    def _note(self, what: str) -> None:
        PreparingProbe.calls.append((what, threading.current_thread().name))

    def prepare(self) -> None:
        self._note("prepare")

    def start(self, trainer: object) -> None:
        self._note("start")
        super().start(trainer)  # type: ignore[arg-type]

    def close(self) -> None:
        self._note("close")


@pytest.fixture
def probe() -> Iterator[type[PreparingProbe]]:
    EXECUTORS.register("prepare_probe")(PreparingProbe)
    PreparingProbe.calls = []
    yield PreparingProbe
    EXECUTORS.unregister("prepare_probe")


def test_prepare_runs_on_the_calling_thread_before_start_and_close_follows(
    tmp_path: Path, probe: type[PreparingProbe]
) -> None:
    raw = tiny_raw(fl={"rounds": 1}, runtime={"executor": "prepare_probe"})
    fed = Federation(build_experiment(raw), RunDir.create(tmp_path, "fed"))
    assert probe.calls == [("prepare", threading.current_thread().name)]  # the data loaded on another thread
    fed.run()
    assert [what for what, _ in probe.calls] == ["prepare", "start", "close"]


def _raise(*_: object) -> None:
    raise ValueError("set-up failed here")


@pytest.mark.parametrize("step", ["build_workload", "build_strategy"], ids=["loading", "after-loading"])
def test_a_set_up_that_fails_closes_the_prepared_executor(
    tmp_path: Path, probe: type[PreparingProbe], monkeypatch: pytest.MonkeyPatch, step: str
) -> None:
    """Loading the workload (on the helper thread) or a later set-up step fails: the warmed-up executor is
    released before the error propagates."""
    monkeypatch.setattr(engine, step, _raise)
    raw = tiny_raw(runtime={"executor": "prepare_probe"})
    with pytest.raises(ValueError, match="set-up failed here"):
        Federation(build_experiment(raw), RunDir.create(tmp_path, "fed"))
    assert [what for what, _ in probe.calls] == ["prepare", "close"]


def test_a_resume_without_a_checkpoint_closes_the_prepared_executor(
    tmp_path: Path, probe: type[PreparingProbe]
) -> None:
    raw = tiny_raw(runtime={"executor": "prepare_probe"})
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        engine.SiegecraftRunner.run(build_experiment(raw), RunDir.create(tmp_path, "fed"), resume=True)
    assert [what for what, _ in probe.calls] == ["prepare", "close"]


def test_executors_without_warm_up_load_the_workload_as_before(tmp_path: Path) -> None:
    fed = Federation(build_experiment(tiny_raw()), RunDir.create(tmp_path, "fed"))
    assert not fed.executor.prepares and isinstance(fed.executor, InlineExecutor)
