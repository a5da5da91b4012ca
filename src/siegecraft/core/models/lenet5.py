"""`lenet5`: LeCun et al.'s LeNet-5 (ReLU/max-pool variant), padded and adaptively pooled for any size."""

from __future__ import annotations

from torch import Tensor, nn

from siegecraft.core.models.base import SiegeModel
from siegecraft.core.models.catalog import MODELS


@MODELS.register("lenet5")
class LeNet5(SiegeModel):
    """conv5(6, pad 2)-pool, conv5(16)-pool, adaptive pool to 5x5, fc120, fc84 = features; no BatchNorm.

    The pad-2 first conv gives 28x28 inputs the classic 32x32 geometry; sizes >= 10 all work.
    """

    min_image_size = 10

    def __init__(self, *, in_channels: int, num_classes: int, image_size: int) -> None:
        super().__init__(
            in_channels=in_channels, num_classes=num_classes, image_size=image_size, feature_dim=84
        )
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, 6, 5, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2, ceil_mode=True),
            nn.AdaptiveAvgPool2d(5),
            nn.Flatten(),
            nn.Linear(16 * 5 * 5, 120),
            nn.ReLU(inplace=True),
            nn.Linear(120, 84),
            nn.ReLU(inplace=True),
        )
        self.head = nn.Linear(84, num_classes)

    def features(self, x: Tensor) -> Tensor:
        return self.body(x)
