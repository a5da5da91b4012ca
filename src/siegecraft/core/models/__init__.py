"""Model zoo: every model is a `SiegeModel` (features + linear classifier), built by name.

`build_model("resnet18", in_channels=3, num_classes=10, image_size=32, width=16)`.
"""

# Importing each model module registers it in MODELS.
from siegecraft.core.models import cnn, lenet5, mobilenetv2, resnet, shufflenetv2  # noqa: F401
from siegecraft.core.models.base import SiegeModel, flat_params, load_flat_params, num_params
from siegecraft.core.models.catalog import MODELS, build_model, model_options

__all__ = [
    "MODELS",
    "SiegeModel",
    "build_model",
    "flat_params",
    "load_flat_params",
    "model_options",
    "num_params",
]
