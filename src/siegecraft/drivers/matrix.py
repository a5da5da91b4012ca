"""The attack-by-defense matrix: one base config, every (attack, defense) pair run, one report.

Attacks and defenses are written as tokens: `name` or `name:key=value:key=value` (values read as
TOML). A defense token may chain components with `+`: at most one aggregator and any strategy wrappers,
wrappers screening first in the order written (`norm_clip:max_norm=2+median`). The attack token's
`clients` key is special: a count (the first N clients) or a list of client ids. Every cell shares the
base config's seed, data split and initial model, so cells differ only in attack and defense.
"""

from __future__ import annotations

import base64
import importlib
import json
import math
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from siegecraft.core.config import ConfigError, parse_override, to_toml
from siegecraft.drivers.experiment import Experiment, build_experiment
from siegecraft.core.results import RunDir, Stopwatch, package_versions

SUCCESS_KEYS = ("attack_success", "hijack_acc")  # where an attack's summary reports its success
NO_DEFENSE = {"none", "fedavg"}
Progress = Callable[..., None]


@dataclass(frozen=True)
class Spec:
    """One component of a token: a registered name and its options."""

    name: str
    options: dict[str, Any] = field(default_factory=dict)


def parse_token(token: str) -> list[Spec]:
    """`a:k=v:k2=v2+b` -> [Spec(a, {k: v, k2: v2}), Spec(b)]."""
    specs = []
    for part in token.strip().split("+"):
        name, *pairs = [p.strip() for p in part.split(":")]
        if not name:
            raise ValueError(f"empty name in token {token!r}")
        options: dict[str, Any] = {}
        for pair in pairs:
            path, value = parse_override(pair)
            if len(path) != 1:
                raise ValueError(f"option {pair!r} in token {token!r} must be key=value")
            options[path[0]] = value
        specs.append(Spec(name, options))
    return specs


def split_tokens(text: str | Sequence[str]) -> list[str]:
    """A comma-separated list (or a sequence of such lists) as stripped, non-empty tokens."""
    items = [text] if isinstance(text, str) else list(text)
    tokens = [t.strip() for item in items for t in item.split(",") if t.strip()]
    if not tokens:
        raise ValueError("an empty list of attacks or defenses")
    return tokens


def _known_attacks() -> list[str]:
    from siegecraft.engines.federated.extensions import ATTACKS

    return ATTACKS.names()


def _ensure_attack(name: str) -> None:
    """Attacks living in their own subpackage (e.g. hijackfl) register on import; try it once."""
    from siegecraft.engines.federated.extensions import ATTACKS

    if name not in ATTACKS and re.fullmatch(r"[a-z_][a-z0-9_]*", name):
        try:
            importlib.import_module(f"siegecraft.attacks.{name}")
        except ModuleNotFoundError:
            pass
    ATTACKS.get(name)  # raises ValueError listing the known ones


def attack_section(base: Experiment, token: str, adversaries: list[int]) -> dict[str, Any]:
    """The `[attack]` table of one matrix row; options in the token override the base config's."""
    specs = parse_token(token)
    if len(specs) != 1:
        raise ValueError(f"attack token {token!r} names more than one attack")
    spec = specs[0]
    _ensure_attack(spec.name)
    if spec.name == "none":
        return {"name": "none", "clients": [], "options": {}}
    options = dict(base.attack.options) if base.attack.name == spec.name else {}
    options.update(spec.options)
    clients = options.pop("clients", None)
    if clients is None:
        chosen = list(adversaries)
    elif isinstance(clients, int):
        chosen = list(range(clients))
    else:
        chosen = [int(c) for c in clients]
    return {"name": spec.name, "clients": chosen, "options": options}


