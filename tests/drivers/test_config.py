"""Config validation: bad configs fail before any work, naming key, value and what is allowed."""

from __future__ import annotations

from pathlib import Path

import pytest

from siegecraft.core.config import ConfigError, apply_overrides, parse_override, to_toml
from siegecraft.drivers.experiment import Experiment, build_experiment, load_experiment
from tests.conftest import tiny_raw

REPO = Path(__file__).resolve().parents[2]


def test_quickstart_config_is_valid() -> None:
    exp = load_experiment(REPO / "experiments" / "quickstart.toml")
    assert exp.data.dataset == "fashion_mnist" and exp.fl.clients == 10 and exp.data.alpha == 0.5


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (tiny_raw(fl={"roundz": 3}), ["fl.roundz = 3: unknown key", "rounds"]),
        (tiny_raw(fl={"rounds": 0}), ["fl.rounds = 0", "greater than or equal to 1"]),
        (tiny_raw(data={"dataset": "imagenet"}), ["data.dataset = 'imagenet'", "unknown dataset", "fashion_mnist"]),
        (tiny_raw(model={"name": "vgg"}), ["model.name = 'vgg'", "unknown model", "resnet18"]),
        (tiny_raw(fl={"strategy": "fedprox"}), ["fl.strategy = 'fedprox'", "fedavg", "fedavgm"]),
        (tiny_raw(data={"partition": "dirichlet", "alpha": None}), ["needs data.alpha"]),
        (tiny_raw(train={"lr": -1}), ["train.lr = -1", "greater than 0"]),
        (tiny_raw(fl={"clients": 4, "clients_per_round": 9}), ["fl.clients_per_round = 9: at most fl.clients = 4"]),
        (tiny_raw(runtime={"executor": "mpi"}), ["runtime.executor = 'mpi'", "inline"]),
        (tiny_raw(topology="grid"), ["topology = 'grid'", "federated"]),
        (tiny_raw(secure={"aggregation": "zero_sum"}, defense={"aggregator": "krum"}),
         ["needs individual client updates", "zero_sum"]),
        (tiny_raw(defense={"aggregator": "avg"}), ["unknown aggregator 'avg'", "median"]),
        (tiny_raw(attack={"name": "telepathy", "clients": [0]}), ["unknown attack 'telepathy'"]),
        (tiny_raw(attack={"name": "none", "clients": [7]}), ["attack.clients = [7]: client ids must lie in 0..3"]),
    ],
)
def test_bad_configs_fail_with_key_value_and_allowed(raw: dict, expected: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        build_experiment(raw)
    for fragment in expected:
        assert fragment in str(info.value), str(info.value)


def test_overrides_parse_toml_values() -> None:
    assert parse_override("fl.rounds=3") == (["fl", "rounds"], 3)
    assert parse_override("train.lr=0.5") == (["train", "lr"], 0.5)
    assert parse_override("data.dataset=digits") == (["data", "dataset"], "digits")
    assert parse_override("attack.clients=[1, 2]") == (["attack", "clients"], [1, 2])
    with pytest.raises(ConfigError, match="key.path=value"):
        parse_override("fl.rounds")


def test_overrides_apply_and_validate() -> None:
    raw = apply_overrides(tiny_raw(), ["fl.rounds=7", "secure.fanout=4"])
    exp = build_experiment(raw)
    assert exp.fl.rounds == 7 and exp.secure.fanout == 4
    with pytest.raises(ConfigError, match="is a value, not a table"):
        apply_overrides(tiny_raw(), ["seed.x=1"])


def test_missing_file_and_bad_toml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_experiment(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("name = \n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_experiment(bad)


def test_resolved_config_round_trips_through_toml(tmp_path: Path) -> None:
    exp = build_experiment(tiny_raw())
    path = tmp_path / "c.toml"
    path.write_text(to_toml(exp.model_dump(mode="json")))
    again = load_experiment(path)
    assert again == exp
    assert isinstance(again, Experiment)


def test_hogwild_cross_section_mistakes_fail_at_config_time() -> None:
    raw = tiny_raw(topology="hogwild", hogwild={"workers": 2}, defense={"names": ["no-such-defense"]})
    with pytest.raises(ConfigError, match="no-such-defense"):
        build_experiment(raw)
