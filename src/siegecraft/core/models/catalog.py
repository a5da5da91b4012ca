"""The model registry and `build_model`, the keyword-only facade every topology builds models through."""

from __future__ import annotations

import inspect
from typing import Any

from siegecraft.core.models.base import SiegeModel
from siegecraft.core.registry import Registry

MODELS: Registry[type[SiegeModel]] = Registry("model")

_COMMON = ("in_channels", "num_classes", "image_size")


def model_options(name: str) -> dict[str, Any]:
    """The model-specific options of `name` with their defaults (common arguments excluded)."""
    signature = inspect.signature(MODELS.get(name))
    return {
        key: param.default
        for key, param in signature.parameters.items()
        if key not in _COMMON and param.kind is inspect.Parameter.KEYWORD_ONLY
    }


def build_model(
    name: str, *, in_channels: int, num_classes: int, image_size: int, **options: Any
) -> SiegeModel:
    """Build the registered model `name`; unknown names or options raise ValueError listing what exists."""
    known = model_options(name)
    unknown = sorted(set(options) - set(known))
    if unknown:
        allowed = ", ".join(f"{k}={v!r}" for k, v in known.items()) or "(none)"
        raise ValueError(f"model {name!r} has no option(s) {', '.join(unknown)}; options: {allowed}")
    return MODELS.get(name)(
        in_channels=in_channels, num_classes=num_classes, image_size=image_size, **options
    )
