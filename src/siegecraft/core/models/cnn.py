"""`cnn`: the small, fast CPU workhorse (two conv blocks and a 128-unit hidden layer, no BatchNorm)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from siegecraft.core.models.base import SiegeModel, check_int
from siegecraft.core.models.catalog import MODELS
from siegecraft.core.models.layers import to_channels_last


@MODELS.register("cnn")
class CNN(SiegeModel):
    """conv3x3(w)-pool-ReLU, conv3x3(2w)-pool-ReLU, average to a 7x7 grid, fc `hidden`-ReLU = features.

    No BatchNorm, so federated averaging has no statistics to reconcile; any image size >= 8 works.
    Max-pooling before the ReLU equals the usual ReLU-then-pool (both are monotone) at a quarter of the
    ReLU cost.
    """

    grid = 7

    def __init__(
        self, *, in_channels: int, num_classes: int, image_size: int, width: int = 32, hidden: int = 128
    ) -> None:
        super().__init__(
            in_channels=in_channels, num_classes=num_classes, image_size=image_size, feature_dim=hidden
        )
        width = check_int("CNN", "width", width, 1)
        self.convs = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1),
            nn.MaxPool2d(2),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.MaxPool2d(2),
            nn.ReLU(inplace=True),
        )
        self.fc = nn.Sequential(
            nn.Flatten(), nn.Linear(2 * width * self.grid**2, hidden), nn.ReLU(inplace=True)
        )
        self.head = nn.Linear(hidden, num_classes)

    def features(self, x: Tensor) -> Tensor:
        x = self.convs(to_channels_last(x))
        if x.shape[-2:] != (self.grid, self.grid):  # 28x28 inputs already land on the grid
            x = F.adaptive_avg_pool2d(x, self.grid)
        return self.fc(x)
