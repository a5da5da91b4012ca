"""The federated round loop: sample, train (benign or adversarial), filter, aggregate, evaluate, save.

Plain aggregation combines individual updates through the strategy's aggregator; zero-sum
aggregation (Citadel) returns only the masked-then-unmasked mean, to which the same update rule
is applied. Both paths log one metrics record per round to the run directory.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch

from siegecraft.core.config import FieldError
from siegecraft.core.data.image_dataset import ImageDataset
from siegecraft.core.data.partition import partition
from siegecraft.core.models import flat_params, load_flat_params
from siegecraft.core.results.rundir import RunDir, Stopwatch
from siegecraft.core.topology import TOPOLOGIES, Progress, Topology
from siegecraft.core.training import evaluate
from siegecraft.core.workload import Workload, build_workload
from siegecraft.engines.federated.client import ClientTrainer, ClientUpdate
from siegecraft.engines.federated.config import FederatedExperiment
from siegecraft.engines.federated.defense_setup import configured_aggregator, defend, server_root_split
from siegecraft.engines.federated.executors.base import Executor, build_executor
from siegecraft.engines.federated.extensions import ATTACKS, Adversary, FederationContext
from siegecraft.engines.federated.runners import FEDERATED_RUNNERS, FederatedRunner
from siegecraft.engines.federated.sampling import sample_clients
from siegecraft.engines.federated.secure import SECURE_AGGREGATIONS
from siegecraft.engines.federated.strategy import STRATEGIES, Strategy
from siegecraft.engines.federated.wrappers import DefenseContext

log = logging.getLogger("siegecraft.engines.federated")


def build_strategy(exp: FederatedExperiment, ctx: DefenseContext | None = None) -> Strategy:
    """The configured strategy with its aggregator, wrapped by the `[defense] names` defenses."""
    kwargs: dict[str, Any] = {"aggregator": configured_aggregator(exp.defense), "server_lr": exp.fl.server_lr}
    if exp.fl.strategy == "fedavgm":
        kwargs["momentum"] = exp.fl.server_momentum
    return defend(STRATEGIES.get(exp.fl.strategy)(**kwargs), exp.defense, ctx)


def drop_non_finite(updates: list[ClientUpdate], rnd: int) -> tuple[list[ClientUpdate], list[int]]:
    """Remove updates containing NaN or inf, logging a warning naming the client and round."""
    kept, dropped = [], []
    for u in updates:
        if torch.isfinite(u.update).all():
            kept.append(u)
        else:
            log.warning("round %d: dropped the update of client %d (it contains NaN or inf)", rnd, u.client_id)
            dropped.append(u.client_id)
    return kept, dropped


class Federation:
    """One federated experiment; `run()` drives all rounds and returns the summary's `final` dict."""

    def __init__(self, exp: FederatedExperiment, run: RunDir, progress: Progress | None = None) -> None:
        self.exp, self.run_dir = exp, run
        self.progress = progress or (lambda **_: None)
        self.executor = build_executor(exp.runtime.executor, **self._executor_options())
        try:
            self._build()
        except BaseException:  # a prepared executor (a started Ray instance) must not outlive a failed set-up
            self.executor.close()
            raise

    def _build(self) -> None:
        """Load the workload (overlapping the executor's warm-up) and build everything the rounds use."""
        exp = self.exp
        self.work = self._load_workload()
        self.root_data: ImageDataset | None = None
        if exp.defense.names:  # a server root dataset (FLTrust) is withheld from the clients
            self.work.train, self.root_data = server_root_split(self.work.train, exp)
        d = exp.data
        self.partitions = partition(
            self.work.train.y, exp.fl.clients, d.partition, seed=exp.seed, **d.partition_params()
        )
        self.trainer = ClientTrainer(self.work.model_factory, self.work.train, self.partitions, exp.train, exp.seed)
        self.eval_model = self.work.model_factory()
        self.global_weights = flat_params(self.eval_model)
        self.strategy = build_strategy(exp, self._defense_context())
        self.adversary: Adversary = exp.attack.build()
        self.ctx = FederationContext(
            exp, self.work.train, self.work.test, self.partitions, self.work.model_factory, self.trainer,
            self.run_dir.figures,
        )
        self.start_round = 1
        self.secure = None

    def _load_workload(self) -> Workload:
        """The workload; an executor with slow warm-up (Ray) prepares meanwhile, the data loading on a thread."""
        if not self.executor.prepares:
            return build_workload(self.exp)
        with ThreadPoolExecutor(1, thread_name_prefix="siegecraft-load") as pool:
            loading = pool.submit(build_workload, self.exp)
            try:
                self.executor.prepare()  # on this thread: Ray's driver calls must stay on one thread
            finally:
                work = loading.result()
        return work

    def _defense_context(self) -> DefenseContext:
        if self.root_data is None:
            return DefenseContext()
        root = self.root_data
        return DefenseContext(root, lambda rnd, w: self.trainer.train(-1, rnd, w, data=root).update)

    # -- persistence ---------------------------------------------------------------------------
    def checkpoint(self, rnd: int) -> None:
        self.run_dir.save_checkpoint(
            rnd, {"round": rnd, "weights": self.global_weights, "strategy": self.strategy.state_dict()}
        )

    def resume(self) -> int:
        """Load the latest checkpoint; metrics after it are dropped so the log stays consistent."""
        path = self.run_dir.latest_checkpoint()
        if path is None:
            raise FileNotFoundError(f"no checkpoint in {self.run_dir.checkpoints} to resume from")
        state = torch.load(path, weights_only=False)
        self.global_weights = state["weights"]
        self.strategy.load_state_dict(state["strategy"])
        done = int(state["round"])
        self.run_dir.truncate_metrics(lambda r: r.get("round", 0) <= done)
        self.start_round = done + 1
        return done

    # -- one round -----------------------------------------------------------------------------
    def client_updates(self, rnd: int, clients: list[int], executor: Any) -> list[ClientUpdate]:
        benign_ids = [c for c in clients if c not in self.adversary.clients]
        by_id = {u.client_id: u for u in executor.run(rnd, self.global_weights, benign_ids)}
        for c in clients:
            if c in self.adversary.clients:
                benign = (lambda c=c: self.trainer.train(c, rnd, self.global_weights))
                by_id[c] = self.adversary.client_update(self.ctx, c, rnd, self.global_weights, benign)
        return [by_id[c] for c in clients]

    def aggregate_plain(self, rnd: int, updates: list[ClientUpdate]) -> tuple[torch.Tensor | None, dict[str, Any]]:
        kept, dropped = drop_non_finite(updates, rnd)
        info: dict[str, Any] = {"dropped": dropped}
        if not kept:
            log.warning("round %d: every update was dropped; the global model is unchanged", rnd)
            return None, info
        stack = torch.stack([u.update for u in kept])
        weights = torch.tensor([float(u.num_samples) for u in kept])
        info["train_loss"] = float(sum(u.metrics.get("loss", 0.0) * u.num_samples for u in kept) / weights.sum())
        self.strategy.begin_round(rnd, self.global_weights)
        update = self.strategy.combine(stack, weights)
        info.update(self.strategy.round_metrics())
        return update, info

    def evaluate_global(self) -> dict[str, Any]:
        load_flat_params(self.eval_model, self.global_weights)
        return evaluate(self.eval_model, self.work.test).as_dict()

    def run(self) -> dict[str, Any]:
        exp = self.exp
        executor: Executor = self.executor
        last_eval: dict[str, Any] = {}
        try:
            executor.start(self.trainer)
            self.adversary.setup(self.ctx)
            self.secure = SECURE_AGGREGATIONS.get(exp.secure.aggregation).open(exp, self.partitions)
            for rnd in range(self.start_round, exp.fl.rounds + 1):
                clock = Stopwatch()
                clients = sample_clients(rnd, exp.fl.clients, exp.fl.per_round(), method=exp.fl.sampling, seed=exp.seed)
                if self.secure is not None:
                    update, info = self.secure.round(rnd, self.global_weights, clients)
                else:
                    update, info = self.aggregate_plain(rnd, self.client_updates(rnd, clients, executor))
                if update is not None:
                    self.global_weights = self.strategy.apply(self.global_weights, update)
                record: dict[str, Any] = {"round": rnd, "clients": clients, **info}
                record.update(self.adversary.on_round_end(self.ctx, rnd, self.global_weights))
                if rnd % exp.fl.eval_every == 0 or rnd == exp.fl.rounds:
                    last_eval = self.evaluate_global()
                    record.update(last_eval)
                record["round_s"] = clock()
                self.run_dir.log_metrics(record)
                if exp.fl.checkpoint_every and rnd % exp.fl.checkpoint_every == 0:
                    self.checkpoint(rnd)
                self.progress(step=rnd, total=exp.fl.rounds, accuracy=last_eval.get("accuracy"))
        finally:
            executor.close()
            if self.secure is not None:
                self.secure.close()
        if not last_eval:
            last_eval = self.evaluate_global()
        load_flat_params(self.eval_model, self.global_weights)
        final: dict[str, Any] = {"accuracy": last_eval["accuracy"], "loss": last_eval["loss"]}
        final.update(self.adversary.finish(self.ctx, self.eval_model))
        torch.save(self.global_weights, self.run_dir.path / "final_weights.pt")
        return final

    def _executor_options(self) -> dict[str, Any]:
        rt = self.exp.runtime
        if rt.executor == "inline":
            return {}
        opts: dict[str, Any] = {"workers": rt.workers}
        if rt.executor == "ray" and rt.address:
            opts["address"] = rt.address
        return opts


