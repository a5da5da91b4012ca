"""Entry points: `train_serverless` (datasets in, result out) and `run_serverless` (the CLI's topology runner).

`run_serverless(exp, run, progress=..., resume=...)` validates the `[serverless]` section, provisions the
store (the embedded memory store, a private Redis, or `redis_url`) and the platform, trains with the fixed
configuration or the Bayesian planner, logs one metrics line per plan, draws the figures and returns the
summary. A private Redis outlives a killed driver (SIGKILL), and `resume=True` continues the job from it
and stops it at the end; every other exit (normal end, exception, KeyboardInterrupt, SIGTERM turned into
SystemExit by the driver) stops it on the way out. Every billed invocation is appended to `billing.jsonl`
in the run directory as it is billed (`CostLedger`), so a resumed run's totals include what a killed driver
spent.

Before anything is provisioned or invoked (the topology's `preflight`, and `train_serverless` itself), the
data-dependent checks run: batch sizes against the training set (`check_data`) and the target against the
planner's PRIOR model (`check_target`, with `on_infeasible = "refuse"`); both raise `FieldError` naming the key.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np
import torch

from siegecraft.core.config import FieldError
from siegecraft.core.data.image_dataset import ImageDataset
from siegecraft.core.models import build_model, flat_params
from siegecraft.core.results import RunDir
from siegecraft.core.topology import TOPOLOGIES, Progress, Topology
from siegecraft.core.training import evaluate as evaluate_model
from siegecraft.core.workload import build_workload
from siegecraft.engines.serverless import loop
from siegecraft.engines.serverless.billing import CostLedger
from siegecraft.engines.serverless.config import ServerlessConfig
from siegecraft.engines.serverless.experiment import ServerlessExperiment
from siegecraft.engines.serverless.job import TrainingJob
from siegecraft.engines.serverless.memory_store import MemoryStoreServer
from siegecraft.engines.serverless.perf_model import PerformanceModel
from siegecraft.engines.serverless.planner import BayesianPlanner, Feasibility, FixedPlanner
from siegecraft.engines.serverless.platform import FunctionPlatform, make_platform
from siegecraft.engines.serverless.platform_profile import PlatformProfile, ProfileError
from siegecraft.engines.serverless.redis_server import RedisHandle, _is_our_redis, start_redis, stop_redis
from siegecraft.engines.serverless.report import serverless_figures
from siegecraft.engines.serverless.specs import Config, JobSpec
from siegecraft.engines.serverless.store import Store, StoreSpec, connect

log = logging.getLogger(__name__)
STORE_FILE = "serverless_store.json"
LEDGER_FILE = "billing.jsonl"


@dataclass
class StoreLease:
    """A store for one job and how to release it (stop the servers this run started)."""

    spec: StoreSpec
    memory_server: MemoryStoreServer | None = None
    redis: RedisHandle | None = None

    def release(self) -> None:
        """Stop what this lease started; the private Redis is stopped even if the memory server fails to."""
        try:
            if self.memory_server is not None:
                self.memory_server.stop()
        finally:
            if self.redis is not None:
                stop_redis(self.redis)


def provision_store(cfg: ServerlessConfig, record: Path | None = None) -> StoreLease:
    """The configured store; a private Redis is recorded in `record` so a resumed run finds it again."""
    if cfg.store == "memory":
        server = MemoryStoreServer()
        return StoreLease(server.spec, memory_server=server)
    if cfg.redis_url:
        url = urlparse(cfg.redis_url)
        db = int(url.path.strip("/") or 0)
        return StoreLease(StoreSpec("redis", url.hostname or "127.0.0.1", url.port or 6379, db))
    if record is not None and record.exists():
        handle = RedisHandle(**json.loads(record.read_text()))
        if _is_our_redis(handle.pid, handle.port):
            return StoreLease(handle.spec, redis=handle)
    handle = start_redis()
    if record is not None:
        try:
            record.write_text(json.dumps(asdict(handle)))
        except BaseException:
            stop_redis(handle)
            raise
    return StoreLease(handle.spec, redis=handle)


def build_platform(cfg: ServerlessConfig) -> FunctionPlatform:
    """The configured function platform with the config's prices and limits."""
    if cfg.platform == "emulated":
        e = cfg.emulated
        return make_platform(
            "emulated", prices=cfg.prices, concurrency=e.concurrency, keep_alive_s=e.keep_alive_s,
            start_method=e.start_method, network_mb_s=e.network_mb_s, throttle_cpu=e.throttle_cpu, preload=e.preload,
            fault_rate=cfg.faults.rate, fault_seed=cfg.faults.seed,
        )  # fmt: skip
    concurrency = max(cfg.planner.workers) if cfg.adaptive else cfg.workers
    return make_platform("lithops", config=cfg.lithops, prices=cfg.prices, concurrency=concurrency + 1)