def defense_section(token: str) -> dict[str, Any]:
    """The `[defense]` table of one matrix column (the base config's own defense is not used)."""
    from siegecraft.defenses.aggregators import AGGREGATORS
    from siegecraft.engines.federated.wrappers import STRATEGY_DEFENSES

    aggregator, agg_options, names, tables = "mean", {}, [], {}
    for spec in parse_token(token):
        if spec.name in NO_DEFENSE:
            continue
        if spec.name in AGGREGATORS:
            if aggregator != "mean" or agg_options:
                raise ValueError(f"defense token {token!r} names more than one aggregator")
            aggregator, agg_options = spec.name, spec.options
        elif spec.name in STRATEGY_DEFENSES:
            names.append(spec.name)
            tables[spec.name] = spec.options
        else:
            known = sorted([*NO_DEFENSE, *AGGREGATORS.names(), *STRATEGY_DEFENSES.names()])
            raise ValueError(f"unknown defense {spec.name!r} in {token!r}; known: {', '.join(known)}")
    return {"aggregator": aggregator, "options": {**agg_options, **tables}, "names": names}


def default_adversaries(exp: Experiment) -> list[int]:
    """The base config's attacker ids, else the first 20% of the clients (at least one)."""
    return list(exp.attack.clients) or list(range(max(1, round(0.2 * exp.fl.clients))))


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", text).strip("_") or "cell"


@dataclass
class Cell:
    """One (attack, defense) run: its utility (clean test accuracy) and the attack's success."""

    attack: str
    defense: str
    utility: float | None
    attack_success: float | None
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


def plan_matrix(
    base: Experiment, attacks: Sequence[str], defenses: Sequence[str], adversaries: list[int] | None = None
) -> list[tuple[str, str, Experiment]]:
    """Every cell's validated Experiment, built before any work so a bad token fails at once."""
    if base.topology != "federated":
        raise ConfigError(f"the matrix runs federated experiments; topology is {base.topology!r}")
    chosen = adversaries if adversaries is not None else default_adversaries(base)
    raw = base.model_dump(mode="json")
    plan = []
    for a in attacks:
        attack = attack_section(base, a, chosen)
        for d in defenses:
            cell_raw = {**raw, "attack": attack, "defense": defense_section(d), "name": _slug(f"{a}__{d}")}
            try:
                plan.append((a, d, build_experiment(cell_raw)))
            except ConfigError as err:
                raise ConfigError(f"cell (attack {a!r}, defense {d!r}): {err}") from None
    return plan


def _success(final: dict[str, Any]) -> float | None:
    for key in SUCCESS_KEYS:
        if isinstance(final.get(key), (int, float)):
            return float(final[key])
    return None


