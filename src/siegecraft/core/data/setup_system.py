"""Install what the quickstart and tests need from the system: Fashion-MNIST and a redis server.

Run as `python -m siegecraft.core.data.setup_system` (by `make run` / `make test`). Uses apt-get only as
root; otherwise prints how to get the data. Exit 0 when Fashion-MNIST is available at the end, else 1.
Imports no torch, so it finishes well under a second when everything is present.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable

from siegecraft.core.data.paths import FASHION_MNIST_APT_PACKAGE, fashion_mnist_candidates, find_fashion_mnist

REDIS_APT_PACKAGE = "redis-server"
APT_ENV = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}


def can_use_apt() -> bool:
    """True when running as root on a system with apt-get."""
    return hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get") is not None


def _run(cmd: list[str]) -> bool:
    print("setup: running " + " ".join(cmd), flush=True)
    done = subprocess.run(
        cmd, env=APT_ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, check=False
    )
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-1:] or ["(no output)"]
        print(f"setup: {cmd[0]} failed (exit {done.returncode}): {tail[0]}", flush=True)
    return done.returncode == 0


def apt_install(package: str, run: Callable[[list[str]], bool] = _run) -> bool:
    """`apt-get install -y package`; on failure refresh the package lists once and retry."""
    install = ["apt-get", "install", "-y", "--no-install-recommends", package]
    if run(install):
        return True
    return run(["apt-get", "update"]) and run(install)


def ensure_fashion_mnist(use_apt: bool, run: Callable[[list[str]], bool] = _run) -> bool:
    """Make Fashion-MNIST available (apt as root); True when it is found afterwards."""
    found = find_fashion_mnist()
    if found is not None:
        print(f"setup: fashion_mnist found at {found}")
        return True
    if (
        use_apt
        and apt_install(FASHION_MNIST_APT_PACKAGE, run)
        and (found := find_fashion_mnist()) is not None
    ):
        print(f"setup: fashion_mnist installed at {found}")
        return True
    where = " or ".join(str(p) for p in fashion_mnist_candidates())
    print(
        f"setup: fashion_mnist not found (looked in {where}); "
        "get it with: siegecraft data fetch fashion_mnist"
        f"  (or, as root: apt-get install -y {FASHION_MNIST_APT_PACKAGE})"
    )
    return False


def ensure_redis(use_apt: bool, run: Callable[[list[str]], bool] = _run) -> bool:
    """Make `redis-server` available for the serverless redis store; optional, so only reported."""
    path = shutil.which("redis-server")
    if path is not None:
        print(f"setup: redis-server found at {path}")
        return True
    if use_apt and apt_install(REDIS_APT_PACKAGE, run) and shutil.which("redis-server") is not None:
        print("setup: redis-server installed")
        return True
    print(
        "setup: redis-server not available (only the serverless redis store needs it); "
        f"as root: apt-get install -y {REDIS_APT_PACKAGE}"
    )
    return False


def main() -> int:
    use_apt = can_use_apt()
    data_ok = ensure_fashion_mnist(use_apt)
    ensure_redis(use_apt)
    return 0 if data_ok else 1


if __name__ == "__main__":
    sys.exit(main())
