"""Entry points for `topology = "hogwild"`: `run_hogwild` (an Experiment into a run directory) and
`train_hogwild` (the same from plain objects, for benchmarks and tests).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from torch import nn

from siegecraft.core.data.image_dataset import ImageDataset
from siegecraft.core.results import RunDir
from siegecraft.core.topology import TOPOLOGIES, Progress, Topology
from siegecraft.core.workload import build_workload
from siegecraft.engines.hogwild.config import HogwildConfig
from siegecraft.engines.hogwild.experiment import HogwildExperiment
from siegecraft.engines.hogwild.extensions import HOGWILD_ATTACKS, ThreadAdversary, build_async_defenses
from siegecraft.engines.hogwild.figures import timeline_figure
from siegecraft.engines.hogwild.policy import SchedulePolicy
from siegecraft.engines.hogwild.trainer import HogwildResult, HogwildTrainer


def summarize(result: HogwildResult, policy: SchedulePolicy | None) -> dict[str, Any]:
    """Scalars first (they make the report's table), then per-worker counters and the attack's record."""
    final = result.final
    out: dict[str, Any] = {
        "accuracy": final.get("accuracy"),
        "target_rate": final.get("target_rate"),
        "target_margin": final.get("target_margin"),
        "loss": final.get("loss"),
        "global_steps": sum(result.applied),
        "dropped_updates": sum(sum(v) for v in result.dropped.values()),
        "train_seconds": round(result.train_seconds, 3),
        "samples_per_s": round(result.samples_per_s, 1),
    }
    if policy is not None and hasattr(policy, "summary"):
        attack = policy.summary()
        if "status" in attack:
            out = {"attack_status": attack["status"], **out}
        before = attack.get("before_release")
        if before is not None and final:
            out["accuracy_before_release"] = before["accuracy"]
            out["target_rate_before_release"] = before["target_rate"]
            out["degradation_points"] = round(100 * (before["accuracy"] - final["accuracy"]), 2)
        out["attack"] = attack
    out.update(
        prediction_rate=final.get("prediction_rate"),
        steps=result.steps, applied=result.applied, dropped=result.dropped, max_staleness=result.max_staleness,
        exitcodes=result.exitcodes, events=result.events,
    )
    return out


def train_hogwild(
    cfg: HogwildConfig,
    attack: ThreadAdversary | None = None,
    defenses: Sequence[str] = (),
    out_dir: str | Path | None = None,
    progress: Callable[[dict[str, Any]], None] | None = None,
    *,
    train: ImageDataset,
    val: ImageDataset,
    model: nn.Module,
    defense_options: Mapping[str, Any] | None = None,
    seed: int = 0,
    title: str = "hogwild",
    figures_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Train `model` with Hogwild under an optional scheduling adversary and async defenses.

    Returns the summary (see `summarize`) plus `records` (the evaluation timeline) and `figures`
    (PNG paths, written to `figures_dir`, default `out_dir/figures`).
    """
    if attack is not None:
        attack.check_data(cfg, train.num_classes)
    built = build_async_defenses(defenses, defense_options)
    policy = attack.policy(cfg) if attack is not None else None
    planted = attack.planted(cfg, len(train)) if attack is not None else {}
    target = attack.target_label() if attack is not None else 0
    trainer = HogwildTrainer(
        model, train, val, cfg, seed=seed, policy=policy, defenses=built, planted=planted,
        target_label=target, out_dir=out_dir, progress=progress,
    )
    result = trainer.run()
    summary = summarize(result, policy)
    summary["records"] = result.records
    fig_root = Path(figures_dir) if figures_dir is not None else Path(out_dir) / "figures" if out_dir else None
    summary["figures"] = []
    if fig_root is not None:
        path = timeline_figure(result.records, result.events, fig_root / "hogwild_timeline.png",
                               target=target, title=title)
        summary["figures"].append(str(path))
    return summary


def run_hogwild(
    exp: HogwildExperiment, run: RunDir, *, progress: Progress | None = None, resume: bool = False
) -> dict[str, Any]:
    """Run a validated hogwild experiment into `run` and return the summary's `final` metrics."""
    if resume:
        raise ValueError("hogwild runs cannot be resumed: the workers' optimiser states are not checkpointed")
    cfg = exp.settings()
    attack = exp.attack.build() if exp.attack.name != "none" else None
    work = build_workload(exp)
    total = cfg.workers * cfg.epochs * -(-len(work.train) // cfg.batch_size)

    def report(record: dict[str, Any]) -> None:
        if progress is not None:
            progress(step=record["global_step"], total=total, accuracy=record["accuracy"],
                     target_rate=record["target_rate"])

    summary = train_hogwild(
        cfg, attack, exp.defense.names, run.path, report, train=work.train, val=work.test,
        model=work.model_factory(), defense_options=exp.defense.options, seed=exp.seed,
        title=f"{exp.name}: hogwild", figures_dir=run.figures,
    )
    for record in summary.pop("records"):
        run.log_metrics({"step": record["global_step"], **record})
    for event in summary["events"]:
        run.log_metrics({"step": event["global_step"], **event})
    return summary


@TOPOLOGIES.register("hogwild")
class HogwildTopology(Topology):
    """Asynchronous shared-memory training (Hogwild), attacked through the scheduler."""

    schema = HogwildExperiment

    @classmethod
    def preflight(cls, exp: HogwildExperiment, train_set: ImageDataset) -> None:
        exp.attack.build().check_data(exp.settings(), train_set.num_classes)

    @classmethod
    def run(cls, exp: HogwildExperiment, run: RunDir, *, progress: Progress | None = None,
            resume: bool = False) -> dict[str, Any]:
        return run_hogwild(exp, run, progress=progress, resume=resume)

    @classmethod
    def success_metric(cls, exp: HogwildExperiment) -> str | None:
        return HOGWILD_ATTACKS.get(exp.attack.name).success_metric
