"""The admin role: attests every enclave, releases keys, draws the zero-sum masks, handles dropouts.

Setup: the model owner attests the admin (quote over the owner's nonce) and sends the policy (role ->
allowed measurement, the tree, the update layout, each data owner's verify key). The admin then runs
mutual attestation with every role (its own measured policy: the platform's signer, minimum SVN, no
debug enclaves unless allowed) and, once all passed, releases to each only the attested keys of the
peers it must talk to. Last, every training enclave reports the sample count its trainer found in the
data its data owner provisioned, with that owner's signed declaration for this session; a count that
disagrees with the declaration refuses the deployment (DEPLOY_FAILED to the model owner, naming why).
The counts the admin accepted go to the model owner (DEPLOYED).

Per round: phase 1 waits until every planned training enclave reported READY (its update is computed)
or the deadline passed; phase 2 issues fresh masks to the survivors, each with the survivors' total
sample count N (a party weighs its update by n_i / N), and tells each active aggregator which children
to wait for (the root also gets N). A party lost in either phase either aborts the round
(on_dropout="abort") or triggers a new attempt with freshly drawn masks for the survivors ("remask").

One result per round: an attempt's masks sum to a blinding mask that only the admin can lift. The root
reports SUMMED when its total for an attempt is complete and holds it, still blinded; the admin commits
the first complete sum of the round's *current* attempt, once (COMMIT to the root, with the blinding
seed; COMMITTED to the model owner), and a committed round is finished: no later attempt, no abort.
Every phase has a deadline of `round_timeout_s`, and the whole round one of ROUND_BUDGET times that.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, NoReturn

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from siegecraft.enclave.attestation import Quote, key_fingerprint
from siegecraft.enclave.channel import PeerIdentity, SecureChannel
from siegecraft.enclave.errors import AttestationError, CitadelError, ReplayError
from siegecraft.enclave.masks import MaskGrant, ZeroSumMaskIssuer
from siegecraft.enclave.provisioning import SampleDeclaration
from siegecraft.enclave.roles.base import (
    HOST,
    OWNER,
    EnclaveRole,
    Message,
    attest_context,
    random_session,
)
from siegecraft.enclave.tree import AggregationTree
from siegecraft.enclave.wire import Envelope

OWNER_HELLO_DOMAIN = b"citadel/owner-hello/v1\0"
MIN_PARTIES = 2
#: a round ends (committed or aborted) within this many round timeouts of its plan: training, the first
#: attempt, one remask and the tree's sum; later remasks must fit in the same budget
ROUND_BUDGET = 4


def leaf_name(client_id: int) -> str:
    return f"te-{client_id}"


def client_of(leaf: str) -> int:
    return int(leaf.removeprefix("te-"))


@dataclass
class RoundState:
    """The admin's view of the round in progress; phases: train -> aggregate -> summing -> done."""

    rnd: int
    planned: list[str]
    deadline: float
    round_deadline: float
    phase: str = "train"
    ready: dict[str, int] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    attempt: int = -1
    survivors: list[str] = field(default_factory=list)
    submitted: set[str] = field(default_factory=set)
    total: int = 0
    precomputed: tuple[list[str], dict[str, MaskGrant], MaskGrant] | None = None
    #: the blinding of the current attempt: its seed is what COMMIT hands the root
    blinding: MaskGrant | None = field(default=None, repr=False)
    t_ready: float = 0.0
    outcome: str = ""


