"""Every error a user can cause: one line naming key, value and what is allowed; exit 2; no run directory.

Each case writes a small TOML config (federated, hogwild or serverless) to `tmp_path`, changes it, and
drives the real CLI (`siegecraft run`). Validation cases fail before any data is read; the preflight
cases (checks that need the dataset) load scikit-learn's bundled digits, so nothing trains.
"""

from __future__ import annotations

import copy
import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from siegecraft.core.config import to_toml
from siegecraft.drivers.cli import app
from tests.conftest import tiny_raw

DROP = object()  # a patch value that removes the key from the base config


def federated_raw() -> dict[str, Any]:
    """The tiny federated experiment of the suite (digits, small CNN, 3 rounds of 4 clients)."""
    return tiny_raw()


def hogwild_raw() -> dict[str, Any]:
    """A small gated Hogwild run on digits (like tests/golden/hogwild_gated.toml)."""
    return {
        "name": "tiny-hogwild",
        "seed": 0,
        "topology": "hogwild",
        "data": {"dataset": "digits", "train_limit": 512, "test_limit": 128},
        "model": {"name": "cnn", "options": {"width": 8}},
        "train": {"epochs": 1, "lr": 0.02, "momentum": 0.9, "batch_size": 64},
        "hogwild": {"workers": 2, "scheduler": "gated", "eval_every_steps": 100000},
        "output": {"report": False},
    }


def serverless_raw() -> dict[str, Any]:
    """A small emulated serverless job with the memory store (like tests/golden/serverless_memory.toml)."""
    return {
        "name": "tiny-serverless",
        "seed": 0,
        "topology": "serverless",
        "data": {"dataset": "digits", "train_limit": 256, "test_limit": 128},
        "model": {"name": "cnn", "options": {"width": 8}},
        "train": {"epochs": 1, "batch_size": 32, "lr": 0.05, "momentum": 0.9},
        "serverless": {"platform": "emulated", "store": "memory", "workers": 2, "memory_mb": 1769,
                       "emulated": {"concurrency": 4}},
        "output": {"report": False},
    }


BASES = {"federated": federated_raw, "hogwild": hogwild_raw, "serverless": serverless_raw}

HIJACK = {"name": "hijackfl", "clients": [1],
          "options": {"dataset": "mnist5k", "num_classes": 4, "samples_per_class": 10, "attack_round": 2}}
GOT = {"name": "game_of_threads", "options": {"target_label": 3}}


@dataclass(frozen=True)
class Case:
    """One bad input: the base config, its change, extra CLI arguments, and what the one line must say."""

    id: str
    base: str  # federated | hogwild | serverless
    key: str  # the key path the message must name
    value: str  # how the bad value must appear right after `<key> = `
    allowed: str  # a fragment that says what is allowed
    patch: dict[str, Any] = field(default_factory=dict)  # deep-merged into the base (DROP removes a key)
    sets: tuple[str, ...] = ()  # --set arguments
    args: tuple[str, ...] = ()  # other CLI arguments
    text: str | None = None  # the config file's text instead of the patched base
    missing: bool = False  # point the CLI at a file that does not exist
    needs_missing: str | None = None  # a package this case needs to be absent (skipped where it is installed)


