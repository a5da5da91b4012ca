"""Dropouts: a training enclave that dies (before or after receiving its mask) or never answers.

on_dropout="remask": the admin re-issues fresh masks to the survivors and the round completes with
exactly their weighted mean. on_dropout="abort": the round fails with RoundAbortedError naming the
lost client, and the deployment keeps working for later rounds.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import numpy as np
import pytest

from siegecraft.enclave import CitadelSession, RoundAbortedError

from .synthetic import config, global_weights, mean_error_bound, plaintext_mean
from .transports import ray_instance, transport  # noqa: F401 - fixtures

TIMEOUT_S = 3.0


def check_mean(cfg, result, survivors: list[int], rnd: int) -> None:
    expected, count = plaintext_mean(cfg, survivors, rnd, global_weights(rnd))
    assert result.survivors == survivors
    assert result.num_samples == count
    assert np.abs(result.mean - expected).max() <= mean_error_bound(cfg.codec, len(survivors))


@pytest.fixture(scope="module")
def remask_session() -> Iterator[CitadelSession]:
    faults = {1: {"crash": {"round": 2, "stage": "train"}},
              3: {"crash": {"round": 3, "stage": "mask"}},
              4: {"stall": {"round": 4, "seconds": 2 * TIMEOUT_S}}}
    cfg = config(6, faults=faults, on_dropout="remask", round_timeout_s=TIMEOUT_S)
    with CitadelSession(cfg) as session:
        yield session


def test_remask_rounds(remask_session: CitadelSession) -> None:
    s, cfg = remask_session, remask_session.config
    r1 = s.run_round(1, global_weights(1), [0, 1, 2, 3, 4, 5])
    check_mean(cfg, r1, [0, 1, 2, 3, 4, 5], 1)
    assert r1.attempt == 0

    # client 1's enclave dies while training: masks are drawn for the five others
    r2 = s.run_round(2, global_weights(2), [0, 1, 2, 3, 4, 5])
    assert r2.dropped == [1] and r2.attempt == 1
    check_mean(cfg, r2, [0, 2, 3, 4, 5], 2)

    # client 3 dies after receiving its mask: its masked update never arrives, the rest is remasked
    r3 = s.run_round(3, global_weights(3), [0, 2, 3, 4, 5])
    assert r3.dropped == [3] and r3.attempt == 1
    check_mean(cfg, r3, [0, 2, 4, 5], 3)

    # client 4 does not answer within the timeout
    start = time.monotonic()
    r4 = s.run_round(4, global_weights(4), [0, 2, 4])
    assert r4.dropped == [4]
    assert TIMEOUT_S * 0.9 <= time.monotonic() - start < TIMEOUT_S * 5  # waited for the timeout, no longer
    check_mean(cfg, r4, [0, 2], 4)

    # the host kills client 5 between rounds
    s.kill_party(5)
    time.sleep(0.5)
    r5 = s.run_round(5, global_weights(5), [0, 2, 5])
    assert r5.dropped == [5]
    check_mean(cfg, r5, [0, 2], 5)

    # fewer than two survivors: nothing can be hidden, so the round is refused
    with pytest.raises(RoundAbortedError, match="at least 2"):
        s.run_round(6, global_weights(6), [0, 5])
    with pytest.raises(ValueError, match="must increase"):
        s.run_round(6, global_weights(6), [0, 2])
    with pytest.raises(ValueError, match=">= 2 distinct known"):
        s.run_round(7, global_weights(7), [0, 17])


def test_abort_policy_fails_the_round_cleanly(transport: str) -> None:  # noqa: F811 - over shm, tcp and ray
    faults = {1: {"crash": {"round": 2, "stage": "train"}}, 2: {"crash": {"round": 3, "stage": "mask"}}}
    cfg = config(4, faults=faults, on_dropout="abort", round_timeout_s=TIMEOUT_S, transport=transport)
    with CitadelSession(cfg) as s:
        check_mean(cfg, s.run_round(1, global_weights(1), [0, 1, 2, 3]), [0, 1, 2, 3], 1)
        with pytest.raises(RoundAbortedError, match="on_dropout='abort'.*client 1") as info:
            s.run_round(2, global_weights(2), [0, 1, 2, 3])
        assert info.value.dropped == [1] and info.value.rnd == 2
        with pytest.raises(RoundAbortedError, match="client 2"):
            s.run_round(3, global_weights(3), [0, 2, 3])
        # the deployment survives an aborted round
        check_mean(cfg, s.run_round(4, global_weights(4), [0, 3]), [0, 3], 4)
