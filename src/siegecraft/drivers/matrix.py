"""The attack-by-defense matrix: one base config, every (attack, defense) pair run, one report.

Attacks and defenses are written as tokens: `name` or `name:key=value:key=value` (values read as
TOML); any registered name works, plugins' included. A defense token may chain components with `+`: at
most one aggregator and any strategy wrappers, wrappers screening first in the order written
(`norm_clip:max_norm=2+median`). The attack token's `clients` key is special: a count (the first N
clients) or a list of client ids. Every cell shares the base config's seed, data split and initial
model, so cells differ only in attack and defense. Cells are planned, run and collected by
`drivers.batch`; the page and heatmap are drawn by `core.results.batch_report`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.table import Table

from siegecraft.core.config import ConfigError, ExperimentBase, parse_override, to_toml
from siegecraft.core.results import RunDir, Stopwatch, package_versions
from siegecraft.core.results.batch_report import fmt, write_matrix_report
from siegecraft.core.topology import TOPOLOGIES
from siegecraft.drivers.batch import Job, JobResult, choose_executor, execute, make_batch_dir, plan_jobs
from siegecraft.drivers.plugins import load_all
from siegecraft.engines.federated.aggregation import AGGREGATORS
from siegecraft.engines.federated.extensions import ATTACKS
from siegecraft.engines.federated.wrappers import STRATEGY_DEFENSES

NO_DEFENSE = ("none", "fedavg")  # plain FedAvg: the mean aggregator, no wrappers
TOKEN_FORM = "name or name:key=value:..., components joined by '+'"
Progress = Callable[..., None]


@dataclass(frozen=True)
class Spec:
    """One component of a token: a registered name and its options."""

    name: str
    options: dict[str, Any] = field(default_factory=dict)


def parse_token(token: str, what: str = "token") -> list[Spec]:
    """`a:k=v:k2=v2+b` -> [Spec(a, {k: v, k2: v2}), Spec(b)]; `what` names the option in errors."""
    specs = []
    for part in token.strip().split("+"):
        name, *pairs = [p.strip() for p in part.split(":")]
        if not name:
            raise ConfigError(f"{what}: {token!r}: a component has no name; allowed: {TOKEN_FORM}")
        options: dict[str, Any] = {}
        for pair in pairs:
            key = pair.split("=", 1)[0].strip()
            if "=" not in pair or not key or "." in key:
                raise ConfigError(f"{what}: {token!r}: option {pair!r} of {name!r}; allowed: key=value")
            options[key] = parse_override(pair)[1]
        specs.append(Spec(name, options))
    return specs


def split_tokens(text: str | Sequence[str], what: str = "tokens") -> list[str]:
    """A comma-separated list (or a sequence of such lists) as stripped, non-empty tokens."""
    items = [text] if isinstance(text, str) else list(text)
    tokens = [t.strip() for item in items for t in item.split(",") if t.strip()]
    if not tokens:
        raise ConfigError(f"{what} = {text!r}: an empty list; allowed: comma-separated tokens ({TOKEN_FORM})")
    return tokens


def attack_section(base: ExperimentBase, token: str, adversaries: list[int]) -> dict[str, Any]:
    """The `[attack]` table of one matrix row; options in the token override the base config's."""
    load_all()  # the built-in attacks (and installed plugins) the token is looked up in
    specs = parse_token(token, "attacks")
    if len(specs) != 1:
        raise ConfigError(f"attacks: {token!r}: names {len(specs)} attacks; allowed: one attack per token")
    spec = specs[0]
    if spec.name not in ATTACKS:
        raise ConfigError(f"attacks: {token!r}: unknown attack {spec.name!r}; allowed: {', '.join(ATTACKS.names())}")
    if spec.name == "none":
        return {"name": "none", "clients": [], "options": {}}
    base_attack = getattr(base, "attack", None)
    options = dict(base_attack.options) if base_attack is not None and base_attack.name == spec.name else {}
    options.update(spec.options)
    clients = options.pop("clients", None)
    if clients is None:
        chosen = list(adversaries)
    elif isinstance(clients, int) and not isinstance(clients, bool) and clients >= 1:
        chosen = list(range(clients))
    elif isinstance(clients, list) and clients and all(isinstance(c, int) and not isinstance(c, bool) for c in clients):
        chosen = list(clients)
    else:
        raise ConfigError(f"attacks: {token!r}: clients = {clients!r}; allowed: a count of at least 1 (the first N "
                          "clients) or a non-empty list of client ids")
    return {"name": spec.name, "clients": chosen, "options": options}


