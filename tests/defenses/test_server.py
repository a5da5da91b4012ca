"""`[defense]` in a federated run: config checks before any work, the root split, wrappers in the engine."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from siegecraft.core.config import ConfigError
from siegecraft.core.results import RunDir
from siegecraft.defenses.clipping import NormClip
from siegecraft.defenses.fltrust import FLTrust
from siegecraft.drivers.experiment import build_experiment
from siegecraft.engines.federated import Federation
from siegecraft.engines.federated.engine import build_strategy
from tests.conftest import tiny_raw


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    """Tiny models train fastest on one thread; on a shared, loaded CPU two threads mostly wait on each other."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize(
    ("defense", "message"),
    [
        ({"names": ["norm_clipping"]}, "defense.names\\[0\\] = 'norm_clipping': not a federated defense; known: adaptive_norm_clip, fltrust"),
        ({"names": ["norm_clip"], "options": {"norm_clip": {"max": 1}}}, "defense.options.norm_clip.max"),
        ({"aggregator": "krum", "options": {"ff": 2}}, "defense.options.ff = 2: not an option of aggregator 'krum'; allowed: f"),
        ({"options": {"fltrust": {"root_size": 10}}}, "'fltrust' is not in defense.names"),
        ({"names": ["norm_clip", "norm_clip"]}, "each defense may be named once"),
        ({"aggregator": "krun"}, "unknown aggregator 'krun'"),
    ],
)
def test_bad_defense_configs_fail_before_work(defense: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build_experiment(tiny_raw(defense=defense))


def test_wrappers_need_individual_updates() -> None:
    with pytest.raises(ConfigError, match="zero_sum"):
        build_experiment(tiny_raw(defense={"names": ["norm_clip"]}, secure={"aggregation": "zero_sum"}))


def test_build_strategy_keeps_aggregator_options_and_wraps() -> None:
    exp = build_experiment(tiny_raw(defense={
        "aggregator": "krum", "names": ["norm_clip"], "options": {"f": 1, "norm_clip": {"max_norm": 2.0}},
    }))
    s = build_strategy(exp)
    assert isinstance(s, NormClip) and s.options.max_norm == 2.0
    plain = build_strategy(build_experiment(tiny_raw(defense={"aggregator": "krum", "options": {"f": 1}})))
    assert type(plain).__name__ == "FedAvg"


def test_fltrust_root_is_withheld_and_outvotes_a_sign_flipper(tmp_path: Path) -> None:
    raw = tiny_raw(
        fl={"rounds": 1},
        data={"partition": "iid"},  # honest updates agree with the root one (non-IID ones may not, by design)
        attack={"name": "sign_flip", "clients": [0], "options": {"scale": 4.0}},
        defense={"names": ["norm_clip", "fltrust"], "options": {"norm_clip": {"max_norm": 50.0},
                                                                "fltrust": {"root_size": 120}}},
    )
    exp = build_experiment(raw)
    plain = Federation(build_experiment(tiny_raw()), RunDir.create(tmp_path, "plain"))
    fed = Federation(exp, RunDir.create(tmp_path, "fltrust"))
    assert fed.root_data is not None and len(fed.root_data) == 120
    assert len(fed.work.train) == len(plain.work.train) - 120
    assert sum(len(p) for p in fed.partitions) == len(fed.work.train)  # clients share only the rest
    assert isinstance(fed.strategy, NormClip) and isinstance(fed.strategy.inner, FLTrust)
    fed.run()
    (record,) = fed.run_dir.read_metrics()
    scores = dict(zip(record["clients"], record["trust_scores"], strict=True))
    assert scores[0] == 0.0 and all(scores[c] > 0 for c in (1, 2, 3)), scores
    assert record["trusted"] == 3 and record["clip_bound"] == 50.0


def test_shipped_defense_experiments_validate() -> None:
    from siegecraft.drivers.experiment import load_experiment

    configs = sorted((Path(__file__).parents[2] / "experiments" / "defenses").glob("*.toml"))
    assert len(configs) >= 3
    for path in configs:
        exp = load_experiment(path)
        assert exp.topology == "federated" and exp.data.dataset == "fashion_mnist", path
