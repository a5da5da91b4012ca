"""Entry point of every role process (spawned by the platform, authority.py; imports no torch unless
the bundle's trainer does)."""

from __future__ import annotations

import importlib
import logging
import os
import sys
from multiprocessing.connection import Connection
from typing import Any

from siegecraft.enclave import net
from siegecraft.enclave.errors import CitadelError
from siegecraft.enclave.quoting import EnclavePlatform
from siegecraft.enclave.transport import Mailbox, RelayClosedError

log = logging.getLogger("siegecraft.enclave")


def _role_class(kind: str) -> type:
    if kind == "admin":
        from siegecraft.enclave.roles.admin import AdminRole

        return AdminRole
    if kind == "training":
        from siegecraft.enclave.roles.training import TrainingRole

        return TrainingRole
    if kind == "aggregator":
        from siegecraft.enclave.roles.aggregator import AggregatorRole

        return AggregatorRole
    raise ValueError(f"unknown role kind {kind!r}")


def role_main(kind: str, role_id: str, config: dict[str, Any], conn: Connection | None, platform: EnclavePlatform,
              options: dict[str, Any], extra_modules: tuple[str, ...] = ()) -> None:
    """Run one role until the host stops it; exit code 0 on a clean stop, 2 on a protocol error.

    `extra_modules` (test hook for altered code) are imported first: the platform measured them with
    the role's code, so this enclave's quotes carry a measurement that honest code does not have.
    `conn` None: the network transport - the role connects to the relay itself with the address and
    ticket in `options["net"]` (net.py)."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = "1"
    logging.basicConfig(level=options.get("log_level", "WARNING"),
                        format=f"%(asctime)s {role_id} %(levelname)s %(message)s")
    for module in extra_modules:
        importlib.import_module(module)
    if conn is None:
        try:
            conn = net.connect(net.NetAddress.from_options(options["net"]), role_id)
        except CitadelError as exc:
            log.error("%s", exc)
            sys.exit(2)
    mailbox = Mailbox(conn, role_id, shm_prefix=options.get("shm_prefix"),
                      bulk_threshold=int(options.get("bulk_threshold", 0)))
    role = _role_class(kind)(role_id, config, mailbox, platform, options)
    code = 0
    try:
        role.run()
    except RelayClosedError:
        pass
    except CitadelError as exc:
        log.error("%s: %s", role_id, exc)
        role.audit("fatal", error=f"{type(exc).__name__}: {exc}")
        code = 2
    except Exception as exc:
        log.exception("%s crashed", role_id)
        role.audit("fatal", error=f"{type(exc).__name__}: {exc}")
        code = 1
    finally:
        role.close_audit()
        mailbox.close()
    sys.exit(code)
