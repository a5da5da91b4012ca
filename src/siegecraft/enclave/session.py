"""Launch and drive a Citadel deployment: one OS process per role, all traffic through the relay.

`CitadelSession` is the numpy-level API (updates are float vectors); `CitadelRuntime` wraps it for
torch models. SIMULATION: the processes stand in for SGX enclaves and the mock authority for the
attestation service (see attestation.py); the protocol itself - attestation checks, channels, codec,
masks, tree, dropouts - is the real one.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import signal
import time
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess
from typing import TYPE_CHECKING, Any

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from siegecraft.enclave import shm
from siegecraft.enclave.attestation import EnclavePlatform, MockAttestationAuthority
from siegecraft.enclave.bundle import CodeBundle
from siegecraft.enclave.codec import FixedPointCodec
from siegecraft.enclave.errors import CitadelError
from siegecraft.enclave.measurement import measure
from siegecraft.enclave.owner import ModelOwner
from siegecraft.enclave.relay import Relay, Tamper
from siegecraft.enclave.roles.admin import ROUND_BUDGET, leaf_name
from siegecraft.enclave.roles.base import ADMIN, OWNER
from siegecraft.enclave.roles.process import role_main
from siegecraft.enclave.transport import DEFAULT_BULK_THRESHOLD, Mailbox
from siegecraft.enclave.tree import AggregationTree

if TYPE_CHECKING:
    from typing_extensions import Self

log = logging.getLogger("siegecraft.enclave")
DROPOUT_POLICIES = ("remask", "abort")


@dataclass
class PartySpec:
    """One data owner: its client id, the data its enclave loads, and (tests only) injected faults."""

    client_id: int
    data: dict[str, Any]
    faults: dict[str, Any] = field(default_factory=dict)


@dataclass
class SessionConfig:
    """Everything needed to launch a deployment; `layout` lists the sizes of the model's tensors."""

    parties: list[PartySpec]
    bundle: CodeBundle
    layout: list[int]
    fanout: int = 10
    on_dropout: str = "remask"
    codec: FixedPointCodec = field(default_factory=FixedPointCodec)
    rounding_seed: int = 0
    round_timeout_s: float = 120.0
    start_timeout_s: float = 120.0
    mp_context: str = "spawn"
    audit_dir: str | None = None
    record_transcript: bool = False
    log_level: str = "WARNING"
    #: sealed bodies of at least this many bytes cross through shared memory, not the relay's pipes (0: never)
    bulk_threshold: int = DEFAULT_BULK_THRESHOLD
    #: L2 bound each training enclave applies to its update before encoding (None: no bound)
    max_update_norm: float | None = None
    #: test hook: role -> measurement its platform quotes instead of the real one (simulates altered code)
    measurement_overrides: dict[str, bytes] = field(default_factory=dict)

    def __post_init__(self) -> None:
        ids = [p.client_id for p in self.parties]
        if len(ids) < 2:
            raise ValueError(f"zero-sum aggregation needs at least 2 data owners, got {len(ids)}")
        if len(set(ids)) != len(ids) or min(ids) < 0:
            raise ValueError(f"client ids must be unique and non-negative, got {ids}")
        if self.on_dropout not in DROPOUT_POLICIES:
            raise ValueError(f"on_dropout must be one of {DROPOUT_POLICIES}, got {self.on_dropout!r}")
        if not self.layout or min(self.layout) <= 0:
            raise ValueError(f"layout must list positive tensor sizes, got {self.layout}")
        if self.max_update_norm is not None and not 0 < self.max_update_norm < float("inf"):
            raise ValueError(f"max_update_norm must be a positive finite number or None, got {self.max_update_norm!r}")
        if self.round_timeout_s <= 0 or self.start_timeout_s <= 0:
            raise ValueError("timeouts must be positive")
        if self.bulk_threshold < 0:
            raise ValueError(f"bulk_threshold must be >= 0 (0 disables shared memory), got {self.bulk_threshold}")
        if self.mp_context not in ("spawn", "forkserver"):  # fork would copy the relay's threads and locks
            raise ValueError(f"mp_context must be 'spawn' or 'forkserver', got {self.mp_context!r}")


@dataclass
class AggregateResult:
    """The unmasked weighted mean update of one round and what it took."""

    mean: np.ndarray
    num_samples: int
    survivors: list[int]
    dropped: list[int]
    attempt: int
    timings: dict[str, float]
    #: updates the training enclaves scaled down to `max_update_norm`, and coordinates the codec clipped
    clipped_updates: int = 0
    clipped_coordinates: int = 0