def defense_section(token: str) -> dict[str, Any]:
    """The `[defense]` table of one matrix column (the base config's own defense is not used)."""
    load_all()  # the built-in aggregators and defenses (and installed plugins) the token is looked up in
    aggregator: Spec | None = None
    names: list[str] = []
    tables: dict[str, Any] = {}
    for spec in parse_token(token, "defenses"):
        if spec.name in NO_DEFENSE:
            if spec.options:
                raise ConfigError(f"defenses: {token!r}: {spec.name!r} takes no options, got {spec.options}; "
                                  "allowed: a bare 'none'")
            continue
        if spec.name in AGGREGATORS:
            if aggregator is not None:
                raise ConfigError(f"defenses: {token!r}: two aggregators ({aggregator.name!r}, {spec.name!r}); "
                                  "allowed: one aggregator plus any strategy defenses")
            aggregator = spec
        elif spec.name in STRATEGY_DEFENSES:
            names.append(spec.name)
            tables[spec.name] = spec.options
        else:
            known = sorted({*NO_DEFENSE, *AGGREGATORS.names(), *STRATEGY_DEFENSES.names()})
            raise ConfigError(f"defenses: {token!r}: unknown defense {spec.name!r}; allowed: {', '.join(known)}")
    chosen = aggregator or Spec("mean")
    return {"aggregator": chosen.name, "options": {**chosen.options, **tables}, "names": names}


def default_adversaries(exp: ExperimentBase) -> list[int]:
    """The base config's attacker ids, else the first 20% of the clients (at least one)."""
    return list(exp.attack.clients) or list(range(max(1, round(0.2 * exp.fl.clients))))


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", text).strip("_") or "cell"


def cell_label(attack: str, defense: str) -> str:
    """How a cell is named in messages and progress."""
    return f"cell (attack {attack!r}, defense {defense!r})"


def plan_matrix(
    base: ExperimentBase,
    attacks: Sequence[str],
    defenses: Sequence[str],
    adversaries: list[int] | None = None,
    plugins: Sequence[str] = (),
) -> list[tuple[str, str, Job]]:
    """Every cell's validated job as (attack token, defense token, job), built before any work."""
    if base.topology != "federated":
        raise ConfigError(f"topology = {base.topology!r}: the matrix runs federated experiments; allowed: 'federated'")
    load_all([*plugins, *base.plugins])  # the registries the tokens are looked up in
    chosen = adversaries if adversaries is not None else default_adversaries(base)
    raw = base.model_dump(mode="json", exclude_unset=True)
    rows = [(a, attack_section(base, a, chosen)) for a in attacks]
    columns = [(d, defense_section(d)) for d in defenses]
    pairs = [(a, d) for a, _ in rows for d, _ in columns]
    items = [(cell_label(a, d), {**raw, "attack": at, "defense": dt, "name": _slug(f"{a}__{d}")})
             for a, at in rows for d, dt in columns]
    jobs = plan_jobs(items, plugins)
    return [(a, d, job) for (a, d), job in zip(pairs, jobs, strict=True)]


@dataclass
class Cell:
    """One (attack, defense) run: its utility (clean test accuracy) and the attack's success."""

    attack: str
    defense: str
    utility: float | None
    attack_success: float | None
    success_metric: str | None = None  # the `final` key the attack names as its success
    utility_drop: float | None = None  # against the `none` attack under the same defense, when run
    clients: list[int] = field(default_factory=list)  # the attacker ids
    run_dir: str = ""
    wall_s: float = 0.0
    final: dict[str, Any] = field(default_factory=dict)


@dataclass
class MatrixResult:
    path: Path
    attacks: list[str]
    defenses: list[str]
    cells: list[Cell]

    def cell(self, attack: str, defense: str) -> Cell:
        return next(c for c in self.cells if c.attack == attack and c.defense == defense)

    def as_dict(self) -> dict[str, Any]:
        return {"attacks": self.attacks, "defenses": self.defenses, "cells": [asdict(c) for c in self.cells]}