CASES = [
    # --- federated: unknown keys, types, ranges --------------------------------------------------------
    Case("top-level-unknown-key", "federated", "colour", "'red'", "allowed keys:", {"colour": "red"}),
    Case("nested-unknown-key", "federated", "fl.roundz", "3", "allowed keys:", {"fl": {"roundz": 3}}),
    Case("wrong-type", "federated", "fl.rounds", "'many'", "valid integer", {"fl": {"rounds": "many"}}),
    Case("out-of-range", "federated", "fl.rounds", "0", "greater than or equal to 1", {"fl": {"rounds": 0}}),
    Case("negative-lr", "federated", "train.lr", "-1", "greater than 0", {"train": {"lr": -1}}),
    Case("unknown-topology", "federated", "topology", "'grid'", "federated, hogwild, serverless",
         {"topology": "grid"}),
    # --- federated: registry names ----------------------------------------------------------------------
    Case("unknown-dataset", "federated", "data.dataset", "'imagenet'", "fashion_mnist",
         {"data": {"dataset": "imagenet"}}),
    Case("unknown-model", "federated", "model.name", "'vgg'", "resnet18", {"model": {"name": "vgg"}}),
    Case("unknown-partition", "federated", "data.partition", "'zipf'", "dirichlet, iid, shards",
         {"data": {"partition": "zipf"}}),
    Case("unknown-strategy", "federated", "fl.strategy", "'fedprox'", "fedavgm", {"fl": {"strategy": "fedprox"}}),
    Case("unknown-executor", "federated", "runtime.executor", "'mpi'", "inline", {"runtime": {"executor": "mpi"}}),
    Case("unknown-aggregator", "federated", "defense.aggregator", "'avg'", "median",
         {"defense": {"aggregator": "avg"}}),
    Case("unknown-attack", "federated", "attack.name", "'telepathy'", "sign_flip",
         {"attack": {"name": "telepathy", "clients": [0]}}),
    Case("unknown-defense", "federated", "defense.names[0]", "'magic'", "norm_clip",
         {"defense": {"names": ["magic"]}}),
    Case("unknown-secure-aggregation", "federated", "secure.aggregation", "'homomorphic'", "plain, zero_sum",
         {"secure": {"aggregation": "homomorphic"}}),
    Case("unknown-attestation", "federated", "secure.attestation", "'sgx'", "allowed: mock",
         {"secure": {"aggregation": "zero_sum", "attestation": "sgx"}}),
    # --- federated: options and cross-field checks ------------------------------------------------------
    Case("model-option", "federated", "model.options.depth", "3", "allowed: width, hidden", {"model": {"options": {"depth": 3}}}),
    Case("dataset-option", "federated", "data.options.colour", "True", "allowed: channels",
         {"data": {"options": {"colour": True}}}),
    Case("dirichlet-without-alpha", "federated", "data.partition", "'dirichlet'", "needs data.alpha",
         {"data": {"alpha": DROP}}),
    Case("clients-per-round-above-clients", "federated", "fl.clients_per_round", "9", "at most fl.clients = 4",
         {"fl": {"clients_per_round": 9}}),
    Case("fraction-and-clients-per-round", "federated", "fl.fraction", "0.5", "not both",
         {"fl": {"clients_per_round": 2, "fraction": 0.5}}),
    Case("attack-client-out-of-range", "federated", "attack.clients", "[1, 7]", "0..3",
         {"attack": {"name": "sign_flip", "clients": [1, 7]}}),
    Case("attack-without-clients", "federated", "attack.clients", "[]", "at least one client id",
         {"attack": {"name": "sign_flip"}}),
    Case("attack-options-unknown-key", "federated", "attack.options.bogus", "1", "allowed keys:",
         {"attack": {**HIJACK, "options": {**HIJACK["options"], "bogus": 1}}}),
    Case("attack-round-after-last-round", "federated", "attack.options.attack_round", "5",
         "must not exceed fl.rounds = 2",
         {"fl": {"rounds": 5}, "attack": {**HIJACK, "options": {**HIJACK["options"], "attack_round": 5}}},
         sets=("fl.rounds=2",)),
    Case("hijack-classes-above-dataset", "federated", "attack.options.num_classes", "10", "at most 9",
         {"attack": {**HIJACK, "options": {**HIJACK["options"], "num_classes": 10}}}),  # preflight
    Case("zero-sum-with-median", "federated", "defense.aggregator", "'median'", "use 'mean'",
         {"secure": {"aggregation": "zero_sum"}, "defense": {"aggregator": "median"}}),
    Case("zero-sum-with-defense-names", "federated", "defense.names", "['norm_clip']", "drop them",
         {"secure": {"aggregation": "zero_sum"}, "defense": {"names": ["norm_clip"]}}),
    Case("hijack-unknown-dataset", "federated", "attack.options.dataset", "'imagenet'", "known: cifar10",
         {"attack": {**HIJACK, "options": {**HIJACK["options"], "dataset": "imagenet"}}}),
    Case("dataset-not-on-disk", "federated", "data.dataset", "'mnist'", "siegecraft data fetch mnist",
         {"data": {"dataset": "mnist", "data_dir": "/nonexistent/siegecraft-data"}}),  # preflight
    Case("model-option-wrong-type", "federated", "model.options.width", "'wide'", "must be an int >= 1",
         {"model": {"options": {"width": "wide"}}}),  # preflight: the model is built once
    Case("model-option-out-of-range", "federated", "model.options.width", "-3", "must be an int >= 1",
         {"model": {"options": {"width": -3}}}),  # preflight
    Case("dataset-option-bad-value", "federated", "data.options.size", "'big'", "the dataset rejects it",
         {"data": {"options": {"size": "big"}}}),  # preflight: the data is loaded once
    Case("partition-impossible", "federated", "data.min_partition_size", "1000", "exceeds the 1438 samples",
         {"data": {"min_partition_size": 1000}}),  # preflight
    Case("set-wrong-type", "federated", "fl.clients", "'four'", "valid integer", sets=("fl.clients=four",)),
    # --- hogwild ----------------------------------------------------------------------------------------
    Case("got-target-label-above-classes", "hogwild", "attack.options.target_label", "12", "labels 0..9",
         {"attack": {**GOT, "options": {"target_label": 12}}}),  # preflight
    Case("got-empty-capture-window", "hogwild", "attack.options.capture_from", "1.0", "window [1.0, 1.0) epochs is empty",
         {"attack": {**GOT, "options": {"target_label": 3, "capture_from": 1.0}}}),
    Case("got-every-worker-held", "hogwild", "attack.options.n_held", "2", "at most hogwild.workers - 1 = 1",
         {"attack": {**GOT, "options": {"target_label": 3, "n_held": 2}}}),
    Case("got-with-free-scheduler", "hogwild", "hogwild.scheduler", "'free'", "'os_signals' or 'gated'",
         {"hogwild": {"scheduler": "free"}, "attack": GOT}),
    Case("unknown-scheduler", "hogwild", "hogwild.scheduler", "'round_robin'", "free, gated, os_signals",
         {"hogwild": {"scheduler": "round_robin"}}),
    Case("scheduler-options-unknown-key", "hogwild", "hogwild.scheduler_options.bogus", "1", "allowed keys:",
         {"hogwild": {"scheduler_options": {"bogus": 1}}}),
    Case("two-eval-cadences", "hogwild", "hogwild.eval_every_s", "2.0", "not both",
         {"hogwild": {"eval_every_s": 2.0}}),
    Case("train-steps-unused", "hogwild", "train.steps", "5", "not used by topology 'hogwild'",
         {"train": {"steps": 5}}),
    Case("fl-section-under-hogwild", "hogwild", "fl", "{'rounds': 3}", "allowed keys:", {"fl": {"rounds": 3}}),
    Case("unknown-async-defense", "hogwild", "defense.names[0]", "'krum'", "bounded_staleness",
         {"defense": {"names": ["krum"]}}),
    Case("too-many-workers", "hogwild", "hogwild.workers", "100", "less than or equal to 64",
         {"hogwild": {"workers": 100}}),
    # --- serverless -------------------------------------------------------------------------------------
    Case("deadline-and-budget", "serverless", "serverless.budget_usd", "0.1", "not both",
         {"serverless": {"deadline_s": 60.0, "budget_usd": 0.1}, "train": {"batch_size": DROP}}),
    Case("planner-memory-out-of-range", "serverless", "serverless.planner.memory_mb", "[1024, 20000]",
         "[128, 10240] MB",
         {"serverless": {"deadline_s": 60.0, "planner": {"memory_mb": [1024, 20000]}}, "train": {"batch_size": DROP}}),
    Case("fixed-memory-out-of-range", "serverless", "serverless.memory_mb", "20000", "[128, 10240] MB",
         {"serverless": {"memory_mb": 20000}}),
    Case("faults-with-lithops", "serverless", "serverless.faults.rate", "0.1", "platform = 'emulated'",
         {"serverless": {"platform": "lithops", "faults": {"rate": 0.1}}}),
    Case("batch-size-with-deadline", "serverless", "train.batch_size", "32", "serverless.planner.batch_size",
         {"serverless": {"deadline_s": 60.0}}),
    Case("emulated-concurrency-too-small", "serverless", "serverless.emulated.concurrency", "1", "raise it to 2",
         {"serverless": {"emulated": {"concurrency": 1}}}),
    Case("lithops-not-installed", "serverless", "serverless.platform", "'lithops'", "pip install",
         {"serverless": {"platform": "lithops"}}, needs_missing="lithops"),
    Case("unknown-platform", "serverless", "serverless.platform", "'aws'", "'emulated' or 'lithops'",
         {"serverless": {"platform": "aws"}}),
    Case("memory-out-of-range-with-deadline", "serverless", "serverless.memory_mb", "20000", "[128, 10240] MB",
         {"serverless": {"deadline_s": 60.0, "memory_mb": 20000}, "train": {"batch_size": DROP}}),
    Case("unknown-on-infeasible", "serverless", "serverless.on_infeasible", "'maybe'", "'refuse' or 'best-effort'",
         {"serverless": {"on_infeasible": "maybe"}}),
    Case("unknown-on-miss", "serverless", "serverless.on_miss", "'retry'", "'abort' or 'continue'",
         {"serverless": {"on_miss": "retry"}}),
    # hierarchical synchronisation: the group size must divide every worker count a plan may use
    Case("group-size-not-a-divisor", "serverless", "serverless.group_size", "2", "must divide the number of workers",
         {"serverless": {"sync": "hierarchical", "workers": 3, "group_size": 2}}),
    Case("group-size-not-a-divisor-of-the-grid", "serverless", "serverless.group_size", "2", "[3] do not",
         {"serverless": {"sync": "hierarchical", "deadline_s": 60.0, "group_size": 2,
                         "planner": {"workers": [2, 3, 4]}}, "train": {"batch_size": DROP}}),
    Case("group-size-one", "serverless", "serverless.group_size", "1", "an integer >= 2",
         {"serverless": {"sync": "hierarchical", "group_size": 1}}),
    Case("group-size-word", "serverless", "serverless.group_size", "'big'", "'auto'",
         {"serverless": {"sync": "hierarchical", "group_size": "big"}}),
    Case("group-size-without-hierarchy", "serverless", "serverless.group_size", "2", "sync = 'hierarchical'",
         {"serverless": {"group_size": 2}}),
    # serverless preflight: checks against the training set (256 digits) and the planner's prior model
    Case("deadline-unreachable", "serverless", "serverless.deadline_s", "0.1",
         "a deadline_s of at least", {"serverless": {"deadline_s": 0.1}, "train": {"batch_size": DROP}}),
    Case("budget-unreachable", "serverless", "serverless.budget_usd", "1e-06",
         "a budget_usd of at least", {"serverless": {"budget_usd": 1e-6}, "train": {"batch_size": DROP}}),
    Case("batch-larger-than-dataset", "serverless", "train.batch_size", "512", "larger than the 256 training samples",
         {"train": {"batch_size": 512}}),
    Case("global-batch-larger-than-dataset", "serverless", "serverless.workers", "4", "at most 2 workers",
         {"serverless": {"workers": 4}, "train": {"batch_size": 128}}),
    Case("planner-batch-larger-than-dataset", "serverless", "serverless.planner.batch_size", "[16, 512]",
         "larger than the 256 training samples",
         {"serverless": {"deadline_s": 60.0, "planner": {"batch_size": [16, 512]}}, "train": {"batch_size": DROP}}),
    Case("planner-global-batch-larger-than-dataset", "serverless", "serverless.planner.workers", "[4]",
         "exceeds the 256 training samples",
         {"serverless": {"deadline_s": 60.0, "planner": {"workers": [4], "batch_size": [128]}},
          "train": {"batch_size": DROP}}),
    # --- the command line -------------------------------------------------------------------------------
    Case("missing-config", "federated", "config", "{cfg}", "file not found", missing=True),
    Case("malformed-toml", "federated", "config", "{cfg}", "not valid TOML", text="name = \n[fl\nrounds = 3\n"),
    Case("set-without-equals", "federated", "--set", "'fl.rounds'", "key.path=value", sets=("fl.rounds",)),
    Case("set-into-a-value", "federated", "--set", "'seed.x=1'", "seed = 3 is a value, not a table",
         sets=("seed.x=1",)),
    Case("resume-non-run-dir", "federated", "--resume", "{tmp}", "not a run directory", args=("--resume", "{tmp}")),
    Case("unknown-plugin", "federated", "--plugin", "'no_such_siegecraft_plugin'", "module not found",
         args=("--plugin", "no_such_siegecraft_plugin")),
    Case("plugins-not-a-list", "federated", "plugins", "'x'", "list of module names", {"plugins": "x"}),
]


