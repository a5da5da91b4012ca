"""`demo_mlp`: flatten, one hidden ReLU layer (the features), a linear head."""

from __future__ import annotations

from torch import Tensor, nn

from siegecraft.core.models.base import SiegeModel, check_int
from siegecraft.core.models.catalog import MODELS


@MODELS.register("demo_mlp")
class DemoMLP(SiegeModel):
    """A perceptron with `hidden` units; works for any input shape."""

    def __init__(self, *, in_channels: int, num_classes: int, image_size: int, hidden: int = 32) -> None:
        super().__init__(in_channels=in_channels, num_classes=num_classes, image_size=image_size,
                         feature_dim=hidden)
        hidden = check_int("DemoMLP", "hidden", hidden, 1)
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(in_channels * image_size**2, hidden), nn.ReLU())
        self.head = nn.Linear(hidden, num_classes)

    def features(self, x: Tensor) -> Tensor:
        return self.body(x)
