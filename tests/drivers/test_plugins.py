"""Plugins end to end: tests/plugins/siegecraft_demo_plugin loaded through every route and run by the CLI.

The demo plugin registers dataset `demo_shapes` (240 train / 80 test images, 4 classes, 1x12x12), model
`demo_mlp`, attack `demo_boost` (success metric `boost_influence`) and aggregator `demo_capped_mean`.
Each test that loads it starts from a registry without it and a plugin module not yet imported, so a
route that failed to import the plugin fails the test.
"""

from __future__ import annotations

import importlib
import json
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from siegecraft.core.data.datasets import DATASETS, load_dataset
from siegecraft.core.models import MODELS, build_model, flat_params, num_params
from siegecraft.drivers import plugins
from siegecraft.drivers.cli import app
from siegecraft.engines.federated.aggregation import AGGREGATORS, is_linear
from siegecraft.engines.federated.extensions import ATTACKS

PLUGIN_DIR = Path(__file__).resolve().parents[1] / "plugins"
PLUGIN = "siegecraft_demo_plugin"
EP_PREFIX = "demo_ep_"  # entry-point shim modules written by the tests
REGISTRIES = {"dataset": DATASETS, "model": MODELS, "attack": ATTACKS, "aggregator": AGGREGATORS}
NAMES = {"dataset": "demo_shapes", "model": "demo_mlp", "attack": "demo_boost", "aggregator": "demo_capped_mean"}
HIDDEN = 16
MLP_PARAMS = (144 * HIDDEN + HIDDEN) + (HIDDEN * 4 + 4)  # 1x12x12 input, `hidden` units, 4 classes
ROUNDS = 3

runner = CliRunner()

BASE = f"""\
name = "demo"
seed = 1
{{plugins}}
[data]
dataset = "demo_shapes"
partition = "dirichlet"
alpha = 0.5

[model]
name = "demo_mlp"
options = {{{{ hidden = {HIDDEN} }}}}

[train]
lr = 0.2
batch_size = 16
epochs = 2

[fl]
rounds = {ROUNDS}
clients = 4

[defense]
aggregator = "demo_capped_mean"

[output]
report = false
"""

ATTACK = """
[attack]
name = "demo_boost"
clients = [0]
options = { factor = 5.0 }
"""


def write_config(tmp_path: Path, *, plugins: list[str] | None = None, attack: bool = True) -> Path:
    """The demo experiment as TOML; `plugins` fills its `plugins = [...]` key."""
    listed = f"plugins = {json.dumps(plugins)}\n" if plugins is not None else ""
    path = tmp_path / "demo.toml"
    path.write_text(BASE.format(plugins=listed) + (ATTACK if attack else ""))
    return path


def forget_plugin() -> None:
    """Unregister the demo extensions and un-import the demo plugin and entry-point shims."""
    for kind, name in NAMES.items():
        REGISTRIES[kind].unregister(name)
    for module in [m for m in sys.modules if m.split(".")[0] == PLUGIN or m.startswith(EP_PREFIX)]:
        del sys.modules[module]


