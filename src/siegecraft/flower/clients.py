"""Flower clients: siegecraft's honest client, and any registered attack wrapped around an honest client.

`AttackClient` wraps an honest `NumPyClient`: its honest `fit` is the benign update the adversary may
use, and the adversary (any entry of the federated `ATTACKS` registry: poisoning, backdoor, HijackFL and
the hijacking baselines) decides what is uploaded. Flower builds a fresh client object for every message,
in whichever Ray actor is free, so a stateful attack keeps what it must remember in the node's
`context.state` (Flower's per-node memory): a hijacking attack stores its snapshot there, and any process
that later serves the node rebuilds the attack from it. At the final round the server's evaluate config
carries `siegecraft_final`, and the attack client reports its adversary's final metrics (HijackFL: the
hijacking accuracy on the final global model) under the metric `siegecraft_attack`, as JSON.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, RecordDict
from flwr.client import NumPyClient
from flwr.common import Scalar

from siegecraft.attacks.hijackfl.adversary import HijackAdversary
from siegecraft.core.models import load_flat_params
from siegecraft.engines.federated.client import ClientTrainer, ClientUpdate
from siegecraft.engines.federated.config import FederatedExperiment
from siegecraft.engines.federated.extensions import ATTACKS, Adversary, FederationContext, build_adversary
from siegecraft.flower.arrays import NDArrays, arrays_of, flat_of, model_arrays
from siegecraft.flower.context import experiment_key, federation_context
from siegecraft.flower.strategy import ATTACK_REPORT_KEY, FINAL_KEY, PARTITION_KEY, ROUND_KEY

SNAPSHOT_ARRAYS, SNAPSHOT_META, ROUND_COUNTER = "siegecraft.snapshot", "siegecraft.snapshot_meta", "siegecraft.rounds"

#: adversaries live per process, keyed by (experiment, attack, attacker clients); state rebuilds them
_ADVERSARIES: dict[str, Adversary] = {}


class SiegecraftClient(NumPyClient):
    """siegecraft's benign client on Flower: `ClientTrainer.train` for partition `client_id`, as the engine does.

    It returns the trained weights themselves (not start + update), so the server's update is bit-identical
    to the one siegecraft's engine computes. With `siegecraft_skip` in the fit config (zero-sum secure
    aggregation: the client's training enclave trains instead) it returns the weights it got.
    """

    def __init__(self, trainer: ClientTrainer, client_id: int) -> None:
        self.trainer, self.client_id = trainer, client_id

    def get_properties(self, config: dict[str, Scalar]) -> dict[str, Scalar]:
        del config
        return {PARTITION_KEY: self.client_id}

    def fit(self, parameters: NDArrays, config: dict[str, Scalar]) -> tuple[NDArrays, int, dict[str, Scalar]]:
        if config.get("siegecraft_skip"):
            return parameters, len(self.trainer.partitions[self.client_id]), {PARTITION_KEY: self.client_id}
        update = self.trainer.train(self.client_id, int(config[ROUND_KEY]), flat_of(parameters))
        arrays = model_arrays(self.trainer.model)
        return arrays, update.num_samples, {"loss": float(update.metrics["loss"]), PARTITION_KEY: self.client_id}

    def evaluate(self, parameters: NDArrays, config: dict[str, Scalar]) -> tuple[float, int, dict[str, Scalar]]:
        """The server evaluates the global model centrally; a bridge client has nothing to add."""
        del parameters, config
        return 0.0, 0, {}


class AttackClient(NumPyClient):
    """An honest Flower client with a siegecraft adversary deciding what it uploads.

    `honest` computes the benign update; `ctx` is siegecraft's view of the federation (its data and model),
    `state` the node's `context.state` (Flower's per-node memory across rounds; without it a stateful attack
    only remembers within one process). `attackers` are the client ids the adversary controls (default:
    this one).
    """

    def __init__(self, honest: NumPyClient, attack: str, *, client_id: int, ctx: FederationContext,
                 options: Mapping[str, Any] | None = None, attackers: Sequence[int] | None = None,
                 state: RecordDict | None = None) -> None:
        self.honest, self.attack, self.client_id, self.ctx, self.state = honest, attack, client_id, ctx, state
        self.options = dict(options or {})
        self.attackers = sorted(attackers) if attackers is not None else [client_id]
        # an unknown name or a bad option fails here, not in a Ray actor rounds later
        ATTACKS.get(attack).options_model.model_validate(self.options)

    # -- the adversary, rebuilt from the node's state in a fresh process ---------------------------
    def _key(self) -> str:
        return "|".join([experiment_key(self.ctx.exp), str(self.ctx.figures_dir), self.attack,
                         json.dumps(self.options, sort_keys=True), ",".join(map(str, self.attackers))])

    def adversary(self) -> Adversary:
        """This process's adversary; a hijacking one replays its snapshot from the node's state."""
        key = self._key()
        if key not in _ADVERSARIES:
            adv = build_adversary(self.attack, self.attackers, self.options)
            adv.setup(self.ctx)
            saved = self._load_snapshot()
            if saved is not None and isinstance(adv, HijackAdversary):
                rnd, weights, benign = saved
                adv.client_update(self.ctx, self.client_id, rnd, weights,
                                  lambda: ClientUpdate(self.client_id, benign, 1))
            _ADVERSARIES[key] = adv
        return _ADVERSARIES[key]

    def _load_snapshot(self) -> tuple[int, torch.Tensor, torch.Tensor] | None:
        if self.state is None or SNAPSHOT_ARRAYS not in self.state:
            return None
        weights, benign = (torch.from_numpy(a.numpy()) for a in self.state[SNAPSHOT_ARRAYS].values())
        return int(self.state[SNAPSHOT_META]["round"]), weights, benign

    def _save_snapshot(self, adv: Adversary, benign: ClientUpdate | None) -> None:
        snap = getattr(adv, "snapshot", None)
        if self.state is None or snap is None or SNAPSHOT_ARRAYS in self.state:
            return
        update = benign.update if benign is not None else torch.zeros_like(snap.weights)
        self.state[SNAPSHOT_ARRAYS] = ArrayRecord([snap.weights.numpy().copy(), update.numpy().copy()])
        self.state[SNAPSHOT_META] = ConfigRecord({"round": int(snap.round)})

    def _round(self, config: Mapping[str, Scalar]) -> int:
        """The server's round number, or (under a strategy that does not send it) this node's fit count."""
        if ROUND_KEY in config:
            return int(config[ROUND_KEY])
        if self.state is None:
            raise ValueError(f"AttackClient needs {ROUND_KEY!r} in the fit config, or the node's context.state")
        done = int(self.state[ROUND_COUNTER]["fits"]) if ROUND_COUNTER in self.state else 0
        self.state[ROUND_COUNTER] = ConfigRecord({"fits": done + 1})
        return done + 1

    # -- Flower's client interface -----------------------------------------------------------------
    def get_properties(self, config: dict[str, Scalar]) -> dict[str, Scalar]:
        return {**self.honest.get_properties(config), PARTITION_KEY: self.client_id}

    def get_parameters(self, config: dict[str, Scalar]) -> NDArrays:
        return self.honest.get_parameters(config)

    def fit(self, parameters: NDArrays, config: dict[str, Scalar]) -> tuple[NDArrays, int, dict[str, Scalar]]:
        rnd, start = self._round(config), flat_of(parameters)
        adv = self.adversary()
        done: dict[str, ClientUpdate] = {}

        def benign() -> ClientUpdate:
            if "update" not in done:
                arrays, n, metrics = self.honest.fit(parameters, config)
                done["update"] = ClientUpdate(self.client_id, flat_of(arrays) - start, n, dict(metrics))
                done["arrays"] = arrays  # type: ignore[assignment]
            return done["update"]

        upload = adv.client_update(self.ctx, self.client_id, rnd, start, benign)
        self._save_snapshot(adv, done.get("update"))
        metrics = {**{k: v for k, v in upload.metrics.items() if isinstance(v, (int, float, str, bool))},
                   PARTITION_KEY: self.client_id}
        if "update" in done and upload.update is done["update"].update:  # benign upload: the exact arrays
            return done["arrays"], upload.num_samples, metrics  # type: ignore[return-value]
        return arrays_of(start + upload.update, parameters), upload.num_samples, metrics

    def evaluate(self, parameters: NDArrays, config: dict[str, Scalar]) -> tuple[float, int, dict[str, Scalar]]:
        loss, n, metrics = self.honest.evaluate(parameters, config)
        metrics = {**metrics, PARTITION_KEY: self.client_id}
        if not config.get(FINAL_KEY):
            return loss, n, metrics
        model = self.ctx.model_factory()
        load_flat_params(model, flat_of(parameters))
        report = self.adversary().finish(self.ctx, model)
        return loss, n, {**metrics, ATTACK_REPORT_KEY: json.dumps(report, default=_jsonable)}


def _jsonable(value: Any) -> Any:
    if isinstance(value, (torch.Tensor, np.ndarray)):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    return float(value)


def attack_client(attack: str, honest: NumPyClient | Callable[[], NumPyClient], *, client_id: int,
                  experiment: FederatedExperiment | Mapping[str, Any] | str | Path, context: Any = None,
                  options: Mapping[str, Any] | None = None, figures_dir: str | Path | None = None,
                  attackers: Sequence[int] | None = None) -> AttackClient:
    """Wrap `honest` (a NumPyClient) with siegecraft's registered attack `attack`, for a Flower `client_fn`.

    `experiment` is the siegecraft config (object, table or TOML path) describing the task: dataset, split,
    model and training recipe, which the attack needs to see its own data. `context` is the Flower
    `Context` given to `client_fn`: its `state` keeps a hijacking attack's snapshot across rounds.
    """
    ctx = federation_context(experiment, figures_dir)
    state = getattr(context, "state", None)
    client = honest if isinstance(honest, NumPyClient) else honest()
    return AttackClient(client, attack, client_id=client_id, ctx=ctx, options=options, attackers=attackers,
                        state=state)
