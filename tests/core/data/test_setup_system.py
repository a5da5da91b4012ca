"""setup_system: decisions and messages, with apt-get replaced by a recorder (nothing is installed)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from siegecraft.core.data import setup_system


class FakeApt:
    """Records commands; answers from a list of return values (True = success)."""

    def __init__(self, results: list[bool]) -> None:
        self.results = results
        self.commands: list[list[str]] = []

    def __call__(self, cmd: list[str]) -> bool:
        self.commands.append(cmd)
        return self.results.pop(0)


def test_present_data_needs_no_action(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(setup_system, "find_fashion_mnist", lambda: tmp_path)
    apt = FakeApt([])
    assert setup_system.ensure_fashion_mnist(use_apt=True, run=apt)
    assert apt.commands == [] and f"found at {tmp_path}" in capsys.readouterr().out


def test_without_apt_prints_download_route(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(setup_system, "find_fashion_mnist", lambda: None)
    assert not setup_system.ensure_fashion_mnist(use_apt=False, run=FakeApt([]))
    out = capsys.readouterr().out
    assert "siegecraft data fetch fashion_mnist" in out and "apt-get install -y dataset-fashion-mnist" in out
    assert len(out.strip().splitlines()) == 1


def test_apt_install_updates_only_after_a_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    found = iter([None, tmp_path])
    monkeypatch.setattr(setup_system, "find_fashion_mnist", lambda: next(found))
    apt = FakeApt([False, True, True])  # install fails, update succeeds, install succeeds
    assert setup_system.ensure_fashion_mnist(use_apt=True, run=apt)
    assert [c[:2] for c in apt.commands] == [
        ["apt-get", "install"],
        ["apt-get", "update"],
        ["apt-get", "install"],
    ]
    assert apt.commands[0][-1] == "dataset-fashion-mnist" and "-y" in apt.commands[0]

    ok_first = FakeApt([True])
    assert setup_system.apt_install("redis-server", ok_first) and len(ok_first.commands) == 1


def test_redis_installed_only_when_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(setup_system.shutil, "which", lambda name: None)
    apt = FakeApt([False, False])  # install fails, update fails: report, do not raise
    assert not setup_system.ensure_redis(use_apt=True, run=apt)
    assert apt.commands[0][-1] == "redis-server"
    monkeypatch.setattr(setup_system.shutil, "which", lambda name: "/usr/bin/" + name)
    apt = FakeApt([])
    assert setup_system.ensure_redis(use_apt=True, run=apt) and apt.commands == []


def test_main_exit_code_follows_data_availability(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(setup_system, "can_use_apt", lambda: False)
    monkeypatch.setattr(setup_system, "ensure_redis", lambda use_apt: True)
    monkeypatch.setattr(setup_system, "find_fashion_mnist", lambda: None)
    assert setup_system.main() == 1
    monkeypatch.setattr(setup_system, "find_fashion_mnist", lambda: Path("/somewhere"))
    assert setup_system.main() == 0


def test_module_imports_without_torch() -> None:
    code = "import sys, siegecraft.core.data.setup_system; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
