"""`[fl] engine = "flower"`: a siegecraft federated experiment executed by Flower's simulation.

The same config gives the same federation: the same data split, model, initial weights, client sampling
and local training (`ClientTrainer`, in Flower's Ray actors), the same server strategy and defenses (as a
`SiegecraftStrategy`), the same attack (as `AttackClient`s) and secure aggregation (`ZeroSumStrategy`),
and the same run directory (metrics.jsonl, summary.json, report.html). What Flower's simulation cannot
express is refused before any work: another executor, a Ray address, checkpoints and resuming.
"""

from __future__ import annotations

import importlib
import logging
import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import torch
from flwr.client import Client, ClientApp
from flwr.common import Context, Scalar, ndarrays_to_parameters
from flwr.server import ServerApp, ServerAppComponents, ServerConfig
from flwr.simulation import run_simulation

from siegecraft import attacks, defenses  # noqa: F401  (register the attacks and defenses, also in Ray actors)
from siegecraft.core.config import ConfigError, FieldError
from siegecraft.core.models import load_flat_params
from siegecraft.core.results.rundir import RunDir
from siegecraft.core.topology import Progress
from siegecraft.core.training import evaluate
from siegecraft.core.workload import build_workload
from siegecraft.enclave import federated_bridge  # noqa: F401  (registers the zero_sum secure aggregation)
from siegecraft.engines.federated.config import FederatedExperiment
from siegecraft.engines.federated.defense_setup import server_root_split
from siegecraft.engines.federated.engine import build_strategy
from siegecraft.engines.federated.runners import FEDERATED_RUNNERS, FederatedRunner
from siegecraft.engines.federated.secure import SECURE_AGGREGATIONS
from siegecraft.engines.federated.wrappers import DefenseContext
from siegecraft.flower.arrays import NDArrays, flat_of, model_arrays
from siegecraft.flower.clients import AttackClient, SiegecraftClient
from siegecraft.flower.context import federation_context
from siegecraft.flower.secure import ZeroSumStrategy
from siegecraft.flower.strategy import PartitionSampler, SiegecraftStrategy

log = logging.getLogger("siegecraft.flower")

_EXPERIMENTS: dict[str, FederatedExperiment] = {}


def bridge_client_fn(exp_json: str, figures_dir: str, plugins: Sequence[str], context: Context) -> Client:
    """The ClientApp of a config run (runs in a Ray actor): node `partition-id` is siegecraft client i."""
    torch.set_num_threads(1)  # one CPU per Flower client actor, as siegecraft's worker processes use
    if exp_json not in _EXPERIMENTS:
        for module in plugins:  # the config's plugins register their extensions in this process too
            importlib.import_module(module)
        _EXPERIMENTS[exp_json] = FederatedExperiment.model_validate_json(exp_json)
    exp = _EXPERIMENTS[exp_json]
    ctx = federation_context(exp, figures_dir)
    cid = int(context.node_config["partition-id"])
    honest = SiegecraftClient(ctx.trainer, cid)
    if cid in exp.attack.clients:
        return AttackClient(honest, exp.attack.name, client_id=cid, ctx=ctx, options=exp.attack.options,
                            attackers=exp.attack.clients, state=context.state).to_client()
    return honest.to_client()