def build_planner(
    cfg: ServerlessConfig, model: PerformanceModel, seed: int
) -> FixedPlanner | BayesianPlanner:
    if not cfg.adaptive:
        return FixedPlanner(Config(cfg.workers, cfg.memory_mb, cfg.batch_size), model)
    return bayesian_planner(cfg, model, seed)


def bayesian_planner(cfg: ServerlessConfig, model: PerformanceModel, seed: int) -> BayesianPlanner:
    """The deadline or budget planner of an adaptive config."""
    s = cfg.planner
    return BayesianPlanner(
        s.space(), model, deadline_s=cfg.deadline_s, budget_usd=cfg.budget_usd, trials=s.trials, safety=s.safety,
        seed=seed, probes=cfg.platform_profile is None,  # a calibrated prior needs no per-job probes
    )  # fmt: skip


def check_data(cfg: ServerlessConfig, samples: int) -> None:
    """Refuse batch sizes the training set cannot fill (an epoch would have no iteration and be skipped)."""
    if cfg.adaptive:
        bad = [b for b in cfg.planner.batch_size if b > samples]
        if bad:
            raise FieldError(("serverless", "planner", "batch_size"), cfg.planner.batch_size,
                             f"{bad} larger than the {samples} training samples; every batch size must be at "
                             f"most {samples}")  # fmt: skip
        smallest = min(cfg.planner.workers) * min(cfg.planner.batch_size)
        if smallest > samples:
            raise FieldError(("serverless", "planner", "workers"), cfg.planner.workers,
                             f"even the smallest global batch, {min(cfg.planner.workers)} workers x batch "
                             f"{min(cfg.planner.batch_size)} = {smallest}, exceeds the {samples} training samples")  # fmt: skip
        return
    if cfg.batch_size > samples:
        raise FieldError(("train", "batch_size"), cfg.batch_size,
                         f"larger than the {samples} training samples; must be at most {samples}")
    if cfg.workers * cfg.batch_size > samples:
        raise FieldError(("serverless", "workers"), cfg.workers,
                         f"{cfg.workers} workers x train.batch_size = {cfg.batch_size} is a global batch of "
                         f"{cfg.workers * cfg.batch_size}, more than the {samples} training samples; at most "
                         f"{samples // cfg.batch_size} workers")  # fmt: skip


def check_target(cfg: ServerlessConfig, *, num_params: int, samples: int) -> Feasibility | None:
    """The prior model's verdict on the deadline or budget (None in fixed mode); with `on_infeasible =
    "refuse"` an unreachable target raises `FieldError` naming the key, before anything is spent."""
    if not cfg.adaptive:
        return None
    model = PerformanceModel(
        num_params=num_params, samples_per_epoch=samples, prices=cfg.prices, sync=cfg.sync,
        parallel_efficiency=cfg.planner.parallel_efficiency,
    )  # fmt: skip
    profile, calibrated = platform_prior(cfg, num_params), {}
    if profile is not None:  # the calibrated prior and its measured tolerance instead of the generic 10x
        model, optimistic = profile.models(model)
        calibrated = {"optimistic": optimistic, **profile.labels(str(cfg.platform_profile))}
    verdict = bayesian_planner(cfg, model, 0).feasibility(
        epochs=cfg.epochs, profile_iterations=cfg.planner.profile_iterations, **calibrated
    )
    if not verdict.reachable and cfg.on_infeasible == "refuse":
        raise FieldError(("serverless", verdict.key), verdict.target, verdict.explain())
    return verdict