def patched(raw: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """`raw` with `patch` deep-merged into it (a DROP value removes that key)."""
    out = copy.deepcopy(raw)
    for key, value in patch.items():
        if value is DROP:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = patched(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def write_config(case: Case, tmp_path: Path) -> Path:
    """The case's config file under `tmp_path` (or the path of a missing one)."""
    path = tmp_path / f"{case.id}.toml"
    if case.missing:
        return path
    path.write_text(case.text if case.text is not None else to_toml(patched(BASES[case.base](), case.patch)))
    return path


def invoke(case: Case, tmp_path: Path) -> tuple[Result, str]:
    """Run `siegecraft run` on the case; returns the result and the expected `key = value` fragment."""
    cfg = write_config(case, tmp_path)
    args = [a.replace("{tmp}", str(tmp_path)) for a in case.args]
    sets = [x for s in case.sets for x in ("--set", s)]
    argv = ["run", str(cfg), "--out", str(tmp_path / "runs"), "-q", *sets, *args]
    value = case.value.replace("{cfg}", repr(str(cfg))).replace("{tmp}", repr(str(tmp_path)))
    sep = " " if case.key.startswith("--") else " = "  # options read `--set 'x'`, config keys `a.b = x`
    return CliRunner().invoke(app, argv), f"{case.key}{sep}{value}"


def error_text(result: Result) -> str:
    """What the command wrote to stderr (click >= 8.2 keeps it apart; older versions mix it into output)."""
    try:
        return result.stderr
    except ValueError:
        return result.output


def test_the_table_is_large_and_covers_every_topology() -> None:
    assert len(CASES) >= 30
    assert len({c.id for c in CASES}) == len(CASES)
    assert {c.base for c in CASES} == set(BASES)


def params() -> list[Any]:
    """The cases as pytest params, skipping those whose premise (a package missing) does not hold here."""
    out = []
    for c in CASES:
        installed = c.needs_missing is not None and importlib.util.find_spec(c.needs_missing) is not None
        marks = [pytest.mark.skip(reason=f"{c.needs_missing} is installed")] if installed else []
        out.append(pytest.param(c, id=c.id, marks=marks))
    return out


@pytest.mark.parametrize("case", params())
def test_user_error_is_one_line_exit_2_and_no_run_directory(case: Case, tmp_path: Path) -> None:
    result, named = invoke(case, tmp_path)
    err = error_text(result)
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert "Traceback" not in result.output, result.output
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].strip(), repr(err)
    line = lines[0]
    assert line.startswith("error: "), line
    assert named in line, (named, line)
    assert case.allowed in line, line
    assert result.stdout == "", result.stdout
    runs = tmp_path / "runs"
    assert not runs.exists() or not any(runs.iterdir()), sorted(runs.iterdir())
