"""`resnet18`: He et al.'s ResNet-18 with the CIFAR stem (3x3 stride-1 conv, no max-pool)."""

from __future__ import annotations

from torch import Tensor, nn

from siegecraft.core.models.base import SiegeModel, check_int
from siegecraft.core.models.catalog import MODELS
from siegecraft.core.models.layers import conv_bn, init_conv_bn_linear


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with an identity (or 1x1 projection) shortcut, ReLU after the sum."""

    def __init__(self, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        self.conv1 = conv_bn(in_ch, out_ch, 3, stride=stride, act=nn.ReLU)
        self.conv2 = conv_bn(out_ch, out_ch, 3)
        self.shortcut = conv_bn(in_ch, out_ch, 1, stride=stride) if stride != 1 or in_ch != out_ch else None
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.shortcut is None else self.shortcut(x)
        return self.relu(self.conv2(self.conv1(x)) + identity)


def make_stage(in_ch: int, out_ch: int, blocks: int, stride: int) -> nn.Sequential:
    """`blocks` BasicBlocks; only the first changes width or resolution."""
    return nn.Sequential(
        BasicBlock(in_ch, out_ch, stride), *(BasicBlock(out_ch, out_ch, 1) for _ in range(blocks - 1))
    )


@MODELS.register("resnet18")
class ResNet18(SiegeModel):
    """Stages of [2, 2, 2, 2] BasicBlocks at widths w, 2w, 4w, 8w (w=64 standard); features = 8w."""

    blocks_per_stage = (2, 2, 2, 2)

    def __init__(self, *, in_channels: int, num_classes: int, image_size: int, width: int = 64) -> None:
        width = check_int("ResNet18", "width", width, 1)
        super().__init__(
            in_channels=in_channels, num_classes=num_classes, image_size=image_size, feature_dim=8 * width
        )
        self.stem = conv_bn(in_channels, width, 3, act=nn.ReLU)
        stages: list[nn.Module] = []
        in_ch = width
        for index, blocks in enumerate(self.blocks_per_stage):
            out_ch = width * 2**index
            stages.append(make_stage(in_ch, out_ch, blocks, stride=1 if index == 0 else 2))
            in_ch = out_ch
        self.stages = nn.Sequential(*stages)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(self.feature_dim, num_classes)
        init_conv_bn_linear(self)

    def features(self, x: Tensor) -> Tensor:
        return self.pool(self.stages(self.stem(x)))