def platform_prior(cfg: ServerlessConfig, num_params: int) -> PlatformProfile | None:
    """`serverless.platform_profile`'s profile, checked against the job's model (its compute times are that
    model's); None without one. FieldError naming the key when it cannot be used."""
    try:
        profile = cfg.platform_prior()
    except ProfileError as err:
        raise FieldError(("serverless", "platform_profile"), cfg.platform_profile, str(err)) from None
    if profile is not None and profile.num_params != num_params:
        raise FieldError(("serverless", "platform_profile"), cfg.platform_profile,
                         f"calibrated for a model with {profile.num_params} parameters ({profile.model or 'unnamed'}), "
                         f"this job's has {num_params}; calibrate this model or remove the key")  # fmt: skip
    return profile


@dataclass
class ServerlessResult:
    """Everything a finished (or resumed and finished) job produced."""

    summary: dict[str, Any]
    records: list[dict[str, Any]]
    weights: np.ndarray
    platform_stats: dict[str, Any] = field(default_factory=dict)


def train_serverless(
    cfg: ServerlessConfig,
    train: Any,
    *,
    model: str = "cnn",
    model_options: dict[str, Any] | None = None,
    seed: int = 0,
    test: Any = None,
    job_id: str | None = None,
    store: Store | None = None,
    platform: FunctionPlatform | None = None,
    on_record: Callable[[dict[str, Any]], None] | None = None,
    ledger_path: str | Path | None = None,
) -> ServerlessResult:
    """Train on functions. `train`/`test` need `.x` [N,C,H,W] in [0,1], `.y` and `.num_classes`.

    Pass `store` and `platform` to reuse them (tests, resuming drivers); otherwise they are provisioned
    from `cfg` and released at the end, whatever the exit. A job id already in the store is resumed. Bad
    batch sizes and, with `on_infeasible = "refuse"`, an unreachable target raise `FieldError` before
    anything is invoked. With `ledger_path`, every billed invocation is appended there at once and the
    totals (cost, invocations) are that file's lines for this job, earlier drivers' included.
    """
    options = dict(model_options or {})
    n, c, h, _ = train.x.shape
    torch.manual_seed(seed)
    net = build_model(model, in_channels=c, num_classes=train.num_classes, image_size=h, **options)
    init = flat_params(net).numpy()
    check_data(cfg, n)
    check_target(cfg, num_params=init.size, samples=n)
    profile = platform_prior(cfg, init.size)
    lease = provision_store(cfg) if store is None else None
    own_store = store is None
    own_platform = platform is None
    try:
        if lease is not None:
            store = connect(lease.spec)
        if platform is None:
            platform = build_platform(cfg)
        spec = JobSpec(
            job_id or cfg.job_id or f"job-{uuid.uuid4().hex[:8]}", store.spec, model, c, train.num_classes, h, n,
            init.size, cfg.lr, cfg.momentum, cfg.weight_decay, seed, options,
        )  # fmt: skip
        job = TrainingJob(
            spec, store, platform, timeout_s=cfg.timeout_s, sync_timeout_s=cfg.sync_timeout_s,
            checkpoint_margin_s=cfg.checkpoint_margin_s, iterations_per_invocation=cfg.iterations_per_invocation,
            sync=cfg.sync, group_size=cfg.hierarchy_group_size, ledger=CostLedger(ledger_path, job=spec.job),
        )  # fmt: skip
        job.initialize(train.x, train.y, init)
        perf = PerformanceModel(
            num_params=init.size, samples_per_epoch=n, prices=cfg.prices, sync=cfg.sync,
            parallel_efficiency=cfg.planner.parallel_efficiency,
        )  # fmt: skip
        perf = profile.models(perf)[0] if profile is not None else perf
        planner = build_planner(cfg, perf, seed)
        state = job.state.runner or loop.new_state()

        def save(st: dict[str, Any]) -> None:
            job.state.runner = st
            job.save_state()

        final = loop.drive(
            job, planner, epochs=cfg.epochs, state=state, profile_iterations=cfg.planner.profile_iterations,
            save=save, evaluate=_evaluator(job, test), on_record=on_record,
            limits={"deadline_s": cfg.deadline_s, "budget_usd": cfg.budget_usd}, on_miss=cfg.miss_policy,
            billed=(lambda: job.ledger.cost_usd) if ledger_path is not None else None,
            resumed_until=job.ledger.prior_last_billed_at,
        )  # fmt: skip
        weights = job.weights()
        summary = summarize_run(cfg, final, job)
        stats = asdict(platform.stats) if hasattr(platform, "stats") else {}
        job.cleanup()
        return ServerlessResult(summary, final["records"], weights, stats)
    finally:
        try:
            if own_platform and platform is not None:
                platform.close()
        finally:
            try:
                if own_store and store is not None:
                    store.close()
            finally:
                if lease is not None:
                    lease.release()


