"""The `siegecraft` command line: run, sweep, report, matrix, data."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from siegecraft.core.config import ConfigError, RunFailed
from siegecraft.core.data.datasets import load_dataset
from siegecraft.core.data.fetch import dataset_status, fetch
from siegecraft.core.data.partition import class_counts, format_class_counts, partition
from siegecraft.core.results import RunDir, build_report, summary_table
from siegecraft.drivers.experiment import load_experiment
from siegecraft.drivers.matrix import matrix_table, run_matrix
from siegecraft.drivers.plugins import load_all
from siegecraft.drivers.runner import run_experiment
from siegecraft.drivers.sweep import run_sweep, sweep_table
from siegecraft.engines.serverless.redis_server import list_redis, start_redis, stop_redis

app = typer.Typer(help="Collaborative ML training and its security.", no_args_is_help=True, add_completion=False)
data_app = typer.Typer(help="Datasets: list, fetch, partition.", no_args_is_help=True)
app.add_typer(data_app, name="data")
console = Console()
err_console = Console(stderr=True)

SetOpt = Annotated[list[str] | None, typer.Option("--set", help="override a config key: --set fl.rounds=3")]
PluginOpt = Annotated[
    list[str] | None, typer.Option("--plugin", help="import this module first; it registers extensions (repeatable)")
]


EXIT_STOPPED = 3
"""`siegecraft run` exit status when the run stopped itself early because its target was out of reach (the
run directory, summary and report are complete); 2 is a user error: refused before any work, or (`RunFailed`)
a run-time failure that a setting fixes, such as a memory tier too small; 1 a crash."""


def _fail(msg: str) -> None:
    """Print `error: <msg>` as exactly one line on stderr (never wrapped, markup-safe) and exit with 2."""
    line = " ".join(part.strip() for part in str(msg).splitlines() if part.strip()) or "unknown error"
    err_console.print(f"[bold red]error:[/] {escape(line)}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


class RichProgress:
    """Progress callback: one bar over rounds/epochs, showing the latest accuracy."""

    def __init__(self, label: str) -> None:
        self.bar = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[status]}"), TimeElapsedColumn(), console=err_console,
        )
        self.task = self.bar.add_task(label, total=None, status="")

    def __call__(self, *, step: int, total: int, **fields: Any) -> None:
        status = "  ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in fields.items() if v is not None)
        self.bar.update(self.task, completed=step, total=total, status=status)

    def __enter__(self) -> RichProgress:  # noqa: PYI034 (Self needs Python 3.11)
        self.bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.stop()


@app.command()
def run(
    config: Annotated[Path, typer.Argument(help="experiment TOML file")],
    set_: SetOpt = None,
    out: Annotated[Path | None, typer.Option("--out", help="root folder for run directories")] = None,
    resume: Annotated[Path | None, typer.Option("--resume", help="continue this run directory")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress bar")] = False,
    plugin: PluginOpt = None,
) -> None:
    """Run an experiment; writes runs/<name>-<time>/ with metrics, summary and report.html."""
    logging.basicConfig(level=logging.WARNING, handlers=[RichHandler(console=err_console, show_path=False)])
    if resume is not None and not (resume / "config.toml").is_file():
        _fail(f"--resume {str(resume)!r}: not a run directory (no config.toml)")
    try:
        exp = load_experiment(config, set_ or [], plugin or [])
        if quiet:
            run_dir = run_experiment(exp, out_root=out, resume=resume)
        else:
            with RichProgress(exp.name) as bar:
                run_dir = run_experiment(exp, out_root=out, resume=resume, progress=bar)
    except (ConfigError, RunFailed) as err:
        _fail(str(err))
    summary = run_dir.read_summary()
    console.print(summary_table(summary))
    console.print(f"run directory: {run_dir.path}")
    if run_dir.report_file.exists():
        console.print(f"report: {run_dir.report_file}")
    final = summary.get("final", {})
    if final.get("stopped_early"):  # e.g. serverless on_miss = "abort": summary and report are written
        line = f"stopped early: {final.get('target_missed') or 'target out of reach'}"
        err_console.print(f"[bold yellow]target missed:[/] {escape(line)}", highlight=False, soft_wrap=True)
        raise typer.Exit(EXIT_STOPPED)


@app.command()
def sweep(
    config: Annotated[Path, typer.Argument(help="experiment TOML file")],
    grid: Annotated[list[str], typer.Option("--grid", help="a swept key: --grid train.lr=0.01,0.1 (repeatable)")],
    set_: SetOpt = None,
    out: Annotated[Path | None, typer.Option("--out", help="root folder for the sweep directory")] = None,
    workers: Annotated[int, typer.Option("--workers", min=1, help="grid points run at once, one process each")] = 1,
    use_ray: Annotated[bool, typer.Option("--ray", help="run the grid points as Ray tasks")] = False,
    address: Annotated[str | None, typer.Option("--address", help="Ray cluster to join (default: start one)")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress bar")] = False,
    plugin: PluginOpt = None,
) -> None:
    """Run the product of the --grid values: one run directory each, sweep.csv and sweep.png."""
    logging.basicConfig(level=logging.WARNING, handlers=[RichHandler(console=err_console, show_path=False)])
    kwargs: dict[str, Any] = {"overrides": set_ or [], "out_root": out, "use_ray": use_ray, "address": address,
                              "workers": workers, "plugins": plugin or []}
    try:
        if quiet:
            result = run_sweep(config, grid, **kwargs)
        else:
            with RichProgress(f"sweep {config.stem}") as bar:
                result = run_sweep(config, grid, progress=bar, **kwargs)
    except (ConfigError, ImportError) as err:
        _fail(str(err))
    console.print(sweep_table(result))
    console.print(f"sweep directory: {result.path}\nsweep table: {result.csv_file}")
    if result.figure:
        console.print(f"figure: {result.figure}")


@app.command()
def report(run_dir: Annotated[Path, typer.Argument(help="a run directory")], plugin: PluginOpt = None) -> None:
    """Rebuild report.html (and the standard figures) for a run directory."""
    try:
        load_all(plugin or [])
    except ConfigError as err:
        _fail(str(err))
    try:
        rd = RunDir.open(run_dir)
    except FileNotFoundError as err:
        _fail(str(err))
    path = build_report(rd)
    console.print(summary_table(rd.read_summary()))
    console.print(f"report: {path}")


@app.command()
def matrix(
    config: Annotated[Path, typer.Argument(help="base experiment TOML file")],
    attacks: Annotated[str, typer.Option("--attacks", help="comma-separated: none,sign_flip:scale=8,backdoor")],
    defenses: Annotated[str, typer.Option("--defenses", help="comma-separated: mean,median,krum:f=4,norm_clip+median")],
    adversaries: Annotated[int | None, typer.Option("--adversaries", min=1, help="attacker count (first N clients)")] = None,
    set_: SetOpt = None,
    out: Annotated[Path | None, typer.Option("--out", help="root folder for the matrix directory")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress bar")] = False,
    workers: Annotated[int, typer.Option("--workers", min=1, help="cells run at once, one process each")] = 1,
    use_ray: Annotated[bool, typer.Option("--ray", help="run the cells as Ray tasks")] = False,
    address: Annotated[str | None, typer.Option("--address", help="Ray cluster to join (default: start one)")] = None,
    plugin: PluginOpt = None,
) -> None:
    """Run every (attack, defense) pair; one report with a utility / attack-success table and a heatmap."""
    logging.basicConfig(level=logging.WARNING, handlers=[RichHandler(console=err_console, show_path=False)])
    chosen = list(range(adversaries)) if adversaries is not None else None
    try:
        exp = load_experiment(config, set_ or [], plugin or [])
        kwargs: dict[str, Any] = {"out_root": out, "adversaries": chosen, "workers": workers, "use_ray": use_ray,
                                  "address": address, "plugins": plugin or []}
        if quiet:
            result = run_matrix(exp, attacks, defenses, **kwargs)
        else:
            with RichProgress(f"matrix {exp.name}") as bar:
                result = run_matrix(exp, attacks, defenses, progress=bar, **kwargs)
    except (ConfigError, ImportError) as err:  # every plan mistake is a ConfigError, raised before any work
        _fail(str(err))
    console.print(matrix_table(result))
    console.print(f"report: {result.path / 'report.html'}")


@data_app.command("list")
def data_list(plugin: PluginOpt = None) -> None:
    """Which datasets are available on this machine, and where (plugins' datasets included)."""
    try:
        load_all(plugin or [])
    except ConfigError as err:
        _fail(str(err))
    table = Table("dataset", "available", "where")
    for name, ok, where in dataset_status():
        table.add_row(name, "yes" if ok else "no", where)
    console.print(table)


@data_app.command("fetch")
def data_fetch(
    name: Annotated[str, typer.Argument(help="dataset name")],
    data_dir: Annotated[Path | None, typer.Option(help="target data directory")] = None,
    plugin: PluginOpt = None,
) -> None:
    """Download a dataset from its official source (needs the internet)."""
    try:
        load_all(plugin or [])
        path = fetch(name, data_dir)
    except (ConfigError, OSError, ValueError, RuntimeError) as err:
        _fail(str(err))
    console.print(f"{name}: {path}")


@data_app.command("partition")
def data_partition(
    config: Annotated[Path, typer.Argument(help="experiment TOML file")], set_: SetOpt = None, plugin: PluginOpt = None
) -> None:
    """Print the per-client class counts the config's partition produces."""
    try:
        exp = load_experiment(config, set_ or [], plugin or [])
        if not hasattr(exp, "fl"):
            _fail(f"topology = {exp.topology!r}: data partition applies to federated experiments only")
        d = exp.data
        train = load_dataset(d.dataset, "train", data_dir=d.data_dir, **d.options)
        labels = train.y[: d.train_limit] if d.train_limit else train.y
        parts = partition(labels, exp.fl.clients, d.partition, seed=exp.seed, **d.partition_params())
    except (ConfigError, ValueError, FileNotFoundError) as err:
        _fail(str(err))
    console.print(format_class_counts(class_counts(labels, parts, train.num_classes)))


serverless_app = typer.Typer(help="Serverless (SMLT) helpers.", no_args_is_help=True)
redis_app = typer.Typer(help="A loopback Redis server for the serverless store.", no_args_is_help=True)
serverless_app.add_typer(redis_app, name="redis")
app.add_typer(serverless_app, name="serverless")


@redis_app.command("start")
def redis_start(port: Annotated[int | None, typer.Option(help="port (default: a free one)")] = None) -> None:
    """Start redis-server on 127.0.0.1 (no persistence); prints its address and pidfile."""
    try:
        handle = start_redis(port)
    except (OSError, RuntimeError) as err:
        _fail(str(err))
    console.print(f"redis running: redis://{handle.host}:{handle.port}  pid {handle.pid}  pidfile {handle.pidfile}")


@redis_app.command("stop")
def redis_stop(pidfile: Annotated[Path | None, typer.Argument(help="pidfile (default: every one we started)")] = None) -> None:
    """Stop Redis servers started by `siegecraft serverless redis start`."""
    targets = [pidfile] if pidfile else list_redis()
    if not targets:
        console.print("no redis server started by siegecraft is recorded")
    for target in targets:
        was = stop_redis(target)
        console.print(f"{'stopped' if was else 'not running'}: {getattr(target, 'pidfile', target)}")


if __name__ == "__main__":
    app()
