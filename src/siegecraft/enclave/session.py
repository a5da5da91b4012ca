"""Launch and drive a Citadel deployment: one OS process per role, all traffic through the relay.

`CitadelSession` is the numpy-level API (updates are float vectors); `CitadelRuntime` wraps it for
torch models. SIMULATION: the processes stand in for SGX enclaves and the mock authority process for
the platform's quoting infrastructure (see authority.py); the protocol itself - attestation checks,
channels, codec, masks, tree, dropouts - is the real one.

Launch: the session (the host's side, with the model owner) starts the platform (the authority
process) and the data owners process side by side; the platform announces its signer to the data
owners directly. The session then asks the platform to launch every enclave from (kind,
configuration): the platform measures and starts it and returns a handle and the relay's end of its
pipe. The model owner attests the admin and sends it the policy, the admin attests everyone, the data
owners attest their training enclaves and provision their data, and the admin checks each enclave's
sample count against its data owner's declaration. The session holds no private key of the platform.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import signal
import sys
import time
from dataclasses import dataclass, field
from multiprocessing.context import BaseContext
from typing import TYPE_CHECKING, Any

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from siegecraft.enclave import net, shm
from siegecraft.enclave.attestation import VerifierPolicy
from siegecraft.enclave.backends import backend_names, get_backend
from siegecraft.enclave.bundle import CodeBundle
from siegecraft.enclave.codec import FixedPointCodec
from siegecraft.enclave.data_owner import DataOwnerSpec, DataOwnersProcess, OwnerPolicy
from siegecraft.enclave.errors import CitadelError
from siegecraft.enclave.launcher import EnclaveLauncher, LaunchRequest, PlatformError, RoleHandle
from siegecraft.enclave.measurement import SECURITY_VERSION, measure
from siegecraft.enclave.owner import ModelOwner
from siegecraft.enclave.provisioning import data_owner_name, declared_count
from siegecraft.enclave.ray_placement import import_ray
from siegecraft.enclave.relay import Relay, Tamper
from siegecraft.enclave.roles.admin import ROUND_BUDGET, leaf_name
from siegecraft.enclave.roles.base import ADMIN, OWNER
from siegecraft.enclave.transport import DEFAULT_BULK_THRESHOLD, Mailbox
from siegecraft.enclave.tree import AggregationTree

if TYPE_CHECKING:
    from typing_extensions import Self

log = logging.getLogger("siegecraft.enclave")
DROPOUT_POLICIES = ("remask", "abort")
#: how roles reach the relay: "shm" pipes + shared memory (one machine, the default), "tcp" the network
#: transport with local role processes, "ray" the network transport with each role in a Ray actor
TRANSPORTS = ("shm", "tcp", "ray")


@dataclass
class PartySpec:
    """One data owner: its client id, the data it provisions to its enclave, (tests only) injected faults,
    and the sample count it declares (default: the size of `data`, see `provisioning.declared_count`;
    a different number is a dishonest owner, and the admin refuses the deployment)."""

    client_id: int
    data: dict[str, Any] = field(repr=False)
    faults: dict[str, Any] = field(default_factory=dict)
    num_samples: int | None = None

    def declared_samples(self) -> int:
        return declared_count(self.data) if self.num_samples is None else int(self.num_samples)


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
    #: attestation backend (backends.py); "mock" is a simulation with no hardware protection
    attestation: str = "mock"
    #: verifier policy of every party: minimum security version, and whether debug enclaves are acceptable
    min_svn: int = SECURITY_VERSION
    allow_debug: bool = False
    #: host's choice: launch every enclave in debug mode (their quotes say so; refused unless allow_debug)
    debug_enclaves: bool = False
    #: test hook for altered code: role -> extra modules the platform loads into that enclave and measures
    #: with its code, so its quotes carry a measurement that is not allow-listed
    code_overrides: dict[str, list[str]] = field(default_factory=dict)
    #: "shm" (pipes and shared memory), "tcp" (network transport, local processes), "ray" (network, Ray actors)
    transport: str = "shm"
    #: the address the relay's TCP listener binds (network transports); roles must be able to reach it
    listen_host: str = net.DEFAULT_HOST
    #: the Ray cluster of transport="ray" (None: the one this process is connected to)
    ray_address: str | None = None

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
        if self.attestation not in backend_names():
            raise ValueError(f"attestation must be one of {backend_names()}, got {self.attestation!r}")
        if self.transport not in TRANSPORTS:
            raise ValueError(f"transport must be one of {TRANSPORTS}, got {self.transport!r}")
        if not isinstance(self.listen_host, str) or not self.listen_host:
            raise ValueError(f"listen_host must be a host name or address, got {self.listen_host!r}")
        if self.min_svn < 0:
            raise ValueError(f"min_svn must be >= 0, got {self.min_svn}")
        for party in self.parties:
            if party.declared_samples() < 0:
                raise ValueError(f"client {party.client_id} declares {party.declared_samples()} samples")


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
    """Starts the platform, the data owners and every role process, runs rounds, and stops everything on
    `close()`."""

    def __init__(self, config: SessionConfig, *, tamper: Tamper | None = None) -> None:
        self.config = config
        self.backend = get_backend(config.attestation)
        self.tree = AggregationTree.build([leaf_name(p.client_id) for p in config.parties], config.fanout)
        self.owner_key = Ed25519PrivateKey.generate()
        #: every shared-memory segment of this deployment is named <shm_prefix><random>; close() sweeps them
        self.shm_prefix = shm.new_prefix()
        self.relay = Relay(record=config.record_transcript, tamper=tamper, shm_prefix=self.shm_prefix)
        #: the platform (mock: the authority process) and its trust anchor, the signer's public key
        self.platform: EnclaveLauncher | None = None
        self.signer: bytes | None = None
        self.data_owners: DataOwnersProcess | None = None
        #: client -> its data owner's verify key (the owner drew the key pair in its own process)
        self.data_owner_keys: dict[int, bytes] = {}
        self.processes: dict[str, RoleHandle] = {}
        self.owner: ModelOwner | None = None
        self.num_samples: dict[int, int] = {}
        self.measurements: dict[str, bytes] = {}
        self._last_round: int | None = None
        #: the relay's TCP front door (network transports only)
        self.listener: net.NetListener | None = None
        self._placement: dict[str, Any] | None = None

    # -- configuration -------------------------------------------------------------------------
    def _verify_key(self) -> str:
        return self.owner_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw).hex()

    def _attestation_settings(self) -> dict[str, Any]:
        """The verifier policy every enclave is measured with (the signer comes from the platform)."""
        cfg = self.config
        return {"backend": cfg.attestation, "min_svn": cfg.min_svn, "allow_debug": cfg.allow_debug}

    def _infrastructure_configs(self) -> dict[str, tuple[str, dict[str, Any]]]:
        """Admin first, then the aggregators and the root: (kind, measured configuration)."""
        cfg, tree = self.config, self.tree
        admin = {"role": ADMIN, "owner_verify_key": self._verify_key(), "on_dropout": cfg.on_dropout,
                 "round_timeout_s": cfg.round_timeout_s, "modulus_bits": cfg.codec.modulus_bits,
                 "attestation": self._attestation_settings()}
        admin_measurement = measure("admin", admin).hex()
        codec = {**cfg.codec.to_config(), "rounding_seed": cfg.rounding_seed}
        roles: dict[str, tuple[str, dict[str, Any]]] = {ADMIN: ("admin", admin)}
        for node in [*tree.aggregators, tree.root]:
            roles[node] = ("aggregator", {
                "role": node, "parent": tree.parent.get(node), "children": list(tree.children[node]),
                "is_root": node == tree.root, "admin_measurement": admin_measurement, "codec": codec,
                "attestation": self._attestation_settings()})
        return roles

    def _training_configs(self, admin_measurement: str) -> dict[str, tuple[str, dict[str, Any]]]:
        """One training enclave per party; its data is not here (its data owner provisions it)."""
        cfg, tree = self.config, self.tree
        codec = {**cfg.codec.to_config(), "rounding_seed": cfg.rounding_seed}
        roles: dict[str, tuple[str, dict[str, Any]]] = {}
        for party in cfg.parties:
            leaf = leaf_name(party.client_id)
            roles[leaf] = ("training", {
                "role": leaf, "client_id": party.client_id, "parent": tree.parent[leaf],
                "admin_measurement": admin_measurement, "owner_verify_key": self._verify_key(), "codec": codec,
                "data_owner_key": self.data_owner_keys[party.client_id].hex(), "faults": party.faults,
                "attestation": self._attestation_settings(), "max_update_norm": cfg.max_update_norm})
        return roles

    def role_configs(self) -> dict[str, tuple[str, dict[str, Any]]]:
        """Role -> (kind, measured configuration), admin first. Needs the data owners' keys (after start)."""
        if len(self.data_owner_keys) != len(self.config.parties):
            raise CitadelError("the training enclaves' configurations name their data owners' keys, which exist "
                               "only once the session has started")
        roles = self._infrastructure_configs()
        return {**roles, **self._training_configs(measure("admin", roles[ADMIN][1]).hex())}

    # -- lifecycle -----------------------------------------------------------------------------
    def announce(self) -> None:
        """One line on stderr (and in the log) when the backend offers no hardware protection."""
        if self.backend.simulated:
            print(self.backend.notice, file=sys.stderr, flush=True)
            log.info("%s", self.backend.notice)

    def start(self) -> None:
        """Launch all roles, attest them, provision the data, deploy the bundle; raises (after cleaning up)
        on any failure."""
        cfg = self.config
        ctx = mp.get_context(cfg.mp_context)
        unknown = sorted(set(cfg.code_overrides) - {ADMIN, *self.tree.nodes()})
        if unknown:
            raise ValueError(f"code_overrides names roles that do not exist: {unknown}")
        self.announce()
        networked = cfg.transport != "shm"
        options = {"start_timeout_s": cfg.start_timeout_s, "audit_dir": cfg.audit_dir, "log_level": cfg.log_level,
                   "shm_prefix": None if networked else self.shm_prefix,
                   "bulk_threshold": 0 if networked else cfg.bulk_threshold}
        try:
            if networked:
                self._start_network()
            signer = self._start_platform_and_owners(ctx, options)
            infrastructure = self._infrastructure_configs()
            self.measurements = {role: measure(kind, conf) for role, (kind, conf) in infrastructure.items()}
            admin_policy = VerifierPolicy.build({ADMIN: self.measurements[ADMIN]}, signer,
                                                min_svn=cfg.min_svn, allow_debug=cfg.allow_debug,
                                                backend=cfg.attestation)
            owner_end, relay_end = ctx.Pipe()
            self.relay.attach(OWNER, relay_end)
            mailbox = Mailbox(owner_end, OWNER, shm_prefix=options["shm_prefix"],
                              bulk_threshold=options["bulk_threshold"])
            self.owner = ModelOwner(mailbox, self.backend.checker(), admin_policy, self.owner_key)
            for role, (kind, conf) in infrastructure.items():  # they need no data owner keys: launch them now
                self._launch(role, kind, conf, options)
            assert self.data_owners is not None
            self.data_owner_keys = self.data_owners.wait_ready(cfg.start_timeout_s)
            training = self._training_configs(self.measurements[ADMIN].hex())
            for role, (kind, conf) in training.items():
                self.measurements[role] = measure(kind, conf)
                self._launch(role, kind, conf, options)
            self._await_connections()
            self.data_owners.provision({p.client_id: training[leaf_name(p.client_id)][1] for p in cfg.parties},
                                       cfg.start_timeout_s)
            policy = {"allowed": {r: m.hex() for r, m in self.measurements.items() if r != ADMIN},
                      "leaves": list(self.tree.leaves), "fanout": cfg.fanout, "layout": list(cfg.layout),
                      "data_owners": {str(c): k.hex() for c, k in self.data_owner_keys.items()}}
            self.owner.connect(policy, cfg.start_timeout_s)
            self.num_samples = self.owner.deploy(cfg.bundle, [p.client_id for p in cfg.parties], cfg.start_timeout_s)
            failed = {c: r for c, r in self.data_owners.wait_results(cfg.start_timeout_s).items() if r != "ok"}
            if failed:
                raise CitadelError(f"data owners report failed provisioning: {failed}")
            cfg.codec.check_capacity(1.0, parties=len(cfg.parties))  # weights n_i / N sum to one
        except BaseException:
            self.close()
            raise

    def _start_network(self) -> None:
        """The relay's TCP listener, and (transport "ray") where the platform places the roles."""
        cfg = self.config
        self.listener = net.NetListener(self.relay.attach, cfg.listen_host)
        if cfg.transport == "ray":
            address = cfg.ray_address
            if address is None:
                ray = import_ray()
                if not ray.is_initialized():
                    raise CitadelError("transport='ray' needs a running Ray instance (ray.init) or ray_address")
                address = ray.get_runtime_context().gcs_address
            self._placement = {"kind": "ray", "address": address, "host": cfg.listen_host}

    def _await_connections(self) -> None:
        """Network transports: every launched role must have connected before the protocol starts."""
        if self.listener is None:
            return
        missing = self.listener.wait_admitted(list(self.processes), self.config.start_timeout_s)
        if missing:
            raise CitadelError(f"roles {missing} did not connect to the relay at {self.listener.host}:"
                               f"{self.listener.port} within {self.config.start_timeout_s:g} s")

    def _start_platform_and_owners(self, ctx: BaseContext, options: dict[str, Any]) -> bytes:
        """Start the platform and the data owners process together (the platform sends its signer to the
        data owners over a pipe whose ends the session closes at once); returns the platform's signer."""
        cfg = self.config
        anchor_in, anchor_out = ctx.Pipe(duplex=False)
        try:
            self.platform = self.backend.start_platform(ctx, [anchor_out])
        finally:
            anchor_out.close()
        owner_ends = {}
        for party in cfg.parties:
            relay_side, owner_side = ctx.Pipe()
            self.relay.attach(data_owner_name(party.client_id), relay_side)
            owner_ends[party.client_id] = owner_side
        specs = [DataOwnerSpec(p.client_id, p.data, p.declared_samples()) for p in cfg.parties]
        policy = OwnerPolicy(bytes.fromhex(self._verify_key()), cfg.min_svn, cfg.allow_debug)
        try:
            self.data_owners = DataOwnersProcess(ctx, specs, owner_ends, anchor_in, policy, options)
        finally:
            anchor_in.close()
            for conn in owner_ends.values():
                conn.close()
        self.signer = self.platform.wait_ready(cfg.start_timeout_s)
        return self.signer

    def _launch(self, role: str, kind: str, config: dict[str, Any], options: dict[str, Any]) -> None:
        """Ask the platform to load `role`; it measures the enclave itself. Attach its pipe to the relay."""
        assert self.platform is not None
        if self.listener is not None:  # the role connects itself, with its own single-use ticket
            self.relay.expect(role)
            options = {**options, "net": self.listener.address(role).to_options()}
            if self._placement is not None:
                options["placement"] = dict(self._placement)
        request = LaunchRequest(kind, role, config, options, tuple(self.config.code_overrides.get(role, ())),
                                self.config.debug_enclaves)
        handle, relay_end = self.platform.launch(request)
        self.processes[role] = handle
        if relay_end is not None:
            self.relay.attach(role, relay_end)

    def __enter__(self) -> Self:
        if self.owner is None:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self, timeout: float = 5.0) -> None:
        """Stop every role (STOP, then terminate stragglers), the relay, the data owners and the platform,
        and unlink every shared-memory segment of the deployment. Safe to call twice."""
        for role in self.processes:
            self.relay.send_plaintext(role, "STOP", {})
        if self.platform is not None and self.processes:
            try:
                stragglers = self.platform.wait(list(self.processes), timeout)
                for role in stragglers:
                    self.processes[role].send_signal(signal.SIGCONT)
                    self.processes[role].terminate()
                for role in self.platform.wait(stragglers, 1.0):
                    self.processes[role].kill()
            except PlatformError as exc:
                log.warning("stopping the enclaves: %s", exc)
        if self.listener is not None:
            self.listener.close()
        self.relay.close()
        if self.owner is not None:
            self.owner.end_round()
            self.owner.mailbox.close()
        if self.data_owners is not None:
            self.data_owners.close()
        if self.platform is not None:
            self.platform.close()  # stops whatever enclave is still running, then the platform itself
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
    def process_of(self, client_id: int) -> RoleHandle:
        """The host's handle on the enclave process of `client_id` (a child of the platform, not of the host)."""
        return self.processes[leaf_name(client_id)]

    def kill_party(self, client_id: int) -> None:
        """SIGKILL the enclave process of `client_id` (the host pulling the plug)."""
        handle = self.process_of(client_id)
        handle.send_signal(signal.SIGKILL)
        handle.join(5.0)

    def suspend_party(self, client_id: int) -> None:
        """SIGSTOP the enclave process of `client_id` (the host starving it)."""
        self.process_of(client_id).send_signal(signal.SIGSTOP)

    def resume_party(self, client_id: int) -> None:
        self.process_of(client_id).send_signal(signal.SIGCONT)
