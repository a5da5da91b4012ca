"""The training enclave of one data owner: trains the model owner's code on local data, masks the update.

After attesting to the admin it is attested by its data owner (provisioning.py), whose key is in its
measured configuration, and receives the data spec and the owner's signed sample declaration over
their channel: the data is not part of the measured configuration and never crosses the relay in the
clear. Its trainer counts the samples it loaded from that data; the enclave reports the count with the
declaration to the admin, which refuses the deployment if the two disagree.

It receives the model owner's signed bundle over its attested channel and each round's weights as a
broadcast (broadcast.py: the ticket arrives on the channel, the ciphertext in shared memory),
computes (local - global) with the bundle's trainer (READY to the admin, with its sample count), then,
with the mask the admin issues for (round, attempt) and that attempt's total sample count N, sends
its update encoded with weight n_i / N plus the mask to its parent aggregator. The float update stays
inside this process, so a remask after a dropout re-encodes it for the survivors' N under the new mask.

Only the admin's N counts. The model owner's ROUND_START carries the planned total as a hint, so the
enclave can encode while it still waits for the other parties (off the round's critical path); that
encoding is used only if the admin's N is the same number, otherwise the update is encoded again.
The rounding generator is seeded by (round, N), so both paths give the same integers.

Fault injection (`faults` in the measured config; tests only): {"crash": {"round": r, "stage":
"train" | "mask"}} exits the process at that point; {"stall": {"round": r, "seconds": s}} sleeps
before answering, like an enclave starved by its host.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any, NoReturn

import numpy as np
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from siegecraft.enclave import broadcast
from siegecraft.enclave.attestation import key_fingerprint
from siegecraft.enclave.bundle import Trainer, load_trainer, verify_bundle
from siegecraft.enclave.channel import PeerIdentity, SecureChannel
from siegecraft.enclave.codec import FixedPointCodec
from siegecraft.enclave.errors import AttestationError, BundleError, CitadelError, CodecError, MaskReuseError
from siegecraft.enclave.masks import MaskDomain, MaskGrant, MaskLedger
from siegecraft.enclave.provisioning import data_owner_name, hello_message, provision_context
from siegecraft.enclave.roles.base import ADMIN, OWNER, EnclaveRole, Message
from siegecraft.enclave.wire import payload_buffer, payload_size, unpack

CRASH_EXIT_CODE = 17


@dataclass
class PendingUpdate:
    """A round's float update, kept until the round ends; `encoded` is its encoding for the hinted total."""

    rnd: int
    delta: np.ndarray
    hint: int | None = None
    encoded: np.ndarray | None = None
    #: {"norm_clipped": 0 or 1, "codec_clipped": coordinates beyond the codec's clip}; summed up the tree
    stats: dict[str, int] = field(default_factory=dict)