class FlowerFederation:
    """One config run on Flower: builds the strategy and apps, logs each round, returns the final metrics."""

    def __init__(self, exp: FederatedExperiment, run: RunDir, progress: Progress | None = None) -> None:
        self.exp, self.run_dir = exp, run
        self.progress = progress or (lambda **_: None)
        self.ctx = federation_context(exp, run.figures)
        self.eval_model = self.ctx.model_factory()
        self.adversary = exp.attack.build()  # the server-side view: per-round attack metrics only
        self.global_weights = flat_of(model_arrays(self.eval_model))
        self.last_eval: dict[str, Any] = {}
        self.clock = time.perf_counter()

    def defense_context(self) -> DefenseContext:
        if not self.exp.defense.names:
            return DefenseContext()
        root = server_root_split(build_workload(self.exp).train, self.exp)[1]
        if root is None:
            return DefenseContext()
        return DefenseContext(root, lambda rnd, w: self.ctx.trainer.train(-1, rnd, w, data=root).update)

    def build_strategy(self, secure: Any) -> SiegecraftStrategy:
        fl = self.exp.fl
        attackers = list(self.exp.attack.clients) if self.exp.attack.name != "none" else []
        kwargs: dict[str, Any] = {
            "sampler": PartitionSampler(fl.clients, fl.per_round(), fl.sampling, self.exp.seed), "strict": True,
            "final_round": fl.rounds, "report_clients": attackers, "fraction_fit": fl.per_round() / fl.clients,
            "min_fit_clients": fl.per_round(), "min_available_clients": fl.clients, "fraction_evaluate": 0.0,
            "min_evaluate_clients": 0, "evaluate_fn": self.evaluate, "accept_failures": False,
            "initial_parameters": ndarrays_to_parameters(model_arrays(self.eval_model)),
        }
        rule = build_strategy(self.exp, self.defense_context())
        if secure is not None:
            return ZeroSumStrategy(rule, secure, **kwargs)
        return SiegecraftStrategy(rule, **kwargs)

    def evaluate(self, rnd: int, arrays: NDArrays, config: dict[str, Scalar]) -> tuple[float, dict[str, Scalar]] | None:
        """Flower's centralised evaluation hook, called after every round: log the round like the engine does."""
        del config
        if rnd == 0:
            return None
        fl = self.exp.fl
        self.global_weights = flat_of(arrays)
        info = dict(self.strategy.last_round)
        record: dict[str, Any] = {"round": rnd, "clients": [int(c) for c in info.pop("clients", [])],
                                  **{k: ([int(c) for c in v] if k == "dropped" else v) for k, v in info.items()}}
        record.update(self.adversary.on_round_end(self.ctx, rnd, self.global_weights))
        if rnd % fl.eval_every == 0 or rnd == fl.rounds:
            load_flat_params(self.eval_model, self.global_weights)
            self.last_eval = evaluate(self.eval_model, self.ctx.test_set).as_dict()
            record.update(self.last_eval)
        now = time.perf_counter()
        record["round_s"], self.clock = now - self.clock, now
        self.run_dir.log_metrics(record)
        self.progress(step=rnd, total=fl.rounds, accuracy=self.last_eval.get("accuracy"))
        return (float(self.last_eval["loss"]), {"accuracy": float(self.last_eval["accuracy"])}) if self.last_eval \
            else None

    def simulate(self, server_fn: Callable[[Context], ServerAppComponents], client_fn: Callable[[Context], Client]
                 ) -> None:
        """Run the apps on Flower's simulation runtime: one SuperNode per client, `runtime.workers` Ray actors."""
        backend = {"client_resources": {"num_cpus": 1, "num_gpus": 0.0},
                   "init_args": {"address": "local", "num_cpus": self.exp.runtime.workers, "logging_level": "ERROR",
                                 "include_dashboard": False}}
        run_simulation(ServerApp(server_fn=server_fn), ClientApp(client_fn=client_fn),
                       num_supernodes=self.exp.fl.clients, backend_config=backend)

    def run(self) -> dict[str, Any]:
        exp = self.exp
        self.adversary.setup(self.ctx)
        secure = SECURE_AGGREGATIONS.get(exp.secure.aggregation).open(exp, self.ctx.partitions)
        try:
            self.strategy = self.build_strategy(secure)
            strategy = self.strategy

            def server_fn(context: Context) -> ServerAppComponents:
                del context
                return ServerAppComponents(strategy=strategy, config=ServerConfig(num_rounds=exp.fl.rounds))

            client_fn = partial(bridge_client_fn, exp.model_dump_json(), str(self.run_dir.figures), list(exp.plugins))
            self.clock = time.perf_counter()
            self.simulate(server_fn, client_fn)
        finally:
            if secure is not None:
                secure.close()
        if not self.last_eval:
            raise RuntimeError("Flower's simulation ended before its final round was evaluated (see its log above)")
        load_flat_params(self.eval_model, self.global_weights)
        final: dict[str, Any] = {"accuracy": self.last_eval["accuracy"], "loss": self.last_eval["loss"]}
        reports = self.strategy.attack_reports
        if reports:
            final.update(reports[min(reports, key=int)])
        else:  # no attack, or its clients never reported: the server-side adversary's view
            final.update(self.adversary.finish(self.ctx, self.eval_model))
        torch.save(self.global_weights, self.run_dir.path / "final_weights.pt")
        return final


@FEDERATED_RUNNERS.register("flower")
class FlowerRunner(FederatedRunner):
    """Runs the experiment on Flower 1.41's simulation (`flwr.simulation.run_simulation`, Ray backend)."""

    @classmethod
    def check(cls, exp: FederatedExperiment) -> None:
        rt = exp.runtime
        if rt.executor != "inline":
            raise FieldError(("runtime", "executor"), rt.executor,
                             "fl.engine = 'flower' runs clients in Flower's simulation (runtime.workers Ray actors, "
                             "one CPU each); allowed: 'inline' (the default), or fl.engine = 'siegecraft'")
        if rt.address:
            raise FieldError(("runtime", "address"), rt.address,
                             "fl.engine = 'flower' starts its own local Ray instance; allowed: unset, or "
                             "fl.engine = 'siegecraft'")
        if exp.fl.checkpoint_every:
            raise FieldError(("fl", "checkpoint_every"), exp.fl.checkpoint_every,
                             "Flower's simulation keeps no siegecraft checkpoints; allowed: 0 on fl.engine = "
                             "'flower', or fl.engine = 'siegecraft'")

    @classmethod
    def run(cls, exp: FederatedExperiment, run: RunDir, *, progress: Progress | None = None,
            resume: bool = False) -> dict[str, Any]:
        if resume:
            raise ConfigError("--resume: fl.engine = 'flower' cannot resume (Flower's simulation has no siegecraft "
                              "checkpoints); allowed: a new run, or fl.engine = 'siegecraft'")
        logging.getLogger("flwr").setLevel(logging.WARNING)
        return FlowerFederation(exp, run, progress).run()
