"""Entry points for `topology = "hogwild"`: `run_hogwild` (an Experiment into a run directory) and
`train_hogwild` (the same from plain objects, for benchmarks and tests).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError
from torch import nn

from siegecraft.attacks.game_of_threads import GameOfThreads, GameOfThreadsConfig, planted_runs
from siegecraft.data import ImageDataset
from siegecraft.defenses.async_defenses import build_async_defenses
from siegecraft.hogwild.config import HogwildConfig
from siegecraft.hogwild.figures import timeline_figure
from siegecraft.hogwild.trainer import HogwildResult, HogwildTrainer

if TYPE_CHECKING:
    from siegecraft.config import Experiment
    from siegecraft.results import RunDir

HOGWILD_ATTACKS = ("none", "game_of_threads")


def parse_attack(name: str, options: Mapping[str, Any]) -> GameOfThreadsConfig | None:
    """The attack of a hogwild experiment: none, or Game of Threads with validated options."""
    if name not in HOGWILD_ATTACKS:
        raise ValueError(f"attack {name!r} does not apply to topology 'hogwild'; known: {', '.join(HOGWILD_ATTACKS)}")
    if name == "none":
        return None
    try:
        return GameOfThreadsConfig.model_validate(dict(options))
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ValueError(f"attack.options.{where}: {first['msg']}") from None


def check_hogwild_experiment(exp: Experiment) -> tuple[HogwildConfig, GameOfThreadsConfig | None]:
    """Validate `[hogwild]`, the attack and the async defenses of an experiment before any work (ValueError)."""
    cfg = HogwildConfig.model_validate(exp.hogwild)
    attack = parse_attack(exp.attack.name, exp.attack.options)
    if attack is not None:
        attack.check_against(cfg, num_classes=attack.target_label + 1)  # the class count is checked on the data
    build_async_defenses(exp.defense.names, exp.defense.options)
    return cfg, attack


def summarize(result: HogwildResult, policy: GameOfThreads | None) -> dict[str, Any]:
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
    if policy is not None:
        attack = policy.summary()
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
    attack: GameOfThreadsConfig | None = None,
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
    """Train `model` with Hogwild under an optional Game of Threads attack and async defenses.

    Returns the summary (see `summarize`) plus `records` (the evaluation timeline) and `figures`
    (PNG paths, written to `figures_dir`, default `out_dir/figures`).
    """
    if attack is not None:
        attack.check_against(cfg, train.num_classes)
    built = build_async_defenses(defenses, defense_options)
    policy = GameOfThreads(attack, cfg) if attack is not None else None
    planted = planted_runs(attack, cfg, len(train)) if attack is not None else {}
    target = attack.target_label if attack is not None else 0
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
    exp: Experiment, run: RunDir, *, progress: Callable[..., None] | None = None, resume: bool = False
) -> dict[str, Any]:
    """The `hogwild` topology runner that `siegecraft run` dispatches to."""
    from siegecraft.workload import build_workload

    if resume:
        raise ValueError("hogwild runs cannot be resumed: the workers' optimiser states are not checkpointed")
    cfg, attack = check_hogwild_experiment(exp)
    if cfg.seed is None:
        cfg = cfg.model_copy(update={"seed": exp.seed})
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