class TrainingRole(EnclaveRole):
    """One data owner's enclave: local training, fixed-point encoding, masking."""

    kind = "training"

    def setup(self) -> None:
        super().setup()
        self.codec = FixedPointCodec.from_config(self.config["codec"])
        self.rounding_seed = int(self.config["codec"].get("rounding_seed", 0))
        self.client_id = int(self.config["client_id"])
        self.parent = str(self.config["parent"])
        self.faults: dict[str, Any] = dict(self.config.get("faults") or {})
        bound = self.config.get("max_update_norm")
        self.max_update_norm = None if bound is None else float(bound)
        self.ledger = MaskLedger()
        self.pending_update: PendingUpdate | None = None
        # reused every round: the private copy of the broadcast's ciphertext, and the payload that is
        # encoded, masked and sealed in place (both are consumed before the next round needs them)
        self.ciphertext_scratch = bytearray()
        self.payload_scratch = bytearray()
        try:
            data, declaration = self._provision()
        except CitadelError as exc:
            self._fail_provisioning(f"provisioning by {data_owner_name(self.client_id)} failed: {exc}")
        msg = self.wait_for(lambda m: m.kind == "BUNDLE" and m.src == OWNER, self.start_timeout_s,
                            "the model owner's bundle")
        try:
            bundle = verify_bundle(msg.meta["signed"], bytes.fromhex(self.config["owner_verify_key"]), self.id)
            self.trainer: Trainer = load_trainer(bundle, data, self.client_id)
        except BundleError as exc:
            self.send(OWNER, "BUNDLE_ACK", {"error": str(exc)})
            self._fail_provisioning(f"the bundle was refused: {exc}")
        # the count comes from the data the trainer loaded, not from anybody's word; the admin compares it
        # with the data owner's declaration
        self.num_samples = int(self.trainer.num_samples)
        self.send(OWNER, "BUNDLE_ACK", {"ok": True})
        self.send(ADMIN, "PROVISIONED", {"num_samples": self.num_samples, "declaration": declaration})
        self.audit("bundle_loaded", entrypoint=bundle.entrypoint, num_samples=self.num_samples)

    def _provision(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """Be attested by this party's data owner, then receive its data spec and sample declaration."""
        owner = data_owner_name(self.client_id)
        verify_key = bytes.fromhex(self.config["data_owner_key"])
        hello = self.wait_for(lambda m: m.kind == "PROVISION_HELLO" and m.src == owner, self.start_timeout_s,
                              f"{owner}'s hello")
        try:
            their_key, nonce = bytes.fromhex(hello.meta["public_key"]), bytes.fromhex(hello.meta["nonce"])
            Ed25519PublicKey.from_public_bytes(verify_key).verify(bytes.fromhex(hello.meta["signature"]),
                                                                  hello_message(self.id, their_key, nonce))
        except (InvalidSignature, KeyError, TypeError, ValueError):
            raise AttestationError(f"the hello of {owner} is not signed by the data owner's key") from None
        quote = self.platform.quote(self.identity.public_key, nonce)
        self.send_plain(owner, "PROVISION_EVIDENCE", {"quote": quote.to_dict(),
                                                      "public_key": self.identity.public_key.hex()})
        peer = PeerIdentity(owner, their_key, key_fingerprint(verify_key))
        self.channels[owner] = SecureChannel(self.identity, self.key, peer, provision_context(nonce))
        self.release_held()
        self.send(owner, "PROVISION_SESSION", {"session": self.session.hex()})
        msg = self.wait_for(lambda m: m.src == owner and ((m.kind == "DATA" and m.sealed)
                                                          or m.kind == "PROVISION_REFUSED"),
                            self.start_timeout_s, f"the data of {owner}")
        if msg.kind == "PROVISION_REFUSED":
            raise AttestationError(f"{owner} refused this enclave's evidence: {msg.meta.get('reason')}")
        data, declaration = msg.meta.get("data"), msg.meta.get("declaration")
        if not isinstance(data, dict) or not isinstance(declaration, dict):
            raise CitadelError(f"malformed DATA from {owner}")
        self.audit("data_provisioned", owner=owner)
        return data, declaration

    def _fail_provisioning(self, reason: str) -> NoReturn:
        """Tell the admin why this enclave has no data (it fails the deployment), then wait for STOP.

        Staying up until the host stops it keeps the admin's named reason ahead of any PEER_DOWN."""
        self.audit("provisioning_failed", error=reason)
        self.send(ADMIN, "PROVISION_FAILED", {"reason": reason})
        while not self.stopped:
            self.next_message(self.tick_s)
        raise CitadelError(f"{self.id}: {reason}")

    def _fault(self, stage: str, rnd: int) -> None:
        crash = self.faults.get("crash")
        if crash and int(crash["round"]) == rnd and crash["stage"] == stage:
            self.audit("fault_crash", rnd=rnd, stage=stage)
            os._exit(CRASH_EXIT_CODE)
        stall = self.faults.get("stall")
        if stall and stage == "train" and int(stall["round"]) == rnd:
            time.sleep(float(stall["seconds"]))

    def handle(self, msg: Message) -> None:
        if not msg.sealed:
            return
        if msg.kind == "ROUND_START" and msg.src == OWNER:
            rnd = int(msg.meta["rnd"])
            weights = self._open_broadcast(rnd, msg.meta, msg.arrays.get("broadcast"))
            if weights is not None:
                self._train(rnd, weights, msg.meta.get("total_samples"))
        elif msg.kind == "MASK" and msg.src == ADMIN:
            self._mask(msg)
        elif msg.kind == "ABORT" and msg.src == ADMIN:
            if self.pending_update is not None and self.pending_update.rnd <= int(msg.meta["rnd"]):
                self.pending_update = None
        else:
            self.audit("ignored", kind=msg.kind, src=msg.src)

    def _open_broadcast(self, rnd: int, meta: dict[str, Any], inline: np.ndarray | None = None) -> np.ndarray | None:
        """The round's global weights from the owner's broadcast; None (after telling the admin) if refused."""
        try:
            ticket = broadcast.Ticket.from_meta(meta["broadcast"])
            if len(self.ciphertext_scratch) < ticket.size:
                self.ciphertext_scratch = bytearray(ticket.size)
            payload = broadcast.open_ticket(ticket, session=self.session, rnd=rnd, sender=OWNER,
                                            prefix=self.options.get("shm_prefix"), scratch=self.ciphertext_scratch,
                                            inline=None if inline is None else inline.data)
            inner, arrays = unpack(payload)
            if int(inner["rnd"]) != rnd or "weights" not in arrays:
                raise broadcast.BroadcastError(f"broadcast payload is for round {inner['rnd']}, not {rnd}")
        except broadcast.BroadcastMissingError as exc:
            self.audit("dropped", kind="ROUND_START", rnd=rnd, error=str(exc))
            self.send(ADMIN, "READY", {"rnd": rnd, "ok": False, "reason": str(exc)})
            return None
        except (CitadelError, KeyError, TypeError, ValueError) as exc:
            self.refuse(exc if isinstance(exc, CitadelError) else broadcast.BroadcastError(
                f"malformed ROUND_START: {exc}"), kind="ROUND_START", rnd=rnd)
            return None
        return arrays["weights"]

    def _encode(self, delta: np.ndarray, rnd: int, total: int, out: np.ndarray | None = None) -> np.ndarray:
        rng = np.random.default_rng([self.rounding_seed, self.client_id, rnd, total])
        return self.codec.encode(delta, weight=self.num_samples / total, rng=rng, out=out)

    def _train(self, rnd: int, weights: np.ndarray, hint: Any = None) -> None:
        self._fault("train", rnd)
        if self.num_samples <= 0:
            self.send(ADMIN, "READY", {"rnd": rnd, "ok": False, "reason": "no training data"})
            return
        start = time.monotonic()
        try:
            # `weights` views this round's privately decrypted broadcast: the trainer may keep or change it
            delta = np.asarray(self.trainer.update(rnd, weights))
        except Exception as exc:  # noqa: BLE001 - any failure of the model owner's code is a dropout
            self.pending_update = None
            self.audit("training_failed", rnd=rnd, error=f"{type(exc).__name__}: {exc}")
            self.send(ADMIN, "READY", {"rnd": rnd, "ok": False, "reason": f"training failed: {exc}"})
            return
        if not np.isfinite(delta).all():
            self.pending_update = None
            self.send(ADMIN, "READY", {"rnd": rnd, "ok": False, "reason": "the update contains NaN or inf"})
            return
        pending = self._bounded(rnd, delta.reshape(-1))
        if isinstance(hint, int) and hint >= self.num_samples:  # the owner's planned total (a hint only)
            try:
                pending.hint, pending.encoded = hint, self._encode(pending.delta, rnd, hint)
            except CodecError:
                pending.hint = None  # encoded at mask time instead
        self.pending_update = pending
        self.send(ADMIN, "READY", {"rnd": rnd, "ok": True, "num_samples": self.num_samples,
                                   "train_s": time.monotonic() - start})

    def _bounded(self, rnd: int, delta: np.ndarray) -> PendingUpdate:
        """The update scaled down to `max_update_norm` (L2) if it is longer, and what the codec will clip:
        a data owner cannot make its update weigh more than the bound, and neither bound acts silently."""
        clipped = 0
        if self.max_update_norm is not None:
            norm = float(np.linalg.norm(delta.astype(np.float64, copy=False)))
            if norm > self.max_update_norm:
                delta = (delta * (self.max_update_norm / norm)).astype(delta.dtype, copy=False)
                clipped = 1
                self.audit("update_clipped", rnd=rnd, factor=self.max_update_norm / norm)
        clip = self.codec.clip  # two reductions without temporaries; counted only when something exceeds
        beyond = int(np.count_nonzero(np.abs(delta) > clip)) if max(delta.max(), -delta.min()) > clip else 0
        return PendingUpdate(rnd, delta, stats={"norm_clipped": clipped, "codec_clipped": beyond})

    def _mask(self, msg: Message) -> None:
        rnd, attempt = int(msg.meta["rnd"]), int(msg.meta["attempt"])
        pending = self.pending_update
        if pending is None or pending.rnd != rnd:
            self.audit("ignored", kind="MASK", rnd=rnd, reason="no update for this round")
            return
        try:
            self.ledger.claim(rnd, attempt)
        except MaskReuseError as exc:
            self.refuse(exc, rnd=rnd)
            return
        self._fault("mask", rnd)
        domain = MaskDomain(self.session, rnd, attempt, self.id)
        seed = msg.meta.get("seed")
        grant = MaskGrant(domain, seed=bytes.fromhex(seed)) if seed else MaskGrant(
            domain, correction=msg.arrays["correction"])
        layout = [int(s) for s in msg.meta["layout"]]
        total = int(msg.meta["total_samples"])
        if not 0 < self.num_samples <= total:
            self.refuse(CitadelError(f"attempt total of {total} samples cannot include this party's "
                                     f"{self.num_samples}"), rnd=rnd)
            return
        meta = {"rnd": rnd, "attempt": attempt, "counts": {str(self.client_id): self.num_samples},
                "stats": pending.stats, "t_sent": time.monotonic()}
        # the masked vector is computed straight into the payload that gets sealed; the float update
        # (and an encoding made from the owner's hint) stay intact for a remask
        spec = {"v": (np.dtype(self.codec.dtype).name, pending.delta.size)}
        size = payload_size(meta, spec)
        if len(self.payload_scratch) < size:
            self.payload_scratch = bytearray(size + 1024)  # room for a longer header next round
        payload, views = payload_buffer(meta, spec, scratch=self.payload_scratch)
        try:
            if pending.encoded is not None and pending.hint == total:
                grant.add_to(pending.encoded, layout, self.codec.modulus_bits, out=views["v"])
            else:
                grant.add_to(self._encode(pending.delta, rnd, total, out=views["v"]), layout, self.codec.modulus_bits)
        except (CodecError, ValueError) as exc:
            self.refuse(CitadelError(str(exc)), rnd=rnd)
            return
        del views
        self.send_payload(self.parent, "MASKED", payload, rnd)
        self.send(ADMIN, "SUBMITTED", {"rnd": rnd, "attempt": attempt})

    def refuse(self, exc: CitadelError, kind: str = "MASK", rnd: int | None = None) -> None:
        """Refuse a MASK or ROUND_START that authenticated on the channel but fails a later check: alert.

        The alert names its round, so one that arrives after the admin has moved on (several parties
        refusing the same tampered broadcast) cannot abort the next round."""
        self.audit("rejected", kind=kind, error=str(exc))
        self.send(ADMIN, "ALERT", {"reason": f"{self.id}: {exc}", **({"rnd": rnd} if rnd is not None else {})})
