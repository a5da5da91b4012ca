"""The `siegecraft` command line: run, report, data."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from siegecraft.config import ConfigError, load_experiment

app = typer.Typer(help="Collaborative ML training and its security.", no_args_is_help=True, add_completion=False)
data_app = typer.Typer(help="Datasets: list, fetch, partition.", no_args_is_help=True)
app.add_typer(data_app, name="data")
console = Console()
err_console = Console(stderr=True)

SetOpt = Annotated[list[str] | None, typer.Option("--set", help="override a config key: --set fl.rounds=3")]


def _fail(msg: str) -> None:
    err_console.print(f"[bold red]error:[/] {msg}", highlight=False)
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

    def __enter__(self) -> RichProgress:
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
) -> None:
    """Run an experiment; writes runs/<name>-<time>/ with metrics, summary and report.html."""
    from siegecraft.results import summary_table
    from siegecraft.runner import run_experiment

    logging.basicConfig(level=logging.WARNING, handlers=[RichHandler(console=err_console, show_path=False)])
    try:
        exp = load_experiment(config, set_ or [])
    except (ConfigError, ValueError) as err:
        _fail(str(err))
    try:
        if quiet:
            run_dir = run_experiment(exp, out_root=out, resume=resume)
        else:
            with RichProgress(exp.name) as bar:
                run_dir = run_experiment(exp, out_root=out, resume=resume, progress=bar)
    except FileNotFoundError as err:
        _fail(str(err))
    console.print(summary_table(run_dir.read_summary()))
    console.print(f"run directory: {run_dir.path}")
    if run_dir.report_file.exists():
        console.print(f"report: {run_dir.report_file}")


@app.command()
def report(run_dir: Annotated[Path, typer.Argument(help="a run directory")]) -> None:
    """Rebuild report.html (and the standard figures) for a run directory."""
    from siegecraft.results import RunDir, build_report, summary_table

    try:
        rd = RunDir.open(run_dir)
    except FileNotFoundError as err:
        _fail(str(err))
    path = build_report(rd)
    console.print(summary_table(rd.read_summary()))
    console.print(f"report: {path}")


@data_app.command("list")
def data_list() -> None:
    """Which datasets are available on this machine, and where."""
    from rich.table import Table

    from siegecraft.data import dataset_status

    table = Table("dataset", "available", "where")
    for name, ok, where in dataset_status():
        table.add_row(name, "yes" if ok else "no", where)
    console.print(table)


@data_app.command("fetch")
def data_fetch(
    name: Annotated[str, typer.Argument(help="dataset name")],
    data_dir: Annotated[Path | None, typer.Option(help="target data directory")] = None,
) -> None:
    """Download a dataset from its official source (needs the internet)."""
    from siegecraft.data import fetch

    try:
        path = fetch(name, data_dir)
    except (OSError, ValueError, RuntimeError) as err:
        _fail(str(err))
    console.print(f"{name}: {path}")


@data_app.command("partition")
def data_partition(config: Annotated[Path, typer.Argument(help="experiment TOML file")], set_: SetOpt = None) -> None:
    """Print the per-client class counts the config's partition produces."""
    from siegecraft.data import class_counts, format_class_counts, load_dataset, partition

    try:
        exp = load_experiment(config, set_ or [])
        d = exp.data
        train = load_dataset(d.dataset, "train", data_dir=d.data_dir, **d.options)
        labels = train.y[: d.train_limit] if d.train_limit else train.y
        parts = partition(labels, exp.fl.clients, d.partition, seed=exp.seed, **d.partition_params())
    except (ConfigError, ValueError, FileNotFoundError) as err:
        _fail(str(err))
    console.print(format_class_counts(class_counts(labels, parts, train.num_classes)))


if __name__ == "__main__":
    app()
