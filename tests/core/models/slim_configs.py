"""Slim per-model options for the zoo tests: options that keep every forward pass fast."""

from __future__ import annotations

from typing import Any

# Slim configurations: same architecture, fewer channels, so the full grid runs in seconds on a CPU.
SLIM: dict[str, dict[str, Any]] = {
    "cnn": {"width": 8},
    "lenet5": {},
    "resnet18": {"width": 8},
    "mobilenetv2": {"width_mult": 0.25},
    "shufflenetv2": {"width_mult": 0.5},
}