def _evaluator(job: TrainingJob, test: Any) -> Callable[[], dict[str, float]] | None:
    if test is None:
        return None

    def evaluate() -> dict[str, float]:
        result = evaluate_model(job.model(), test)
        return {"accuracy": result.accuracy, "test_loss": result.loss}

    return evaluate


def summarize_run(cfg: ServerlessConfig, state: dict[str, Any], job: TrainingJob) -> dict[str, Any]:
    """Totals, target check and the last accuracy, for summary.json."""
    records = state["records"]
    profile = [r for r in records if r["phase"] == "profile"]
    last = next((r for r in reversed(records) if r["phase"] == "train"), {})
    totals = job.ledger.totals()
    out: dict[str, Any] = {
        "mode": "deadline" if cfg.deadline_s else "budget" if cfg.budget_usd else "fixed",
        "elapsed_s": state["elapsed_s"],
        "cost_usd": totals.cost_usd if job.ledger.path is not None else state["spent_usd"],
        "billed_s": totals.billed_ms / 1000.0,
        "gb_seconds": totals.gb_seconds,
        "profiling_s": sum(r["time_s"] for r in profile),
        "profiling_cost_usd": sum(r["cost_usd"] for r in profile),
        "epochs": sum(r["phase"] == "train" for r in records),
        "invocations": totals.invocations,
        "cold_starts": totals.cold_starts,
        "failed_invocations": totals.failures,
        "accuracy": last.get("accuracy"),
        "test_loss": last.get("test_loss"),
        "train_loss": last.get("train_loss"),
        "platform": cfg.platform,
        "store": cfg.store,
        "sync": cfg.sync,
    }
    if cfg.deadline_s:
        out.update(deadline_s=cfg.deadline_s, deadline_met=state["elapsed_s"] <= cfg.deadline_s)
    if cfg.budget_usd:
        out.update(budget_usd=cfg.budget_usd, budget_kept=state["spent_usd"] <= cfg.budget_usd)
    if cfg.adaptive:
        out.update(target_outcome(cfg, state))
    return out