@FEDERATED_RUNNERS.register("siegecraft")
class SiegecraftRunner(FederatedRunner):
    """siegecraft's own round loop (`Federation`): every executor, secure aggregation, checkpoints, resume."""

    @classmethod
    def run(cls, exp: FederatedExperiment, run: RunDir, *, progress: Progress | None = None,
            resume: bool = False) -> dict[str, Any]:
        fed = Federation(exp, run, progress)
        if resume:
            try:
                fed.resume()
            except BaseException:
                fed.executor.close()
                raise
        return fed.run()


def run_federated(
    exp: FederatedExperiment, run: RunDir, *, progress: Progress | None = None, resume: bool = False
) -> dict[str, Any]:
    """Topology entry point: run every round on the configured `fl.engine`; the summary's `final` metrics."""
    return FEDERATED_RUNNERS.get(exp.fl.engine).run(exp, run, progress=progress, resume=resume)


@TOPOLOGIES.register("federated")
class FederatedTopology(Topology):
    """Federated learning: sampled clients train locally, a server strategy aggregates, rounds repeat."""

    schema = FederatedExperiment
    resume_may_differ = ("fl.rounds",)  # a resumed run may extend the rounds from its last checkpoint

    @classmethod
    def preflight(cls, exp: FederatedExperiment, train_set: ImageDataset) -> None:
        train, d = train_set, exp.data
        clients_data = server_root_split(train, exp)[0] if exp.defense.names else train  # as the run splits it
        params = d.partition_params()
        try:
            partition(clients_data.y, exp.fl.clients, d.partition, seed=exp.seed, **params)
        except ValueError as err:
            key = next((k for k in ("min_partition_size", "classes_per_client", "alpha") if k in params
                        and k in str(err)), "partition")
            raise FieldError(("data", key), getattr(d, key),
                             f"cannot split {len(clients_data)} training samples over fl.clients = "
                             f"{exp.fl.clients} with it ({err})") from None
        attack = ATTACKS.get(exp.attack.name)
        attack.check_data(attack.options_model.model_validate(exp.attack.options), exp, train)

    @classmethod
    def run(cls, exp: FederatedExperiment, run: RunDir, *, progress: Progress | None = None,
            resume: bool = False) -> dict[str, Any]:
        return run_federated(exp, run, progress=progress, resume=resume)

    @classmethod
    def success_metric(cls, exp: FederatedExperiment) -> str | None:
        return ATTACKS.get(exp.attack.name).success_metric
