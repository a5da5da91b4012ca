"""Unsupported names, options and arguments fail with ValueErrors that say what is allowed."""

from __future__ import annotations

from typing import Any

import pytest

from siegecraft.core.models import MODELS, build_model, model_options


def test_unknown_model_lists_known_names() -> None:
    with pytest.raises(ValueError, match="unknown model 'vgg16'") as err:
        build_model("vgg16", in_channels=3, num_classes=10, image_size=32)
    for name in ("cnn", "lenet5", "mobilenetv2", "resnet18", "shufflenetv2"):
        assert name in str(err.value)


def test_unknown_option_lists_accepted_options() -> None:
    with pytest.raises(ValueError, match="no option.*widht.*width=64"):
        build_model("resnet18", in_channels=3, num_classes=10, image_size=32, widht=16)
    with pytest.raises(ValueError, match=r"options: \(none\)"):
        build_model("lenet5", in_channels=1, num_classes=10, image_size=28, width=4)


def test_model_options_report_defaults() -> None:
    assert model_options("resnet18") == {"width": 64}
    assert model_options("mobilenetv2") == {"width_mult": 1.0}
    assert model_options("cnn") == {"width": 32, "hidden": 128}
    assert model_options("lenet5") == {}


@pytest.mark.parametrize("name", ["cnn", "lenet5", "resnet18", "mobilenetv2", "shufflenetv2"])
@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("in_channels", 0),
        ("in_channels", 3.0),
        ("num_classes", 0),
        ("image_size", 4),
        ("image_size", (32, 32)),
    ],
)
def test_bad_common_arguments(name: str, key: str, value: Any) -> None:
    kwargs: dict[str, Any] = {"in_channels": 3, "num_classes": 10, "image_size": 32, key: value}
    with pytest.raises(ValueError, match=key):
        build_model(name, **kwargs)


def test_lenet5_rejects_images_too_small_for_its_convs() -> None:
    with pytest.raises(ValueError, match="image_size must be an int >= 10"):
        build_model("lenet5", in_channels=1, num_classes=10, image_size=8)


@pytest.mark.parametrize(
    ("name", "options", "match"),
    [
        ("cnn", {"width": 0}, "width"),
        ("cnn", {"hidden": -1}, "feature_dim"),
        ("resnet18", {"width": 1.5}, "width"),
        ("mobilenetv2", {"width_mult": 0}, "width_mult"),
        ("mobilenetv2", {"width_mult": "1"}, "width_mult"),
        ("shufflenetv2", {"width_mult": 0.75}, r"one of 0.5, 1.0, 1.5, 2.0"),
        ("shufflenetv2", {"width_mult": [1.0]}, "width_mult"),
    ],
)
def test_bad_model_options(name: str, options: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        build_model(name, in_channels=3, num_classes=10, image_size=32, **options)


def test_registry_refuses_duplicate_names() -> None:
    with pytest.raises(ValueError, match="already registered"):
        MODELS.register("cnn")(object)