def target_outcome(cfg: ServerlessConfig, state: dict[str, Any]) -> dict[str, Any]:
    """Whether the deadline or budget was met and, if not, why: `target_met` (every epoch trained within the
    target), `target_missed` (the reason, None when met), `stopped_early` (on_miss = "abort" stopped it)."""
    stopped = bool(state.get("aborted"))
    predicted = state.get("target_missed")
    if cfg.deadline_s is not None:
        within = state["elapsed_s"] <= cfg.deadline_s
        actual = f"finished at {state['elapsed_s']:.1f} s > deadline_s = {cfg.deadline_s:g}"
    else:
        within = state["spent_usd"] <= float(cfg.budget_usd)  # type: ignore[arg-type]
        actual = f"spent ${state['spent_usd']:.2g} > budget_usd = {cfg.budget_usd:g}"
    met = within and not stopped
    reason = None
    if stopped:
        reason = (f"stopped before epoch {predicted['epoch'] + 1} of {cfg.epochs} (on_miss = 'abort'): "
                  f"{predicted['reason']}")  # fmt: skip
    elif not met:
        reason = actual + (f" (predicted at epoch {predicted['epoch'] + 1}: {predicted['reason']})" if predicted else "")
    return {"target_met": met, "target_missed": reason, "stopped_early": stopped, "on_miss": cfg.miss_policy}


def run_serverless(
    exp: ServerlessExperiment, run: RunDir, *, progress: Progress | None = None, resume: bool = False
) -> dict[str, Any]:
    """Run a validated serverless experiment into `run` and return the summary's `final` metrics."""
    cfg = exp.settings()
    work = build_workload(exp)
    total = cfg.epochs

    def on_record(record: dict[str, Any]) -> None:
        run.log_metrics(record)
        if progress is not None and record["phase"] == "train":
            progress(
                step=record["epoch"] + 1, total=total, accuracy=record.get("accuracy"), cost_usd=record["spent_usd"],
                elapsed_s=record["elapsed_s"], config=f"{record['workers']}x{record['memory_mb']}MB/b{record['batch_size']}",
            )  # fmt: skip

    lease = provision_store(cfg, run.path / STORE_FILE if cfg.store == "redis" else None)
    try:
        with connect(lease.spec) as store:
            if resume:
                run.truncate_metrics(lambda r: False)
            result = train_serverless(
                cfg, work.train, model=exp.model.name, model_options=exp.model.options, seed=exp.seed,
                test=work.test, job_id=cfg.job_id or f"{exp.name}-{run.path.name}", store=store,
                on_record=on_record, ledger_path=run.path / LEDGER_FILE,
            )  # fmt: skip
    finally:  # normal end, exception, KeyboardInterrupt, SystemExit (SIGTERM): stop the private Redis
        lease.release()
        (run.path / STORE_FILE).unlink(missing_ok=True)
    if resume:  # the metrics file is rewritten from the job's own records, which survived in the store
        run.truncate_metrics(lambda r: False)
        for record in result.records:
            run.log_metrics(record)
    figures = serverless_figures(
        result.records, run.figures, deadline_s=cfg.deadline_s, budget_usd=cfg.budget_usd
    )
    return {**result.summary, "figures": [str(p) for p in figures], "platform_stats": result.platform_stats}


@TOPOLOGIES.register("serverless")
class ServerlessTopology(Topology):
    """SMLT: data-parallel training on functions, planned to meet a deadline or a budget."""

    schema = ServerlessExperiment

    @classmethod
    def preflight(cls, exp: ServerlessExperiment, train_set: ImageDataset) -> None:
        """Batch sizes against the training set and the deadline or budget against the prior model."""
        cfg, m = exp.settings(), exp.model
        c, h, _ = train_set.shape
        cfg_samples = len(train_set)
        check_data(cfg, cfg_samples)
        if cfg.adaptive:
            net = build_model(m.name, in_channels=m.channels or c, num_classes=train_set.num_classes,
                              image_size=m.image_size or h, **m.options)  # fmt: skip
            check_target(cfg, num_params=int(flat_params(net).numel()), samples=cfg_samples)

    @classmethod
    def run(cls, exp: ServerlessExperiment, run: RunDir, *, progress: Progress | None = None,
            resume: bool = False) -> dict[str, Any]:
        return run_serverless(exp, run, progress=progress, resume=resume)
