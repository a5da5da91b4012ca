"""Every model x in_channels x image_size: shapes, forward == classifier(features), backward."""

from __future__ import annotations

import pytest
import torch

from siegecraft.core.models import MODELS, SiegeModel, build_model

from .slim_configs import SLIM

GRID = [(name, c, s) for name in sorted(SLIM) for c in (1, 3) for s in (28, 32, 64)]


def test_every_registered_model_has_a_slim_config() -> None:
    assert sorted(SLIM) == MODELS.names()


@pytest.mark.parametrize(("name", "in_channels", "image_size"), GRID)
def test_shapes_forward_composition_and_backward(name: str, in_channels: int, image_size: int) -> None:
    torch.manual_seed(0)
    model = build_model(name, in_channels=in_channels, num_classes=7, image_size=image_size, **SLIM[name])
    assert isinstance(model, SiegeModel)
    assert (model.in_channels, model.num_classes, model.image_size) == (in_channels, 7, image_size)
    assert model.input_shape == (in_channels, image_size, image_size)
    x = torch.randn(3, in_channels, image_size, image_size)

    model.train()
    logits = model(x)
    assert logits.shape == (3, 7)
    logits.square().mean().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0

    model.eval()
    with torch.no_grad():
        feats = model.features(x)
        assert feats.shape == (3, model.feature_dim)
        torch.testing.assert_close(model(x), model.classifier(feats))
        # Samples are processed independently in eval mode: batch composition must not matter.
        torch.testing.assert_close(model(x[:1]), model(x)[:1], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["cnn", "resnet18", "mobilenetv2", "shufflenetv2"])
@pytest.mark.parametrize("image_size", [8, 17])
def test_conv_nets_accept_small_and_odd_sizes(name: str, image_size: int) -> None:
    model = build_model(name, in_channels=3, num_classes=4, image_size=image_size, **SLIM[name]).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, image_size, image_size)).shape == (2, 4)


@pytest.mark.parametrize("image_size", [10, 13])
def test_lenet5_smallest_sizes(image_size: int) -> None:
    model = build_model("lenet5", in_channels=1, num_classes=10, image_size=image_size).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 1, image_size, image_size)).shape == (2, 10)


def test_feature_dims_of_standard_configs() -> None:
    expected = {
        ("cnn", ()): 128,
        ("lenet5", ()): 84,
        ("resnet18", (("width", 16),)): 128,
        ("mobilenetv2", (("width_mult", 0.5),)): 1280,
        ("mobilenetv2", (("width_mult", 1.5),)): 1920,
        ("shufflenetv2", (("width_mult", 0.5),)): 1024,
        ("shufflenetv2", (("width_mult", 2.0),)): 2048,
    }
    for (name, opts), dim in expected.items():
        model = build_model(name, in_channels=3, num_classes=10, image_size=32, **dict(opts))
        assert model.feature_dim == dim, (name, opts)
        assert model.head.in_features == dim


@pytest.mark.parametrize("name", sorted(SLIM))
@pytest.mark.parametrize("in_channels", [1, 3])
def test_input_gradients_flow_and_parameters_stay_contiguous(name: str, in_channels: int) -> None:
    """Attacks differentiate w.r.t. inputs; other code flattens params/grads with `.view(-1)`."""
    model = build_model(name, in_channels=in_channels, num_classes=5, image_size=32, **SLIM[name])
    x = torch.randn(2, in_channels, 32, 32, requires_grad=True)
    model(x)[:, 0].sum().backward()
    assert x.grad is not None and x.grad.shape == x.shape and x.grad.abs().sum() > 0
    assert all(
        p.is_contiguous() and p.grad is not None and p.grad.is_contiguous() for p in model.parameters()
    )
    vector = torch.nn.utils.parameters_to_vector(model.parameters())
    assert vector.numel() == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", sorted(SLIM))
def test_memory_format_of_the_input_does_not_change_outputs(name: str) -> None:
    model = build_model(name, in_channels=3, num_classes=5, image_size=32, **SLIM[name]).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x.contiguous(memory_format=torch.channels_last)), model(x))