@pytest.fixture
def fresh_plugin(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """tests/plugins importable; the demo plugin neither imported nor registered (before and after)."""
    plugins.load_builtins()
    monkeypatch.syspath_prepend(str(PLUGIN_DIR))
    monkeypatch.setattr(plugins, "_loaded", set(plugins._loaded))  # restored: forgets what the test loaded
    forget_plugin()
    yield
    forget_plugin()


def run_dir_of(out: Path) -> Path:
    (run_dir,) = out.iterdir()
    return run_dir


def flat_text(text: str) -> str:
    """Output with rich's line wrapping undone (wrapping replaces a space with a newline)."""
    return " ".join(text.split())


def assert_registered() -> None:
    assert PLUGIN in sys.modules
    for kind, name in NAMES.items():
        assert name in REGISTRIES[kind], f"{kind} {name} not registered"


# -- the plugin's extensions on their own ---------------------------------------------------------
def test_demo_extensions_follow_their_contracts(fresh_plugin: None) -> None:
    assert "demo_shapes" not in DATASETS
    importlib.import_module(PLUGIN)
    assert_registered()

    train, test = load_dataset("demo_shapes", "train"), load_dataset("demo_shapes", "test")
    assert (len(train), len(test), train.shape, train.num_classes) == (240, 80, (1, 12, 12), 4)
    assert train.y.bincount().tolist() == [60] * 4 and test.y.bincount().tolist() == [20] * 4
    assert 0.0 <= float(train.x.min()) and float(train.x.max()) == 1.0
    assert torch.equal(load_dataset("demo_shapes", "train").x, train.x)  # generated deterministically
    assert not torch.equal(train.x[:80], test.x)

    model = build_model("demo_mlp", in_channels=1, num_classes=4, image_size=12, hidden=HIDDEN)
    assert type(model).__name__ == "DemoMLP" and num_params(model) == MLP_PARAMS
    assert model(train.x[:5]).shape == (5, 4) and model.features(train.x[:5]).shape == (5, HIDDEN)

    capped = AGGREGATORS.get("demo_capped_mean")
    assert not is_linear(capped)
    updates, weights = torch.tensor([[3.0, 4.0], [0.0, 0.5]]), torch.tensor([1.0, 1.0])
    assert torch.allclose(capped(updates, weights, max_norm=1.0), torch.tensor([0.3, 0.65]))
    assert torch.allclose(capped(updates, weights), torch.tensor([0.15, 0.45]))  # cap: the median norm, 0.5

    attack = ATTACKS.get("demo_boost")
    assert attack.success_metric == "boost_influence"
    with pytest.raises(ValueError, match="factor"):
        attack.options_model.model_validate({"factor": 0})


# -- route 1: `plugins = [...]` in the TOML ----------------------------------------------------------
def test_run_loads_plugins_listed_in_the_config(fresh_plugin: None, tmp_path: Path) -> None:
    cfg = write_config(tmp_path, plugins=[PLUGIN])
    res = runner.invoke(app, ["run", str(cfg), "--out", str(tmp_path / "runs"), "-q"])
    assert res.exit_code == 0, res.output
    assert_registered()
    run = run_dir_of(tmp_path / "runs")
    final = json.loads((run / "summary.json").read_text())["final"]
    assert 0.5 < final["boost_influence"] <= 1.0  # the attack's success metric, computed in finish()
    assert "boost_influence" in res.output
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in records] == list(range(1, ROUNDS + 1))
    assert all(-1.0 <= r["boost_influence"] <= 1.0 for r in records)
    assert all(len(r["per_class_accuracy"]) == 4 for r in records)  # demo_shapes' four classes
    assert torch.load(run / "final_weights.pt").numel() == MLP_PARAMS  # demo_mlp was trained
    assert f'plugins = ["{PLUGIN}"]' in (run / "config.toml").read_text()  # the run directory reloads it


