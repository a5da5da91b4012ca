"""CitadelRuntime with real training: the zero-sum mean update equals in-process FedAvg within the codec bound."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch

from siegecraft.core.data.datasets import load_dataset
from siegecraft.core.models import build_model, flat_params, load_flat_params
from siegecraft.core.training import TrainConfig, local_train
from siegecraft.enclave import CodecError, FixedPointCodec
from siegecraft.enclave.deployment import CitadelRuntime, CitadelSpec
from siegecraft.engines.federated.sampling import client_seed

MODEL_OPTIONS = {"in_channels": 1, "num_classes": 10, "image_size": 28, "width": 4, "hidden": 16}
TRAIN = {"lr": 0.05, "momentum": 0.9, "batch_size": 16, "steps": 3}
SEED = 5


def partitions() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    idx = rng.permutation(60_000)
    return [np.sort(idx[:40]), np.sort(idx[40:64]), np.sort(idx[64:120])]


def spec(**kwargs: object) -> CitadelSpec:
    base = {"dataset": "fashion_mnist", "data_options": {}, "data_dir": None, "partitions": partitions(),
            "model": "cnn", "model_options": MODEL_OPTIONS, "train": TRAIN, "seed": SEED, "fanout": 2}
    return CitadelSpec(**{**base, **kwargs})  # type: ignore[arg-type]


def fedavg_reference(rnd: int, weights: torch.Tensor, clients: list[int]) -> tuple[np.ndarray, int]:
    """The plain FedAvg mean update, computed in this process with the same training function."""
    train = load_dataset("fashion_mnist", "train")
    model = build_model("cnn", **MODEL_OPTIONS)
    total, count = np.zeros(weights.numel()), 0
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the enclaves train with one thread; same kernels, same float rounding
    try:
        for c in clients:
            data = train.subset(partitions()[c])
            load_flat_params(model, weights)
            local_train(model, data, TrainConfig(**TRAIN), seed=client_seed(SEED, rnd, c))
            total += len(data) * (flat_params(model) - weights).double().numpy()
            count += len(data)
    finally:
        torch.set_num_threads(threads)
    return total / count, count


@pytest.fixture(scope="module")
def runtime() -> Iterator[CitadelRuntime]:
    with CitadelRuntime(spec()) as rt:
        yield rt


def test_zero_sum_mean_update_matches_fedavg(runtime: CitadelRuntime) -> None:
    torch.manual_seed(0)
    weights = flat_params(build_model("cnn", **MODEL_OPTIONS))
    for rnd, clients in ((1, [0, 1, 2]), (2, [0, 2])):
        result = runtime.run_round(rnd, weights, clients)
        expected, count = fedavg_reference(rnd, weights, clients)
        assert result.survivors == clients and result.num_samples == count and result.dropped == []
        assert result.mean_update.dtype == torch.float32 and result.mean_update.shape == weights.shape
        bound = FixedPointCodec().error_bound(len(clients))  # codec bound on the mean (the weights sum to 1)
        err = np.abs(result.mean_update.double().numpy() - expected)
        assert (err <= bound + 2.0**-24 * np.abs(expected)).all(), err.max()
        assert np.abs(expected).max() > 1e-3  # training really moved the weights
        weights = weights + result.mean_update


def test_bad_specs_fail_before_launch() -> None:
    with pytest.raises(CodecError, match="wrap around"):
        CitadelRuntime(spec(modulus_bits=32, scale_bits=28))  # weights sum to 1: 8 * 2^28 >= 2^31
    with pytest.raises(ValueError, match="on_dropout"):
        CitadelRuntime(spec(on_dropout="ignore"))
    with pytest.raises(ValueError, match="empty"):
        CitadelRuntime(spec(partitions=[np.arange(3), np.arange(0)]))