class CitadelSession:
    """Starts every role process and the relay, runs rounds, and stops everything on `close()`."""

    def __init__(self, config: SessionConfig, *, tamper: Tamper | None = None) -> None:
        self.config = config
        self.tree = AggregationTree.build([leaf_name(p.client_id) for p in config.parties], config.fanout)
        self.authority = MockAttestationAuthority.generate()
        self.owner_key = Ed25519PrivateKey.generate()
        #: every shared-memory segment of this deployment is named <shm_prefix><random>; close() sweeps them
        self.shm_prefix = shm.new_prefix()
        self.relay = Relay(record=config.record_transcript, tamper=tamper, shm_prefix=self.shm_prefix)
        self.processes: dict[str, BaseProcess] = {}
        self.owner: ModelOwner | None = None
        self.num_samples: dict[int, int] = {}
        self.measurements: dict[str, bytes] = {}
        self._last_round: int | None = None

    # -- configuration -------------------------------------------------------------------------
    def role_configs(self) -> dict[str, tuple[str, dict[str, Any]]]:
        """Role -> (kind, measured configuration), admin first."""
        cfg, tree = self.config, self.tree
        verify_key = self.owner_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw).hex()
        admin = {"role": ADMIN, "owner_verify_key": verify_key, "on_dropout": cfg.on_dropout,
                 "round_timeout_s": cfg.round_timeout_s, "modulus_bits": cfg.codec.modulus_bits}
        admin_measurement = measure("admin", admin).hex()
        codec = {**cfg.codec.to_config(), "rounding_seed": cfg.rounding_seed}
        roles: dict[str, tuple[str, dict[str, Any]]] = {ADMIN: ("admin", admin)}
        for node in [*tree.aggregators, tree.root]:
            roles[node] = ("aggregator", {
                "role": node, "parent": tree.parent.get(node), "children": list(tree.children[node]),
                "is_root": node == tree.root, "admin_measurement": admin_measurement, "codec": codec})
        for party in cfg.parties:
            leaf = leaf_name(party.client_id)
            roles[leaf] = ("training", {
                "role": leaf, "client_id": party.client_id, "parent": tree.parent[leaf],
                "admin_measurement": admin_measurement, "owner_verify_key": verify_key, "codec": codec,
                "data": party.data, "faults": party.faults, "max_update_norm": cfg.max_update_norm})
        return roles

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> None:
        """Launch all roles, attest them, deploy the bundle; raises (after cleaning up) on any failure."""
        cfg = self.config
        ctx = mp.get_context(cfg.mp_context)
        roles = self.role_configs()
        self.measurements = {role: measure(kind, conf) for role, (kind, conf) in roles.items()}
        policy = {"allowed": {r: m.hex() for r, m in self.measurements.items() if r != ADMIN},
                  "leaves": list(self.tree.leaves), "fanout": cfg.fanout, "layout": list(cfg.layout)}
        options = {"start_timeout_s": cfg.start_timeout_s, "audit_dir": cfg.audit_dir, "log_level": cfg.log_level,
                   "shm_prefix": self.shm_prefix, "bulk_threshold": cfg.bulk_threshold}
        try:
            owner_end, relay_end = ctx.Pipe()
            self.relay.attach(OWNER, relay_end)
            mailbox = Mailbox(owner_end, OWNER, shm_prefix=self.shm_prefix, bulk_threshold=cfg.bulk_threshold)
            self.owner = ModelOwner(mailbox, self.authority.verifier(),
                                    self.measurements[ADMIN], self.owner_key)
            for role, (kind, conf) in roles.items():
                platform = EnclavePlatform(self.authority, cfg.measurement_overrides.get(role, self.measurements[role]))
                relay_side, role_side = ctx.Pipe()
                self.relay.attach(role, relay_side)
                proc = ctx.Process(target=role_main, args=(kind, role, conf, role_side, platform, options),
                                   name=f"citadel-{role}", daemon=True)
                proc.start()
                role_side.close()
                self.processes[role] = proc
            self.owner.connect(policy, cfg.start_timeout_s)
            self.num_samples = self.owner.deploy(cfg.bundle, [p.client_id for p in cfg.parties], cfg.start_timeout_s)
            cfg.codec.check_capacity(1.0, parties=len(cfg.parties))  # weights n_i / N sum to one
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> Self:
        if self.owner is None:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self, timeout: float = 5.0) -> None:
        """Stop every role (STOP, then terminate stragglers) and the relay, unlink every shared-memory
        segment of the deployment. Safe to call twice."""
        for role in self.processes:
            self.relay.send_plaintext(role, "STOP", {})
        deadline = time.monotonic() + timeout
        for proc in self.processes.values():
            proc.join(max(0.0, deadline - time.monotonic()))
        for proc in self.processes.values():
            if proc.is_alive():
                self._signal(proc, signal.SIGCONT)
                proc.terminate()
                proc.join(1.0)
            if proc.is_alive():
                proc.kill()
                proc.join(1.0)
        self.relay.close()
        if self.owner is not None:
            self.owner.end_round()
            self.owner.mailbox.close()
        self.processes.clear()
        shm.sweep(self.shm_prefix)  # what a process that died mid-round created and nobody consumed

    # -- rounds --------------------------------------------------------------------------------
    def run_round(self, rnd: int, global_weights: np.ndarray, clients: list[int]) -> AggregateResult:
        """One round: train in the enclaves, mask, sum up the tree, unmask at the root."""
        if self.owner is None:
            raise CitadelError("the session is not started (use `with CitadelSession(...)` or start())")
        if rnd < 0:
            raise ValueError(f"round numbers must be >= 0, got {rnd}")
        if self._last_round is not None and rnd <= self._last_round:
            raise ValueError(f"round numbers must increase (masks are bound to them): {rnd} after {self._last_round}")
        unknown = sorted(set(clients) - set(self.num_samples))
        if unknown or len(set(clients)) != len(clients) or len(clients) < 2:
            raise ValueError(f"clients must be >= 2 distinct known client ids; got {clients} (unknown: {unknown})")
        weights = np.ascontiguousarray(global_weights, dtype=np.float32).reshape(-1)
        if weights.size != sum(self.config.layout):
            raise ValueError(f"global weights have {weights.size} values, the layout {sum(self.config.layout)}")
        self._last_round = rnd
        start = time.monotonic()
        try:
            self.owner.start_round(rnd, weights, list(clients))
            # the admin decides within ROUND_BUDGET round timeouts; one more covers the messages in flight
            wait = self.config.round_timeout_s
            msg = self.owner.await_result(rnd, (ROUND_BUDGET + 1) * wait, wait)
        finally:
            self.owner.end_round()
        end = time.monotonic()
        meta = msg.meta
        survivors = sorted(int(c) for c in meta["counts"])
        t_ready, t_sent, t_total = float(meta["t_ready"]), float(meta["t_sent"]), float(meta["t_total"])
        timings = {"train_s": t_ready - start, "mask_s": t_sent - t_ready, "tree_s": t_total - t_sent,
                   "unmask_s": end - t_total, "round_s": end - start}
        stats = {k: int(v) for k, v in dict(meta.get("stats", {})).items()}
        result = AggregateResult(np.array(msg.arrays["mean"], dtype=np.float64), int(meta["num_samples"]),
                                 survivors, sorted(set(clients) - set(survivors)), int(meta["attempt"]), timings,
                                 stats.get("norm_clipped", 0), stats.get("codec_clipped", 0))
        if result.clipped_updates or result.clipped_coordinates:
            log.warning("round %d: %d update(s) scaled down to max_update_norm=%s, %d coordinate(s) clipped by "
                        "the codec to +-%g", rnd, result.clipped_updates, self.config.max_update_norm,
                        result.clipped_coordinates, self.config.codec.clip)
        return result

    # -- host powers (used by dropout tests) ---------------------------------------------------
    def process_of(self, client_id: int) -> BaseProcess:
        return self.processes[leaf_name(client_id)]

    def kill_party(self, client_id: int) -> None:
        """SIGKILL the enclave process of `client_id` (the host pulling the plug)."""
        proc = self.process_of(client_id)
        self._signal(proc, signal.SIGKILL)
        proc.join(5.0)

    def suspend_party(self, client_id: int) -> None:
        """SIGSTOP the enclave process of `client_id` (the host starving it)."""
        self._signal(self.process_of(client_id), signal.SIGSTOP)

    def resume_party(self, client_id: int) -> None:
        self._signal(self.process_of(client_id), signal.SIGCONT)

    @staticmethod
    def _signal(proc: BaseProcess, sig: signal.Signals) -> None:
        if proc.pid is not None and proc.is_alive():
            try:
                os.kill(proc.pid, sig)
            except ProcessLookupError:
                pass