class AdminRole(EnclaveRole):
    """Verifier of every role, key release, mask generation and round coordination."""

    kind = "admin"
    tick_s = 0.05

    def setup(self) -> None:
        self._connect_owner()
        policy = self.wait_for(lambda m: m.kind == "POLICY" and m.src == OWNER, self.start_timeout_s,
                               "the model owner's policy").meta
        self.tree = AggregationTree.build(policy["leaves"], int(policy["fanout"]))
        self.layout = [int(s) for s in policy["layout"]]
        allowed = {role: bytes.fromhex(m) for role, m in policy["allowed"].items()}
        missing = sorted(set(self.tree.nodes()) - set(allowed))
        if missing:
            raise CitadelError(f"policy has no measurement for {missing}")
        data_owners = {leaf_name(int(c)): bytes.fromhex(k) for c, k in policy["data_owners"].items()}
        missing = sorted(set(self.tree.leaves) - set(data_owners))
        if missing:
            raise CitadelError(f"policy has no data owner key for {missing}")
        self.session = random_session()
        self.verifier = self.quote_verifier(allowed)
        self.issuer = ZeroSumMaskIssuer(self.session, self.layout, int(self.config["modulus_bits"]))
        self.on_dropout = str(self.config["on_dropout"])
        self.round_timeout_s = float(self.config["round_timeout_s"])
        self.down: set[str] = set()
        self.state: RoundState | None = None
        attested = self._attest_all(set(allowed))
        self._release_keys(attested)
        #: leaf -> sample count of its provisioned data, as its data owner declared it
        self.provisioned = self._check_provisioning(data_owners)

    # -- setup -----------------------------------------------------------------------------
    def _connect_owner(self) -> None:
        msg = self.wait_for(lambda m: m.kind == "OWNER_HELLO" and m.src == OWNER, self.start_timeout_s,
                            "the model owner's hello")
        verify_key = bytes.fromhex(self.config["owner_verify_key"])
        owner_key, nonce = bytes.fromhex(msg.meta["public_key"]), bytes.fromhex(msg.meta["nonce"])
        try:
            Ed25519PublicKey.from_public_bytes(verify_key).verify(
                bytes.fromhex(msg.meta["signature"]), OWNER_HELLO_DOMAIN + owner_key + nonce)
        except (InvalidSignature, ValueError):
            raise AttestationError("the owner hello is not signed by the model owner's key") from None
        quote = self.platform.quote(self.identity.public_key, nonce)
        self.send_plain(OWNER, "ADMIN_EVIDENCE", {"quote": quote.to_dict(),
                                                  "public_key": self.identity.public_key.hex()})
        owner = PeerIdentity(OWNER, owner_key, key_fingerprint(verify_key))
        self.channels[OWNER] = SecureChannel(self.identity, self.key, owner, b"citadel/owner/" + nonce)
        self.owner = owner
        self.release_held()

    def _attest_all(self, pending: set[str]) -> dict[str, PeerIdentity]:
        hellos: dict[str, tuple[bytes, bytes, bytes]] = {}
        attested: dict[str, PeerIdentity] = {}
        deadline = time.monotonic() + self.start_timeout_s
        while pending:
            msg = self.next_message(max(0.0, deadline - time.monotonic()))
            if msg is None:
                reason = f"no attestation from {sorted(pending)} within {self.start_timeout_s:g} s"
                self.send(OWNER, "ATTESTATION_FAILED", {"role": min(pending), "reason": reason})
                raise AttestationError(reason)
            if msg.kind == "HELLO" and msg.src in pending:
                pub, their_nonce = bytes.fromhex(msg.meta["public_key"]), bytes.fromhex(msg.meta["nonce"])
                ours = self.verifier.challenge(msg.src)
                hellos[msg.src] = (pub, their_nonce, ours)
                quote = self.platform.quote(self.identity.public_key, their_nonce)
                self.send_plain(msg.src, "CHALLENGE", {"nonce": ours.hex(), "quote": quote.to_dict(),
                                                       "public_key": self.identity.public_key.hex()})
            elif msg.kind == "EVIDENCE" and msg.src in hellos and msg.src in pending:
                pub, their_nonce, ours = hellos[msg.src]
                try:
                    quote = Quote.from_dict(msg.meta["quote"])
                    self.verifier.verify(msg.src, quote, pub)
                except AttestationError as exc:
                    self.audit("attestation_failed", peer=msg.src, error=str(exc))
                    self.send(OWNER, "ATTESTATION_FAILED", {"role": msg.src, "reason": str(exc)})
                    continue
                peer = PeerIdentity(msg.src, pub, quote.measurement)
                self.channels[msg.src] = SecureChannel(self.identity, self.key, peer,
                                                       attest_context(their_nonce, ours))
                attested[msg.src] = peer
                pending.discard(msg.src)
                self.audit("attested_peer", peer=msg.src, measurement=quote.measurement.hex())
            elif msg.kind == "PEER_DOWN" and msg.src == HOST and msg.meta.get("role") in pending:
                role = msg.meta["role"]
                self.send(OWNER, "ATTESTATION_FAILED", {"role": role, "reason": f"{role} exited during attestation"})
                pending.discard(role)
            elif msg.kind == "STOP":
                raise CitadelError("stopped during attestation")
            else:
                self.audit("ignored", kind=msg.kind, src=msg.src)
        self.release_held()
        return attested

    def _check_provisioning(self, data_owners: dict[str, bytes]) -> dict[str, int]:
        """Every training enclave's count from its provisioned data must match its data owner's declaration.

        The first refusal (a mismatch, a bad declaration, a failed provisioning, a lost enclave) fails the
        deployment: the model owner gets DEPLOY_FAILED with the role and the reason."""
        pending = set(self.tree.leaves)
        counts: dict[str, int] = {}
        skipped: list[Message] = []
        deadline = time.monotonic() + self.start_timeout_s
        try:
            while pending:
                msg = self.next_message(max(0.0, deadline - time.monotonic()))
                if msg is None:
                    self._refuse_deployment(min(pending), f"no provisioning report within {self.start_timeout_s:g} s")
                elif msg.kind == "PROVISIONED" and msg.sealed and msg.src in pending:
                    try:
                        counts[msg.src] = self._declared_count(msg, data_owners[msg.src])
                    except AttestationError as exc:
                        self._refuse_deployment(msg.src, str(exc))
                    pending.discard(msg.src)
                elif msg.kind == "PROVISION_FAILED" and msg.sealed and msg.src in pending:
                    self._refuse_deployment(msg.src, str(msg.meta.get("reason")))
                elif msg.kind == "PEER_DOWN" and msg.src == HOST and msg.meta.get("role") in pending:
                    self._refuse_deployment(str(msg.meta["role"]), "its enclave exited before its data was provisioned")
                elif msg.kind == "STOP":
                    raise CitadelError("stopped while data was being provisioned")
                else:
                    skipped.append(msg)
        finally:
            self.backlog[:0] = skipped
        self.send(OWNER, "DEPLOYED", {"counts": {str(client_of(leaf)): n for leaf, n in counts.items()}})
        self.audit("provisioned", counts={leaf: counts[leaf] for leaf in sorted(counts)})
        return counts

    def _declared_count(self, msg: Message, verify_key: bytes) -> int:
        """The enclave's count, if its data owner's declaration for this session says the same."""
        client = client_of(msg.src)
        count = msg.meta.get("num_samples")
        if type(count) is not int or count <= 0:
            raise AttestationError(f"{msg.src} reports {count!r} samples from its provisioned data")
        declaration = SampleDeclaration.from_dict(msg.meta.get("declaration") or {})
        declaration.verify(verify_key, client_id=client, session=self.session)
        if declaration.num_samples != count:
            raise AttestationError(f"data owner {client} declared {declaration.num_samples} samples, but the "
                                   f"data provisioned to {msg.src} holds {count}")
        return count

    def _refuse_deployment(self, role: str, reason: str) -> NoReturn:
        self.audit("deployment_refused", peer=role, error=reason)
        self.send(OWNER, "DEPLOY_FAILED", {"role": role, "reason": reason})
        raise AttestationError(f"deployment refused: {role}: {reason}")

    def _peers_of(self, role: str) -> list[str]:
        tree = self.tree
        if role in tree.leaves:
            return [tree.parent[role], OWNER]
        if role == tree.root:
            return [*tree.children[role], OWNER]
        return [*tree.children[role], tree.parent[role]]

    def _release_keys(self, attested: dict[str, PeerIdentity]) -> None:
        identities = {**attested, OWNER: self.owner}
        for role in attested:
            peers = [identities[p].to_dict() for p in self._peers_of(role)]
            self.send(role, "KEYS", {"session": self.session.hex(), "peers": peers})
        directory = [attested[r].to_dict() for r in [*self.tree.leaves, self.tree.root]]
        self.send(OWNER, "DIRECTORY", {"session": self.session.hex(), "peers": directory})
        self.audit("keys_released", roles=sorted(attested))

    # -- rounds ----------------------------------------------------------------------------
    def on_rejected(self, env: Envelope, exc: CitadelError) -> None:
        super().on_rejected(env, exc)
        state: RoundState | None = getattr(self, "state", None)  # None until setup is complete
        if state is not None and state.phase != "done" and not isinstance(exc, ReplayError):
            self._abort(f"the admin rejected {env.kind} from {env.src}: {exc}")

    def handle(self, msg: Message) -> None:
        if msg.kind == "PEER_DOWN" and msg.src == HOST:
            self._peer_down(str(msg.meta.get("role")))
        elif msg.kind == "ROUND_PLAN" and msg.src == OWNER:
            self._plan(int(msg.meta["rnd"]), [int(c) for c in msg.meta["clients"]])
        elif msg.kind == "ALERT" and msg.sealed and self.state is not None and self.state.phase != "done":
            # an alert about an earlier round (a late refusal of a broadcast that already aborted it) is
            # history; one without a round (a channel-level rejection) concerns the current round
            if int(msg.meta.get("rnd", self.state.rnd)) == self.state.rnd:
                self._abort(f"a protocol message was rejected: {msg.meta.get('reason')}")
            else:
                self.audit("stale_alert", reason=str(msg.meta.get("reason")), rnd=msg.meta.get("rnd"))
        elif self.state is None or not msg.sealed or int(msg.meta.get("rnd", -1)) != self.state.rnd:
            self.audit("ignored", kind=msg.kind, src=msg.src)
        elif msg.kind == "READY" and msg.src in self.state.planned and self.state.phase == "train":
            declared = self.provisioned.get(msg.src)
            if msg.meta.get("ok") and int(msg.meta["num_samples"]) != declared:  # weights use the declared count
                self.state.failed[msg.src] = (f"{msg.src} reported {msg.meta['num_samples']} samples, its data owner "
                                              f"declared {declared}")
            elif msg.meta.get("ok"):
                self.state.ready[msg.src] = int(msg.meta["num_samples"])
            else:
                self.state.failed[msg.src] = str(msg.meta.get("reason", "no update"))
        elif (msg.kind == "SUBMITTED" and self.state.phase == "aggregate"
              and int(msg.meta["attempt"]) == self.state.attempt and msg.src in self.state.survivors):
            self.state.submitted.add(msg.src)
        elif msg.kind == "SUMMED" and msg.src == self.tree.root:
            self._summed(int(msg.meta["attempt"]), int(msg.meta["num_samples"]))
        else:
            self.audit("ignored", kind=msg.kind, src=msg.src, rnd=self.state.rnd, phase=self.state.phase)

    def _plan(self, rnd: int, clients: list[int]) -> None:
        if self.state is not None and self.state.phase != "done":
            self._abort(f"superseded by round {rnd}")
        previous = self.state.rnd if self.state is not None else None
        planned = [leaf_name(c) for c in clients]
        unknown = [p for p in planned if p not in self.tree.leaves]
        now = time.monotonic()
        state = RoundState(rnd, planned, now + self.round_timeout_s, now + ROUND_BUDGET * self.round_timeout_s)
        self.state = state
        if previous is not None and rnd <= previous:
            self._abort(f"round numbers must increase (masks are bound to them): {rnd} after {previous}")
            return
        if unknown or len(set(planned)) != len(planned):
            self._abort(f"unknown or duplicate clients in the plan: {clients}")
            return
        for p in planned:
            if p in self.down:
                state.failed[p] = "its enclave process has exited"
        alive = [p for p in planned if p not in self.down]
        if len(alive) >= MIN_PARTIES:
            state.precomputed = (alive, *self.issuer.issue_blinded(rnd, 0, alive, self.tree.root))
        state.deadline = min(time.monotonic() + self.round_timeout_s, state.round_deadline)
        self.send(OWNER, "PLANNED", {"rnd": rnd})
        self.audit("round_planned", rnd=rnd, planned=planned)

    def _peer_down(self, role: str) -> None:
        self.down.add(role)
        state = self.state
        if state is None or state.phase == "done":
            return
        if role in state.planned and state.phase == "train":
            state.failed.setdefault(role, "its enclave process exited")
        elif role in self.tree.aggregators or role == self.tree.root:
            self._abort(f"aggregator {role} exited")

    def on_tick(self) -> None:
        state = self.state
        if state is None or state.phase == "done":
            return
        now = time.monotonic()
        wait = f"{self.round_timeout_s:g} s"
        if state.phase == "train":
            settled = all(p in state.ready or p in state.failed for p in state.planned)
            if settled or now >= state.deadline:
                for p in state.planned:
                    if p not in state.ready and p not in state.failed:
                        state.failed[p] = f"{p} sent no READY within {wait}"
                state.t_ready = now
                self._after_loss([p for p in state.planned if p in state.ready], dict(state.failed))
        elif state.phase == "summing":
            if now >= state.deadline:
                self._abort(f"the root reported no sum for attempt {state.attempt} within {wait} of the last "
                            "SUBMITTED (an aggregator or the root did not deliver)")
        elif len(state.submitted) == len(state.survivors):
            state.phase, state.deadline = "summing", min(now + self.round_timeout_s, state.round_deadline)
            self.audit("round_masked", rnd=state.rnd, attempt=state.attempt)
        else:
            lost = {s: f"{s}'s enclave process exited" for s in state.survivors
                    if s not in state.submitted and s in self.down}
            if not lost and now >= state.deadline:
                lost = {s: f"{s} sent no SUBMITTED for attempt {state.attempt} within {wait}"
                        for s in state.survivors if s not in state.submitted}
            if lost:
                state.failed.update(lost)
                self._after_loss([s for s in state.survivors if s not in lost], lost)

    def _after_loss(self, survivors: list[str], lost: dict[str, str]) -> None:
        state = self.state
        assert state is not None
        if lost and self.on_dropout == "abort":
            detail = "; ".join(f"client {client_of(p)}: {why}" for p, why in sorted(lost.items()))
            self._abort(f"dropout with on_dropout='abort' ({detail})")
            return
        if len(survivors) < MIN_PARTIES:
            self._abort(f"only {len(survivors)} surviving part{'y' if len(survivors) == 1 else 'ies'}; "
                        f"zero-sum aggregation needs at least {MIN_PARTIES}")
            return
        if time.monotonic() >= state.round_deadline:
            detail = "; ".join(sorted(lost.values()))
            self._abort(f"the round's budget of {ROUND_BUDGET} x {self.round_timeout_s:g} s ran out ({detail})")
            return
        self._start_attempt(survivors)

    def _start_attempt(self, survivors: list[str]) -> None:
        state = self.state
        assert state is not None
        if state.attempt < 0 and state.precomputed is not None and state.precomputed[0] == survivors:
            state.attempt, grants, state.blinding = 0, state.precomputed[1], state.precomputed[2]
        else:
            state.attempt = max(state.attempt, 0) + 1
            grants, state.blinding = self.issuer.issue_blinded(state.rnd, state.attempt, survivors, self.tree.root)
        state.precomputed = None
        state.survivors, state.submitted, state.phase = list(survivors), set(), "aggregate"
        # each survivor encodes with weight n_i / total: the weights of an attempt sum to one
        total = state.total = sum(state.ready[s] for s in survivors)
        for node, kids in self.tree.live_children(survivors).items():
            meta: dict[str, Any] = {"rnd": state.rnd, "attempt": state.attempt, "children": kids}
            if node == self.tree.root:
                meta["t_ready"] = state.t_ready
                meta["survivors"] = [client_of(s) for s in survivors]
                meta["total_samples"] = total
            self.send(node, "EXPECT", meta)
        for party in survivors:
            grant = grants[party]
            meta = {"rnd": state.rnd, "attempt": state.attempt, "layout": self.layout, "total_samples": total,
                    "seed": grant.seed.hex() if grant.seed is not None else None}
            arrays = {"correction": grant.correction} if grant.correction is not None else None
            self.send(party, "MASK", meta, arrays)
        state.deadline = min(time.monotonic() + self.round_timeout_s, state.round_deadline)
        self.audit("masks_issued", rnd=state.rnd, attempt=state.attempt, survivors=survivors)

    def _summed(self, attempt: int, num_samples: int) -> None:
        """The root's total for `attempt` is complete: commit the round to it if it is the current attempt.

        This is the only place a round gets a result, and it ends the round: a round commits at most once,
        and only its current attempt (an earlier attempt's sum, delivered late, is never committed)."""
        state = self.state
        assert state is not None
        if state.phase not in ("aggregate", "summing") or attempt != state.attempt:
            self.audit("ignored_sum", rnd=state.rnd, attempt=attempt, current=state.attempt, phase=state.phase)
            return
        if num_samples != state.total:
            self._abort(f"the root's sum of attempt {attempt} counts {num_samples} samples, the attempt has "
                        f"{state.total}")
            return
        assert state.blinding is not None and state.blinding.seed is not None
        seed, state.blinding = state.blinding.seed, None
        state.phase, state.outcome = "done", "committed"
        survivors = [client_of(s) for s in state.survivors]
        self.send(self.tree.root, "COMMIT", {"rnd": state.rnd, "attempt": attempt, "unblind": seed.hex(),
                                             "layout": self.layout, "t_ready": state.t_ready})
        dropped = sorted(client_of(p) for p in state.failed)
        self.send(OWNER, "COMMITTED", {"rnd": state.rnd, "attempt": attempt, "survivors": survivors,
                                       "dropped": dropped, "reasons": sorted(state.failed.values())})
        self.audit("round_committed", rnd=state.rnd, attempt=attempt, survivors=survivors)

    def _abort(self, reason: str) -> None:
        """End the round without a result; a finished (committed or aborted) round is never aborted."""
        state = self.state
        assert state is not None
        if state.phase == "done":
            self.audit("late_abort_ignored", rnd=state.rnd, outcome=state.outcome, reason=reason)
            return
        state.blinding = state.precomputed = None
        dropped = sorted(client_of(p) for p in state.failed)
        self.send(OWNER, "ABORT", {"rnd": state.rnd, "reason": reason, "dropped": dropped})
        for role in [*state.planned, *self.tree.aggregators, self.tree.root]:
            if role not in self.down and role in self.channels:
                self.send(role, "ABORT", {"rnd": state.rnd})
        self.audit("round_aborted", rnd=state.rnd, reason=reason)
        state.phase, state.outcome = "done", "aborted"
