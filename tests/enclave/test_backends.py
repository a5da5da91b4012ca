"""Choosing the attestation backend: `[secure] attestation`, through the bridge and the spec to the session."""

from __future__ import annotations

import numpy as np
import pytest

from siegecraft.core.config import ConfigError
from siegecraft.drivers.experiment import build_experiment
from siegecraft.enclave.authority import MockBackend
from siegecraft.enclave.backends import backend_names, get_backend
from siegecraft.enclave.deployment import CitadelSpec
from siegecraft.enclave.federated_bridge import spec_from_experiment

from .synthetic import config

RAW = {"data": {"dataset": "fashion_mnist"}, "model": {"name": "cnn"}, "fl": {"clients": 2},
       "secure": {"aggregation": "zero_sum", "fanout": 2}}


def test_mock_is_the_only_built_in_backend_and_says_it_simulates() -> None:
    assert backend_names() == ("mock",)
    backend = get_backend("mock")
    assert isinstance(backend, MockBackend) and backend.simulated and "no hardware protection" in backend.notice
    with pytest.raises(ValueError, match="unknown attestation backend 'sgx'; allowed: 'mock'"):
        get_backend("sgx")


def test_config_refuses_an_unknown_backend_naming_key_value_and_choices() -> None:
    assert build_experiment(RAW).secure.attestation == "mock"  # the default
    with pytest.raises(ConfigError) as info:
        build_experiment({**RAW, "secure": {**RAW["secure"], "attestation": "sgx-dcap"}})
    message = str(info.value)
    assert "secure.attestation = 'sgx-dcap'" in message and "allowed: mock" in message


def test_the_backend_travels_from_the_experiment_to_the_session() -> None:
    exp = build_experiment({**RAW, "secure": {**RAW["secure"], "attestation": "mock"}})
    spec = spec_from_experiment(exp, [np.arange(3), np.arange(3, 6)])
    assert spec.attestation == "mock"
    bad = CitadelSpec(dataset="fashion_mnist", data_options={}, data_dir=None, partitions=[np.arange(2)] * 2,
                      model="cnn", model_options={}, train={}, seed=0, attestation="sgx")
    with pytest.raises(ValueError, match="attestation must be one of \\('mock',\\), got 'sgx'"):
        bad.validate()
    with pytest.raises(ValueError, match="attestation must be one of"):
        config(2, attestation="sgx")
    assert config(2).attestation == "mock"


def test_party_specs_do_not_show_their_data() -> None:
    party = config(2).parties[0]
    assert "seed" not in repr(party) and "1000" not in repr(party)
