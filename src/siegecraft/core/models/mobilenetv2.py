"""`mobilenetv2`: Sandler et al.'s MobileNetV2 (inverted residuals) with a stride-1 CIFAR stem."""

from __future__ import annotations

from torch import Tensor, nn

from siegecraft.core.models.base import SiegeModel
from siegecraft.core.models.catalog import MODELS
from siegecraft.core.models.layers import conv_bn, init_conv_bn_linear, make_divisible, to_channels_last

# (expansion t, output channels c, repeats n, first stride s), the paper's Table 2.
STAGES: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


class InvertedResidual(nn.Module):
    """1x1 expand (ReLU6), 3x3 depthwise (ReLU6), linear 1x1 project; residual when shapes match."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = in_ch * expansion
        layers: list[nn.Module] = []
        if expansion != 1:
            layers.append(conv_bn(in_ch, hidden, 1, act=nn.ReLU6))
        layers += [
            conv_bn(hidden, hidden, 3, stride=stride, groups=hidden, act=nn.ReLU6),
            conv_bn(hidden, out_ch, 1),
        ]
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and in_ch == out_ch

    def forward(self, x: Tensor) -> Tensor:
        out = self.block(x)
        return x + out if self.residual else out


@MODELS.register("mobilenetv2")
class MobileNetV2(SiegeModel):
    """Stem conv3x3(32) at stride 1, the 17 inverted residuals of STAGES, conv1x1(1280), global pool.

    `width_mult` scales every layer but the last conv, which stays 1280 unless width_mult > 1 (as in
    the paper); the total downsampling is 16x, so 32x32 inputs end on a 2x2 map.
    """

    def __init__(
        self, *, in_channels: int, num_classes: int, image_size: int, width_mult: float = 1.0
    ) -> None:
        if isinstance(width_mult, bool) or not isinstance(width_mult, (int, float)) or width_mult <= 0:
            raise ValueError(f"MobileNetV2: width_mult must be a float > 0, got {width_mult!r}")
        last = make_divisible(1280 * max(1.0, width_mult))
        super().__init__(
            in_channels=in_channels, num_classes=num_classes, image_size=image_size, feature_dim=last
        )
        in_ch = make_divisible(32 * width_mult)
        layers: list[nn.Module] = [conv_bn(in_channels, in_ch, 3, act=nn.ReLU6)]
        for expansion, channels, repeats, stride in STAGES:
            out_ch = make_divisible(channels * width_mult)
            for index in range(repeats):
                layers.append(InvertedResidual(in_ch, out_ch, stride if index == 0 else 1, expansion))
                in_ch = out_ch
        layers += [conv_bn(in_ch, last, 1, act=nn.ReLU6), nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(last, num_classes)
        init_conv_bn_linear(self)

    def features(self, x: Tensor) -> Tensor:
        return self.body(to_channels_last(x))  # NHWC: ~1.7x faster depthwise convs on CPU