# -- route 2: --plugin ----------------------------------------------------------------------------
def test_run_loads_the_plugin_option(fresh_plugin: None, tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    res = runner.invoke(app, ["run", str(cfg), "--out", str(tmp_path / "runs"), "-q"])
    assert res.exit_code == 2  # without the plugin its names are unknown
    assert "data.dataset = 'demo_shapes'" in flat_text(res.output) and not (tmp_path / "runs").exists()

    cap = 1e-3
    res = runner.invoke(app, ["run", str(cfg), "--plugin", PLUGIN, "--set", f"defense.options.max_norm={cap}",
                              "--out", str(tmp_path / "runs"), "-q"])
    assert res.exit_code == 0, res.output
    run = run_dir_of(tmp_path / "runs")
    torch.manual_seed(1)  # the engine seeds the initial model with the experiment's seed
    start = flat_params(build_model("demo_mlp", in_channels=1, num_classes=4, image_size=12, hidden=HIDDEN))
    moved = float((torch.load(run / "final_weights.pt") - start).norm())
    assert 0 < moved <= ROUNDS * cap * (1 + 1e-4)  # every round's step passed through demo_capped_mean


def test_data_partition_loads_the_plugin_option(fresh_plugin: None, tmp_path: Path) -> None:
    res = runner.invoke(app, ["data", "partition", str(write_config(tmp_path)), "--plugin", PLUGIN])
    assert res.exit_code == 0, res.output
    (total,) = [line.split() for line in res.output.splitlines() if line.split()[:1] == ["all"]]
    assert total == ["all", "60", "60", "60", "60", "240"]


def test_sweep_loads_the_plugin_option(fresh_plugin: None, tmp_path: Path) -> None:
    res = runner.invoke(app, ["sweep", str(write_config(tmp_path)), "--grid", "attack.options.factor=1.0,5.0",
                              "--plugin", PLUGIN, "-q", "--out", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    (sweep_csv,) = (tmp_path / "out").rglob("sweep.csv")
    rows = sweep_csv.read_text().splitlines()
    assert len(rows) == 3 and "boost_influence" in rows[0]


# -- route 3: an installed package's entry point -----------------------------------------------------
def install_entry_point(site: Path, name: str, module: str) -> None:
    """A minimal installed distribution in `site` declaring `name = module` in group siegecraft.plugins."""
    dist = site / f"{module}-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module}\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(f"[{plugins.ENTRY_POINT_GROUP}]\n{name} = {module}\n")


def test_entry_point_imports_its_module(fresh_plugin: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    module = f"{EP_PREFIX}{uuid.uuid4().hex[:12]}"  # never imported before: load_entry_points must import it
    site = tmp_path / "site"
    install_entry_point(site, "demo", module)
    (site / f"{module}.py").write_text(f"import {PLUGIN}  # noqa: F401  (registers the demo extensions)\n")
    monkeypatch.syspath_prepend(str(site))

    assert module in plugins.load_entry_points()
    assert module in sys.modules
    assert_registered()

    cfg = write_config(tmp_path)  # lists no plugins; `siegecraft run` loads entry points itself
    forget_plugin()
    monkeypatch.setattr(plugins, "_loaded", set())
    res = runner.invoke(app, ["run", str(cfg), "--out", str(tmp_path / "runs"), "-q"])
    assert res.exit_code == 0, res.output
    assert_registered()
    assert "boost_influence" in json.loads((run_dir_of(tmp_path / "runs") / "summary.json").read_text())["final"]


def test_broken_entry_point_is_a_config_error(fresh_plugin: None, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    module = f"{EP_PREFIX}missing_{uuid.uuid4().hex[:8]}"
    install_entry_point(tmp_path / "site", "broken", module)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    res = runner.invoke(app, ["run", str(write_config(tmp_path, plugins=[PLUGIN])), "--out", str(tmp_path / "runs")])
    assert res.exit_code == 2
    assert f"entry point siegecraft.plugins:broken = '{module}': import failed" in flat_text(res.output)
    assert "Traceback" not in res.output and not (tmp_path / "runs").exists()


# -- errors ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "command", ["run", "matrix", "sweep", "data partition"])
def test_unknown_plugin_option_exits_2(fresh_plugin: None, tmp_path: Path, command: str) -> None:
    extra = {"matrix": ["--attacks", "none", "--defenses", "mean"], "sweep": ["--grid", "fl.rounds=1"]}
    args = [*command.split(), str(write_config(tmp_path)), *extra.get(command, []), "--plugin", "no_such_mod"]
    if command != "data partition":
        args += ["--out", str(tmp_path / "out"), "-q"]
    res = runner.invoke(app, args)
    assert res.exit_code == 2, res.output
    text = flat_text(res.stderr)
    assert text.startswith("error: ") and "module not found (no_such_mod)" in text
    assert "--plugin 'no_such_mod': module not found" in text
    assert "Traceback" not in res.output and not (tmp_path / "out").exists()


def test_unknown_plugin_in_the_config_exits_2(fresh_plugin: None, tmp_path: Path) -> None:
    res = runner.invoke(app, ["run", str(write_config(tmp_path, plugins=["no_such_mod"])), "-q",
                              "--out", str(tmp_path / "out")])
    assert res.exit_code == 2
    assert flat_text(res.stderr) == ("error: plugins[0] = 'no_such_mod': module not found (no_such_mod); "
                                     "it must be importable (installed, or on PYTHONPATH)")
    assert not (tmp_path / "out").exists()


def test_plugin_error_is_a_single_line(fresh_plugin: None, tmp_path: Path) -> None:
    res = runner.invoke(app, ["run", str(write_config(tmp_path, plugins=["no_such_mod"])), "-q"])
    assert res.exit_code == 2
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr


def test_config_plugin_error_names_its_own_index(fresh_plugin: None, tmp_path: Path) -> None:
    cfg = write_config(tmp_path, plugins=["no_such_mod"])
    res = runner.invoke(app, ["run", str(cfg), "--plugin", PLUGIN, "-q", "--out", str(tmp_path / "out")])
    assert res.exit_code == 2
    assert "plugins[0] = 'no_such_mod'" in flat_text(res.stderr)


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("attack.options.factor=0", "attack.options.factor = 0: Input should be greater than 0"),
        ("attack.options.boost=2", "attack.options.boost = 2: unknown key; allowed keys: factor"),
        ("attack.clients=[0,1,2,3]", "attack.clients = [0, 1, 2, 3]: demo_boost needs at least one benign client"),
        ("defense.options.cap=1", "defense.options.cap = 1: not an option of aggregator 'demo_capped_mean'"),
        ("secure.aggregation=zero_sum", "defense.aggregator = 'demo_capped_mean': needs individual client updates"),
        ("model.options.width=8", "model.options.width = 8: not an option of model 'demo_mlp'; allowed: hidden"),
    ],
)
def test_plugin_extensions_validate_like_builtins(fresh_plugin: None, tmp_path: Path, setting: str,
                                                  message: str) -> None:
    res = runner.invoke(app, ["run", str(write_config(tmp_path)), "--plugin", PLUGIN, "--set", setting,
                              "--out", str(tmp_path / "out"), "-q"])
    assert res.exit_code == 2
    assert message in flat_text(res.stderr)
    assert not (tmp_path / "out").exists()


# -- the attack x defense matrix ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def matrix_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One 2x2 matrix (none/demo_boost x mean/demo_capped_mean) run through `siegecraft matrix --plugin`."""
    tmp = tmp_path_factory.mktemp("matrix")
    with pytest.MonkeyPatch.context() as mp:
        plugins.load_builtins()
        mp.syspath_prepend(str(PLUGIN_DIR))
        mp.setattr(plugins, "_loaded", set(plugins._loaded))
        forget_plugin()
        res = runner.invoke(app, ["matrix", str(write_config(tmp, attack=False)), "--attacks", "none,demo_boost",
                                  "--defenses", "mean,demo_capped_mean", "--plugin", PLUGIN, "-q",
                                  "--out", str(tmp / "out")])
        forget_plugin()
    assert res.exit_code == 0, res.output
    (mdir,) = (tmp / "out").iterdir()
    yield mdir


def cells(mdir: Path) -> dict[tuple[str, str], dict]:
    data = json.loads((mdir / "matrix.json").read_text())
    return {(c["attack"], c["defense"]): c for c in data["cells"]}


def test_matrix_runs_plugin_attack_and_aggregator(matrix_dir: Path) -> None:
    by = cells(matrix_dir)
    assert set(by) == {(a, d) for a in ("none", "demo_boost") for d in ("mean", "demo_capped_mean")}
    for cell in by.values():
        run = matrix_dir / cell["run_dir"]
        assert torch.load(run / "final_weights.pt").numel() == MLP_PARAMS
        config = (run / "config.toml").read_text()
        assert 'dataset = "demo_shapes"' in config and f'aggregator = "{cell["defense"]}"' in config
    boost_mean, boost_capped = by["demo_boost", "mean"], by["demo_boost", "demo_capped_mean"]
    assert boost_mean["clients"] == [0]  # the default: the first 20% of 4 clients
    # the boosted upload steers a plain mean; capping its norm takes most of that influence away
    assert boost_mean["final"]["boost_influence"] > boost_capped["final"]["boost_influence"] + 0.05
    assert boost_mean["utility_drop"] > 0.1
    assert boost_capped["utility_drop"] < boost_mean["utility_drop"]
    assert "boost_influence" not in by["none", "mean"]["final"]


def test_matrix_reports_the_plugin_attack_success_metric(matrix_dir: Path) -> None:
    cell = cells(matrix_dir)["demo_boost", "mean"]
    assert cell["attack_success"] == pytest.approx(cell["final"]["boost_influence"])


def test_matrix_workers_load_the_plugin(fresh_plugin: None, tmp_path: Path) -> None:
    res = runner.invoke(app, ["matrix", str(write_config(tmp_path, plugins=[PLUGIN], attack=False)),
                              "--attacks", "none,demo_boost", "--defenses", "mean", "--workers", "2", "-q",
                              "--out", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    (mdir,) = (tmp_path / "out").iterdir()
    assert "boost_influence" in cells(mdir)["demo_boost", "mean"]["final"]


def test_data_list_shows_a_plugin_dataset(fresh_plugin: None) -> None:
    res = runner.invoke(app, ["data", "list", "--plugin", PLUGIN])
    assert res.exit_code == 0, res.output
    assert "demo_shapes" in res.output
