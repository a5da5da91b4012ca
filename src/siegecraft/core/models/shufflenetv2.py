"""`shufflenetv2`: Ma et al.'s ShuffleNetV2 (channel split + shuffle) with a stride-1 CIFAR stem."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from siegecraft.core.models.base import SiegeModel
from siegecraft.core.models.catalog import MODELS
from siegecraft.core.models.layers import conv_bn, init_conv_bn_linear

# Output channels of stages 2-4 and conv5 for each width multiplier (the paper's Table 5).
STAGE_WIDTHS: dict[float, tuple[int, int, int, int]] = {
    0.5: (48, 96, 192, 1024),
    1.0: (116, 232, 464, 1024),
    1.5: (176, 352, 704, 1024),
    2.0: (244, 488, 976, 2048),
}
STAGE_REPEATS = (4, 8, 4)
STEM_WIDTH = 24


def channel_shuffle(x: Tensor, groups: int) -> Tensor:
    """Interleave the channels of `groups` groups so information crosses the two branches."""
    b, c, h, w = x.shape
    return x.view(b, groups, c // groups, h, w).transpose(1, 2).reshape(b, c, h, w)


class ShuffleUnit(nn.Module):
    """Stride 1: split channels, transform one half, concat, shuffle. Stride 2: both branches downsample."""

    def __init__(self, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        if out_ch % 2 or (stride == 1 and in_ch != out_ch):
            raise ValueError(
                f"ShuffleUnit: need an even out_ch, equal to in_ch at stride 1; got {in_ch}->{out_ch}"
            )
        half = out_ch // 2
        branch_in = in_ch if stride == 2 else half
        self.shortcut = (
            nn.Sequential(
                conv_bn(in_ch, in_ch, 3, stride=2, groups=in_ch), conv_bn(in_ch, half, 1, act=nn.ReLU)
            )
            if stride == 2
            else None
        )
        self.branch = nn.Sequential(
            conv_bn(branch_in, half, 1, act=nn.ReLU),
            conv_bn(half, half, 3, stride=stride, groups=half),
            conv_bn(half, half, 1, act=nn.ReLU),
        )

    def forward(self, x: Tensor) -> Tensor:
        if self.shortcut is None:
            kept, x = x.chunk(2, dim=1)
        else:
            kept = self.shortcut(x)
        return channel_shuffle(torch.cat((kept, self.branch(x)), dim=1), 2)


@MODELS.register("shufflenetv2")
class ShuffleNetV2(SiegeModel):
    """Stem conv3x3(24) at stride 1 (no max-pool), stages of [4, 8, 4] units, conv5 1x1, global pool.

    Total downsampling is 8x, so 32x32 inputs end on a 4x4 map; width_mult picks a row of STAGE_WIDTHS.
    """

    def __init__(
        self, *, in_channels: int, num_classes: int, image_size: int, width_mult: float = 1.0
    ) -> None:
        if (
            isinstance(width_mult, bool)
            or not isinstance(width_mult, (int, float))
            or width_mult not in STAGE_WIDTHS
        ):
            allowed = ", ".join(str(k) for k in STAGE_WIDTHS)
            raise ValueError(f"ShuffleNetV2: width_mult must be one of {allowed}, got {width_mult!r}")
        *widths, conv5 = STAGE_WIDTHS[float(width_mult)]
        super().__init__(
            in_channels=in_channels, num_classes=num_classes, image_size=image_size, feature_dim=conv5
        )
        layers: list[nn.Module] = [conv_bn(in_channels, STEM_WIDTH, 3, act=nn.ReLU)]
        in_ch = STEM_WIDTH
        for out_ch, repeats in zip(widths, STAGE_REPEATS):
            layers += [
                ShuffleUnit(in_ch if i == 0 else out_ch, out_ch, 2 if i == 0 else 1) for i in range(repeats)
            ]
            in_ch = out_ch
        layers += [conv_bn(in_ch, conv5, 1, act=nn.ReLU), nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(conv5, num_classes)
        init_conv_bn_linear(self)

    def features(self, x: Tensor) -> Tensor:
        return self.body(x)
