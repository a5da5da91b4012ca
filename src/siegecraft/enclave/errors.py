"""Exceptions of the Citadel protocol; every rejection names what failed and why."""

from __future__ import annotations


class CitadelError(Exception):
    """Base class of every error raised by `siegecraft.enclave`."""


class AttestationError(CitadelError):
    """A quote was rejected: bad signature, unknown measurement, stale nonce or unbound key."""


class ChannelError(CitadelError):
    """A sealed message could not be accepted on a secure channel."""


class TamperedMessageError(ChannelError):
    """AES-GCM authentication failed: the ciphertext, its header or its key was altered."""


class ReplayError(ChannelError):
    """A message that was already accepted, or belongs to an epoch (round) the channel has left: dropped
    harmlessly."""


class CodecError(CitadelError):
    """Values cannot be encoded or summed without loss (for example, the sum could wrap around)."""


class MaskReuseError(CitadelError):
    """A mask for the same (round, attempt, party) was requested or applied twice."""


class BundleError(CitadelError):
    """The model owner's code bundle is not signed by the model owner or is malformed."""


class RoundAbortedError(CitadelError):
    """A round could not complete (dropout under on_dropout="abort", a rejected message, a timeout)."""

    def __init__(self, rnd: int, reason: str, dropped: list[int] | None = None) -> None:
        super().__init__(f"round {rnd} aborted: {reason}")
        self.rnd = rnd
        self.reason = reason
        self.dropped = list(dropped or [])