def _number(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def collect_cell(attack: str, defense: str, job: Job, result: JobResult, root: Path) -> Cell:
    """A cell from its run: utility is the final accuracy, success the key the attack's protocol names."""
    exp = job.experiment
    metric = TOPOLOGIES.get(exp.topology).success_metric(exp)
    final = result.final
    run_dir = result.run_dir.relative_to(root) if result.run_dir.is_relative_to(root) else result.run_dir
    return Cell(attack, defense, _number(final.get("accuracy")), _number(final.get(metric)) if metric else None,
                metric, None, list(exp.attack.clients), str(run_dir), result.wall_s, result.scalars())


def run_matrix(
    base: ExperimentBase,
    attacks: str | Sequence[str],
    defenses: str | Sequence[str],
    *,
    out_root: str | Path | None = None,
    adversaries: list[int] | None = None,
    progress: Progress | None = None,
    workers: int = 1,
    worker_threads: int | None = None,
    use_ray: bool = False,
    address: str | None = None,
    plugins: Sequence[str] = (),
) -> MatrixResult:
    """Run every pair; writes `<root>/matrix-<name>-<time>/` with cells/, matrix.json and report.html.

    `workers` > 1 runs that many cells at once, each in its own process with `worker_threads` torch
    threads (default: an even share of the CPU's cores); `use_ray`/`address` run them as Ray tasks.
    `plugins` are imported here and in every worker. Every cell is one deterministic run, wherever it ran.
    """
    executor = choose_executor(workers, worker_threads, use_ray=use_ray, address=address)
    attacks, defenses = split_tokens(attacks, "attacks"), split_tokens(defenses, "defenses")
    plan = plan_matrix(base, attacks, defenses, adversaries, plugins)
    out = make_batch_dir(out_root or base.output.root, f"matrix-{base.name}")
    clock = Stopwatch()
    shown = {job.label: f"{a} x {d}" for a, d, job in plan}
    results = execute([job for _, _, job in plan], out / "cells", executor, plugins=plugins,
                      progress=_per_cell(progress, shown))
    cells = [collect_cell(a, d, job, r, out) for (a, d, job), r in zip(plan, results, strict=True)]
    result = MatrixResult(out, attacks, defenses, cells)
    fill_utility_drop(result)
    write_matrix_outputs(result, base, clock())
    return result


def _per_cell(progress: Progress | None, shown: dict[str, str]) -> Progress | None:
    """The batch's `progress(step, total, job)` as the matrix's `progress(step, total, cell="a x d")`."""
    if progress is None:
        return None
    return lambda *, step, total, job: progress(step=step, total=total, cell=shown.get(job, job))


def fill_utility_drop(result: MatrixResult) -> None:
    """Each cell's utility drop against the `none` attack under the same defense (when that row ran)."""
    if "none" not in result.attacks:
        return
    for c in result.cells:
        ref = result.cell("none", c.defense).utility
        if ref is not None and c.utility is not None:
            c.utility_drop = ref - c.utility


def write_matrix_outputs(result: MatrixResult, base: ExperimentBase, wall_s: float) -> Path:
    """config.toml, matrix.json, summary.json, and (by core.results) figures/heatmap.png and report.html."""
    mdir = RunDir(result.path)
    mdir.write_config(to_toml(base.model_dump(mode="json")))
    data = result.as_dict()
    (result.path / "matrix.json").write_text(json.dumps(data, indent=2) + "\n")
    mdir.write_summary({"name": f"matrix-{base.name}", "topology": "matrix", "seed": base.seed,
                        "cells": data["cells"], "versions": package_versions(), "wall_time_s": wall_s})
    shown = [{k: v for k, v in c.items() if k != "final"} for c in data["cells"]]
    return write_matrix_report(result.path, name=base.name, seed=base.seed, attacks=result.attacks,
                               defenses=result.defenses, cells=shown, wall_s=wall_s,
                               config=mdir.config_file.read_text())


def matrix_table(result: MatrixResult) -> Table:
    """A rich table of the cells, for the terminal."""
    table = Table("attack", "defense", "utility", "attack success", "utility drop", title="attack x defense")
    for c in result.cells:
        table.add_row(c.attack, c.defense, fmt(c.utility), fmt(c.attack_success), fmt(c.utility_drop))
    return table
