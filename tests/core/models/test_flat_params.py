"""flat_params / load_flat_params / num_params: the flat-vector weight transport and determinism."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from siegecraft.core.models import build_model, flat_params, load_flat_params, num_params

from .slim_configs import SLIM


def _trained(name: str, seed: int) -> nn.Module:
    """A slim model after two SGD steps, so weights and BN running stats differ from a fresh init."""
    torch.manual_seed(seed)
    model = build_model(name, in_channels=3, num_classes=5, image_size=32, **SLIM[name])
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(2):
        opt.zero_grad()
        model(torch.randn(4, 3, 32, 32)).logsumexp(1).mean().backward()
        opt.step()
    return model


@pytest.mark.parametrize("name", sorted(SLIM))
def test_round_trip_into_a_fresh_model_gives_identical_outputs(name: str) -> None:
    source = _trained(name, seed=0)
    flat = flat_params(source)
    assert flat.dtype == torch.float32 and flat.dim() == 1
    assert flat.numel() == num_params(source)

    torch.manual_seed(1)
    target = build_model(name, in_channels=3, num_classes=5, image_size=32, **SLIM[name])
    assert not torch.equal(flat_params(target), flat)
    load_flat_params(target, flat)
    assert torch.equal(flat_params(target), flat)

    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(source.eval()(x), target.eval()(x))
    for (key, a), b in zip(source.state_dict().items(), target.state_dict().values()):
        if a.is_floating_point():
            assert torch.equal(a, b), key


def test_flat_includes_float_buffers_in_state_dict_order_but_not_counters() -> None:
    model = _trained("resnet18", seed=0)
    floats = [t for t in model.state_dict().values() if t.is_floating_point()]
    assert torch.equal(flat_params(model), torch.cat([t.reshape(-1) for t in floats]))
    integer = [k for k, t in model.state_dict().items() if not t.is_floating_point()]
    assert integer and all(k.endswith("num_batches_tracked") for k in integer)
    running = sum(
        t.numel() for k, t in model.state_dict().items() if k.endswith(("running_mean", "running_var"))
    )
    assert num_params(model) == num_params(model, trainable_only=True) + running


def test_flat_is_a_copy_and_load_is_in_place() -> None:
    model = build_model("cnn", in_channels=1, num_classes=10, image_size=28, width=4)
    flat = flat_params(model)
    weight = model.head.weight
    with torch.no_grad():
        weight.add_(1.0)
    assert not torch.equal(flat_params(model), flat)  # the earlier vector did not follow the model
    load_flat_params(model, flat)
    assert model.head.weight is weight  # same Parameter objects, so optimizers stay valid
    assert torch.equal(flat_params(model), flat)
    flat.zero_()
    assert model.head.weight.abs().sum() > 0  # loading copied, it did not alias


def test_load_rejects_wrong_length_and_shape() -> None:
    model = build_model("lenet5", in_channels=1, num_classes=10, image_size=28)
    n = num_params(model)
    with pytest.raises(ValueError, match=f"needs \\({n},\\)"):
        load_flat_params(model, torch.zeros(n + 1))
    with pytest.raises(ValueError, match="shape"):
        load_flat_params(model, torch.zeros(1, n))


def test_load_accepts_float64_and_keeps_model_dtype() -> None:
    model = build_model("cnn", in_channels=1, num_classes=10, image_size=28, width=4)
    flat = flat_params(model)
    load_flat_params(model, (flat * 2).double())
    assert model.head.weight.dtype == torch.float32
    torch.testing.assert_close(flat_params(model), flat * 2)


@pytest.mark.parametrize("name", sorted(SLIM))
def test_construction_is_deterministic_under_manual_seed(name: str) -> None:
    def build(seed: int) -> nn.Module:
        torch.manual_seed(seed)
        return build_model(name, in_channels=1, num_classes=3, image_size=28, **SLIM[name])

    a, b, c = build(7), build(7), build(8)
    assert torch.equal(flat_params(a), flat_params(b))
    assert not torch.equal(flat_params(a), flat_params(c))
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(a.eval()(x), b.eval()(x))
