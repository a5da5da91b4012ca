"""Architecture facts from the papers: parameter counts, stage widths, resolutions, no BatchNorm."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from siegecraft.core.models import build_model, num_params

from .slim_configs import SLIM


def _conv_output_shapes(model: nn.Module, x: torch.Tensor) -> list[tuple[int, ...]]:
    shapes: list[tuple[int, ...]] = []
    hooks = [
        m.register_forward_hook(lambda _m, _i, out: shapes.append(tuple(out.shape)))
        for m in model.modules()
        if isinstance(m, nn.Conv2d)
    ]
    with torch.no_grad():
        model.eval()(x)
    for hook in hooks:
        hook.remove()
    return shapes


def test_resnet18_full_width_has_the_known_cifar_parameter_count() -> None:
    model = build_model("resnet18", in_channels=3, num_classes=10, image_size=32)
    assert num_params(model, trainable_only=True) == 11_173_962
    assert model.feature_dim == 512
    bn_channels = sum(m.num_features for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    # flat vectors carry running mean and var, not the integer num_batches_tracked counters
    assert num_params(model) == 11_173_962 + 2 * bn_channels


def test_resnet18_cifar_stem_keeps_resolution_until_stage_two() -> None:
    model = build_model("resnet18", in_channels=3, num_classes=10, image_size=32, width=8)
    shapes = _conv_output_shapes(model, torch.randn(1, 3, 32, 32))
    assert shapes[0] == (1, 8, 32, 32)  # 3x3 stride-1 stem, no max-pool
    assert shapes[-1][1:] == (64, 4, 4)  # last block: 8 * width channels at 32 / 8


def test_mobilenetv2_structure() -> None:
    model = build_model("mobilenetv2", in_channels=3, num_classes=10, image_size=32)
    assert num_params(model, trainable_only=True) == 2_236_682
    blocks = [m for m in model.modules() if type(m).__name__ == "InvertedResidual"]
    assert len(blocks) == 17
    assert sum(b.residual for b in blocks) == 10
    shapes = _conv_output_shapes(model, torch.randn(1, 3, 32, 32))
    assert shapes[0] == (1, 32, 32, 32)  # stride-1 stem
    assert shapes[-1] == (1, 1280, 2, 2)


@pytest.mark.parametrize(("width_mult", "stage_widths"), [(1.0, (116, 232, 464)), (0.5, (48, 96, 192))])
def test_shufflenetv2_stage_widths(width_mult: float, stage_widths: tuple[int, ...]) -> None:
    model = build_model("shufflenetv2", in_channels=3, num_classes=10, image_size=32, width_mult=width_mult)
    units = [m for m in model.modules() if type(m).__name__ == "ShuffleUnit"]
    assert len(units) == 4 + 8 + 4
    seen: list[tuple[int, ...]] = []
    hooks = [u.register_forward_hook(lambda _m, _i, out: seen.append(tuple(out.shape[1:]))) for u in units]
    with torch.no_grad():
        model.eval()(torch.randn(1, 3, 32, 32))
    for hook in hooks:
        hook.remove()
    assert [seen[0], seen[4], seen[12]] == [(w, s, s) for w, s in zip(stage_widths, (16, 8, 4))]


@pytest.mark.parametrize("name", ["cnn", "lenet5"])
def test_federated_workhorses_have_no_batchnorm(name: str) -> None:
    model = build_model(name, in_channels=1, num_classes=10, image_size=28)
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    assert num_params(model) == num_params(model, trainable_only=True)


def test_lenet5_layer_sizes() -> None:
    model = build_model("lenet5", in_channels=1, num_classes=10, image_size=32)
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(400, 120), (120, 84), (84, 10)]


def test_cnn_width_option_scales_convs() -> None:
    narrow = build_model("cnn", in_channels=1, num_classes=10, image_size=28, width=8)
    convs = [m for m in narrow.modules() if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels) for c in convs] == [(1, 8), (8, 16)]
    assert num_params(narrow) < num_params(build_model("cnn", in_channels=1, num_classes=10, image_size=28))


@pytest.mark.parametrize("name", ["cnn", "lenet5"])
def test_small_nets_fit_a_tiny_batch(name: str) -> None:
    """A real learning check: the model can memorise 32 random-labelled images."""
    torch.manual_seed(0)
    model = build_model(name, in_channels=1, num_classes=4, image_size=28, **SLIM[name])
    x, y = torch.randn(32, 1, 28, 28), torch.randint(0, 4, (32,))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(60):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    with torch.no_grad():
        assert (model(x).argmax(1) == y).float().mean() == 1.0


@pytest.mark.parametrize("image_size", [28, 32])
def test_cnn_matches_the_reference_relu_then_pool_computation(image_size: int) -> None:
    """Pool-before-ReLU and the NHWC layout are speed choices only: the function is the textbook one."""
    torch.manual_seed(0)
    model = build_model("cnn", in_channels=3, num_classes=10, image_size=image_size, width=8).eval()
    conv1, conv2 = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    linear = next(m for m in model.fc.modules() if isinstance(m, nn.Linear))
    x = torch.randn(2, 3, image_size, image_size)
    h = F.max_pool2d(F.relu(F.conv2d(x, conv1.weight, conv1.bias, padding=1)), 2)
    h = F.max_pool2d(F.relu(F.conv2d(h, conv2.weight, conv2.bias, padding=1)), 2)
    expected = F.relu(F.linear(F.adaptive_avg_pool2d(h, 7).flatten(1), linear.weight, linear.bias))
    with torch.no_grad():
        torch.testing.assert_close(model.features(x), expected)
