"""Private Redis servers: loopback, no persistence, pidfile; stop only what we started."""

from __future__ import annotations

import json
import os
from pathlib import Path

from siegecraft.engines.serverless.redis_server import list_redis, start_redis, stop_redis
from siegecraft.engines.serverless.redis_store import RedisStore


def test_start_writes_pidfile_and_stop_by_pidfile_ends_the_process(tmp_path: Path) -> None:
    handle = start_redis(dir=tmp_path)
    try:
        assert (
            Path(handle.pidfile).exists()
            and json.loads(Path(handle.pidfile).read_text())["pid"] == handle.pid
        )
        assert [h.port for h in list_redis(tmp_path)] == [handle.port]
        store = RedisStore(handle.spec)
        assert store.ping()
        cfg = store._client.config_get("save")["save"], store._client.config_get("appendonly")["appendonly"]
        assert cfg == ("", "no")
        assert store._client.config_get("bind")["bind"] == "127.0.0.1"
        store.close()
    finally:
        assert stop_redis(handle.pidfile) is True
    assert not Path(handle.pidfile).exists()
    assert (
        not Path(f"/proc/{handle.pid}").exists()
        or b"redis" not in Path(f"/proc/{handle.pid}/cmdline").read_bytes()
    )


def test_stop_refuses_a_pid_that_is_not_our_redis(tmp_path: Path) -> None:
    fake = tmp_path / "redis-1.pid"
    fake.write_text(json.dumps({"pid": os.getpid(), "host": "127.0.0.1", "port": 1, "pidfile": str(fake),
                                "logfile": ""}))  # fmt: skip
    assert stop_redis(fake) is False  # this test process is still alive, untouched
    assert not fake.exists()