def run_matrix(
    base: Experiment,
    attacks: Sequence[str],
    defenses: Sequence[str],
    *,
    out_root: str | Path | None = None,
    adversaries: list[int] | None = None,
    progress: Progress | None = None,
    workers: int = 1,
    worker_threads: int | None = None,
) -> MatrixResult:
    """Run every pair; writes `<root>/matrix-<name>-<time>/` with cells/, matrix.json and report.html.

    `workers` > 1 runs that many cells at once, each in its own process with `worker_threads` torch
    threads (default: an even share of the CPU's cores); every cell is still one deterministic run.
    """
    if workers < 1 or (worker_threads is not None and worker_threads < 1):
        raise ValueError(f"workers and worker_threads must be at least 1, got {workers} and {worker_threads}")
    attacks, defenses = split_tokens(attacks), split_tokens(defenses)
    plan = plan_matrix(base, attacks, defenses, adversaries)
    mdir = RunDir.create(out_root or base.output.root, f"matrix-{base.name}")
    mdir.write_config(to_toml(base.model_dump(mode="json")))
    clock = Stopwatch()
    cells_dir = mdir.path / "cells"
    if workers == 1 or len(plan) == 1:
        runs = []
        for i, (a, d, exp) in enumerate(plan):
            if progress:
                progress(step=i, total=len(plan), cell=f"{a} x {d}")
            runs.append(_run_cell((exp, str(cells_dir), 0)))
    else:
        threads = worker_threads or max(1, (os.cpu_count() or 1) // workers)
        runs = _run_cells_parallel(plan, cells_dir, workers, threads, progress)
    cells = []
    for (a, d, exp), (run_path, wall) in zip(plan, runs, strict=True):
        final = RunDir.open(run_path).read_summary().get("final", {})
        scalars = {k: v for k, v in final.items() if isinstance(v, (int, float, str, bool)) or v is None}
        cells.append(Cell(a, d, final.get("accuracy"), _success(final), None, list(exp.attack.clients),
                          str(Path(run_path).relative_to(mdir.path)), wall, scalars))
    if progress:
        progress(step=len(plan), total=len(plan), cell="done")
    result = MatrixResult(mdir.path, attacks, defenses, cells)
    _fill_utility_drop(result)
    write_matrix_outputs(result, mdir, base, clock())
    return result


def _run_cell(job: tuple[Experiment, str, int]) -> tuple[str, float]:
    """One cell's run (in this process or a worker): its run directory and wall time.

    A positive thread count is applied to torch first (workers share the CPU); 0 leaves it alone.
    """
    from siegecraft.drivers.runner import run_experiment

    exp, cells_dir, threads = job
    if threads > 0:
        import torch

        torch.set_num_threads(threads)
    clock = Stopwatch()
    run = run_experiment(exp, out_root=cells_dir)
    return str(run.path), clock()


def _run_cells_parallel(
    plan: list[tuple[str, str, Experiment]], cells_dir: Path, workers: int, threads: int,
    progress: Progress | None,
) -> list[tuple[str, float]]:
    """The plan's cells on a pool of spawned processes, results in plan order; progress as cells finish."""
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from multiprocessing import get_context

    out: list[tuple[str, float] | None] = [None] * len(plan)
    with ProcessPoolExecutor(max_workers=min(workers, len(plan)), mp_context=get_context("spawn")) as pool:
        futures = {pool.submit(_run_cell, (exp, str(cells_dir), threads)): i for i, (_, _, exp) in enumerate(plan)}
        for done, fut in enumerate(as_completed(futures), start=1):
            i = futures[fut]
            out[i] = fut.result()
            if progress:
                a, d, _ = plan[i]
                progress(step=done, total=len(plan), cell=f"{a} x {d} (finished)")
    return [r for r in out if r is not None]


def _fill_utility_drop(result: MatrixResult) -> None:
    if "none" not in result.attacks:
        return
    for c in result.cells:
        ref = result.cell("none", c.defense).utility
        if ref is not None and c.utility is not None:
            c.utility_drop = ref - c.utility


# -- outputs ------------------------------------------------------------------------------------------
def heatmap_figure(result: MatrixResult, path: Path) -> Path:
    """Two heatmaps (rows: attacks, columns: defenses): utility and attack success, values annotated."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    panels = [("utility (test accuracy)", "utility", "viridis"), ("attack success", "attack_success", "magma_r")]
    rows, cols = len(result.attacks), len(result.defenses)
    fig, axes = plt.subplots(1, 2, figsize=(2.0 + 1.3 * cols * 2, 1.2 + 0.55 * rows), squeeze=False)
    for ax, (title, key, cmap) in zip(axes[0], panels, strict=True):
        grid = np.full((rows, cols), np.nan)
        for c in result.cells:
            v = getattr(c, key)
            if v is not None:
                grid[result.attacks.index(c.attack), result.defenses.index(c.defense)] = v
        colours = plt.get_cmap(cmap)
        ax.imshow(np.ma.masked_invalid(grid), cmap=colours, vmin=0, vmax=1, aspect="auto")
        ax.set_xticks(range(cols), result.defenses, rotation=35, ha="right", fontsize=8)
        ax.set_yticks(range(rows), result.attacks, fontsize=8)
        ax.set_title(title, fontsize=10)
        for (r, k), v in np.ndenumerate(grid):
            if math.isnan(v):
                ax.text(k, r, "-", ha="center", va="center", fontsize=7)
                continue
            red, green, blue, _ = colours(v)
            dark = 0.299 * red + 0.587 * green + 0.114 * blue < 0.5  # luma: white text on dark cells
            ax.text(k, r, f"{v:.2f}", ha="center", va="center", fontsize=7, color="white" if dark else "black")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


_REPORT = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>siegecraft matrix: {{ name }}</title>
<style>
body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 10px;text-align:left}
th{background:#f3f3f3}td.n{text-align:right}img{max-width:100%;border:1px solid #eee}
pre{background:#f7f7f7;padding:1em;overflow:auto}
</style></head><body>
<h1>Attack x defense matrix: {{ name }}</h1>
<p>{{ rows|length }} runs &middot; seed {{ seed }} &middot; wall time {{ wall }} s.
Utility is the final clean test accuracy; attack success is the attack's own metric (backdoor: triggered
inputs classified as the target; hijackfl: hijacking accuracy; sign flip and noise: test error rate);
utility drop is against the no-attack run under the same defense.</p>
<h2>Utility / attack success</h2>
<table><tr><th>attack \\ defense</th>{% for d in defenses %}<th>{{ d }}</th>{% endfor %}</tr>
{% for a in attacks %}<tr><th>{{ a }}</th>{% for d in defenses %}<td class="n">{{ grid[a][d] }}</td>{% endfor %}</tr>
{% endfor %}</table>
<h2>Cells</h2>
<table><tr><th>attack</th><th>defense</th><th>utility</th><th>attack success</th><th>utility drop</th>
<th>attackers</th><th>wall s</th><th>run</th></tr>
{% for c in rows %}<tr><td>{{ c.attack }}</td><td>{{ c.defense }}</td><td class="n">{{ c.utility }}</td>
<td class="n">{{ c.attack_success }}</td><td class="n">{{ c.utility_drop }}</td><td>{{ c.clients }}</td><td class="n">{{ c.wall_s }}</td>
<td><a href="{{ c.run_dir }}/">{{ c.run_dir }}</a></td></tr>
{% endfor %}</table>
<h2>Heatmap</h2><img alt="heatmap" src="data:image/png;base64,{{ heatmap }}">
<h2>Versions</h2><pre>{{ versions }}</pre>
<h2>Base config</h2><pre>{{ config }}</pre>
</body></html>
"""


def matrix_table(result: MatrixResult) -> Any:
    """A rich table of the cells, for the terminal."""
    from rich.table import Table

    table = Table("attack", "defense", "utility", "attack success", "utility drop", title="attack x defense")
    for c in result.cells:
        table.add_row(c.attack, c.defense, _fmt(c.utility), _fmt(c.attack_success), _fmt(c.utility_drop))
    return table


def _fmt(v: Any) -> str:
    return "-" if v is None else f"{v:.4f}" if isinstance(v, float) else str(v)


def write_matrix_outputs(result: MatrixResult, mdir: RunDir, base: Experiment, wall_s: float) -> None:
    """matrix.json, summary.json, figures/heatmap.png and the self-contained report.html."""
    from jinja2 import Environment

    heatmap = heatmap_figure(result, mdir.figures / "heatmap.png")
    data = result.as_dict()
    (mdir.path / "matrix.json").write_text(json.dumps(data, indent=2) + "\n")
    mdir.write_summary({"name": f"matrix-{base.name}", "topology": "matrix", "seed": base.seed,
                        "cells": data["cells"], "versions": package_versions(), "wall_time_s": wall_s})
    grid = {a: {d: f"{_fmt(result.cell(a, d).utility)} / {_fmt(result.cell(a, d).attack_success)}"
                for d in result.defenses} for a in result.attacks}
    rows = [{k: _fmt(v) if k not in ("attack", "defense", "run_dir") else v for k, v in asdict(c).items()}
            for c in result.cells]
    html = Environment(autoescape=True).from_string(_REPORT).render(
        name=base.name, seed=base.seed, attacks=result.attacks, defenses=result.defenses,
        grid=grid, rows=rows, wall=f"{wall_s:.1f}",
        heatmap=base64.b64encode(heatmap.read_bytes()).decode(),
        versions=json.dumps(package_versions(), indent=2), config=mdir.config_file.read_text(),
    )
    mdir.report_file.write_text(html)

