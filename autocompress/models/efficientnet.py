"""EfficientNet-B0 style network (Tan & Le 2019) with width/depth multipliers.

Compound scaling: ``width_mult`` scales every channel count (rounded to a
multiple of 8), ``depth_mult`` scales each stage's repeats to
``ceil(depth_mult * n)``.  Resolution, the third compound dimension, is an
input concern: the network ends in adaptive pooling and accepts any input
size, so feed it the scaled resolution.

``small_input=True`` (default) adapts the net to 32x32-ish inputs: the stem has
stride 1 and the second stage (k3, c24) has stride 1, for a total stride of 8
instead of 32.  ``features`` is ``[stem, stage_1, ..., stage_7, head]`` with each
stage its own ``nn.Sequential`` of :class:`MBConv` blocks.  No stochastic depth.
"""

from __future__ import annotations

import math

from torch import Tensor, nn

from .mobilenetv2 import init_mobilenet_weights, make_divisible
from .registry import register_model

__all__ = [
    "B0_STAGES",
    "EfficientNet",
    "MBConv",
    "SqueezeExcite",
    "efficientnet_b0",
    "stage_repeats",
]

#: (kernel, stride, expand ratio, output channels, repeats) of EfficientNet-B0.
B0_STAGES: tuple[tuple[int, int, int, int, int], ...] = (
    (3, 1, 1, 16, 1),
    (3, 2, 6, 24, 2),
    (5, 2, 6, 40, 2),
    (3, 2, 6, 80, 3),
    (5, 1, 6, 112, 3),
    (5, 2, 6, 192, 4),
    (3, 1, 6, 320, 1),
)
#: Index in :data:`B0_STAGES` whose stride ``small_input`` sets to 1.
_SMALL_INPUT_STAGE = 1


def stage_repeats(depth_mult: float, stages=B0_STAGES) -> list[int]:
    """Blocks per stage after depth scaling: ``ceil(depth_mult * n)``."""
    # round() guards against float noise such as 0.1 * 30 = 3.0000000000000004.
    return [max(1, math.ceil(round(depth_mult * n, 9))) for *_, n in stages]


def conv_bn_act(
    in_ch: int, out_ch: int, kernel: int = 1, stride: int = 1, groups: int = 1
) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.SiLU(),
    )


def _uniform_classifier(linear: nn.Linear) -> None:
    """EfficientNet's classifier: uniform in +-1/sqrt(out_features)."""
    bound = 1.0 / math.sqrt(linear.out_features)
    nn.init.uniform_(linear.weight, -bound, bound)


class SqueezeExcite(nn.Module):
    """Global pool → 1x1 reduce → SiLU → 1x1 expand → sigmoid gate on the input."""

    def __init__(self, channels: int, se_channels: int) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.reduce = nn.Conv2d(channels, se_channels, 1)
        self.act = nn.SiLU()
        self.expand = nn.Conv2d(se_channels, channels, 1)
        self.gate = nn.Sigmoid()

    def forward(self, x: Tensor) -> Tensor:
        s = self.gate(self.expand(self.act(self.reduce(self.pool(x)))))
        return x * s


class MBConv(nn.Module):
    """Mobile inverted bottleneck with squeeze-and-excitation.

    1x1 expand (skipped when expand ratio is 1) → kxk depthwise → SE (reduced
    channels = 0.25 x block input channels) → 1x1 linear projection; residual
    add when stride is 1 and input/output channels match.
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        *,
        kernel: int,
        stride: int,
        expand_ratio: int,
        se_ratio: float = 0.25,
    ) -> None:
        super().__init__()
        hidden = in_ch * expand_ratio
        self.use_residual = stride == 1 and in_ch == out_ch
        self.expand = conv_bn_act(in_ch, hidden, 1) if expand_ratio != 1 else nn.Identity()
        self.dwconv = conv_bn_act(hidden, hidden, kernel, stride, groups=hidden)
        self.se = SqueezeExcite(hidden, max(1, int(in_ch * se_ratio)))
        self.project = nn.Sequential(
            nn.Conv2d(hidden, out_ch, 1, bias=False), nn.BatchNorm2d(out_ch)
        )

    def forward(self, x: Tensor) -> Tensor:
        out = self.project(self.se(self.dwconv(self.expand(x))))
        if self.use_residual:
            out = out + x
        return out


class EfficientNet(nn.Module):
    def __init__(
        self,
        *,
        num_classes: int = 10,
        in_channels: int = 3,
        width_mult: float = 1.0,
        depth_mult: float = 1.0,
        dropout: float = 0.2,
        small_input: bool = True,
        stages: tuple[tuple[int, int, int, int, int], ...] = B0_STAGES,
    ) -> None:
        super().__init__()
        if width_mult <= 0:
            raise ValueError(f"width_mult must be > 0 (got {width_mult})")
        if depth_mult <= 0:
            raise ValueError(f"depth_mult must be > 0 (got {depth_mult})")

        def ch(c: int) -> int:
            return make_divisible(c * width_mult, 8)

        stem_ch = ch(32)
        features: list[nn.Module] = [
            conv_bn_act(in_channels, stem_ch, 3, stride=1 if small_input else 2)
        ]
        in_ch = stem_ch
        for idx, ((k, s, e, c, _), n) in enumerate(
            zip(stages, stage_repeats(depth_mult, stages), strict=True)
        ):
            if small_input and idx == _SMALL_INPUT_STAGE:
                s = 1
            out_ch = ch(c)
            blocks = []
            for i in range(n):
                blocks.append(
                    MBConv(in_ch, out_ch, kernel=k, stride=s if i == 0 else 1, expand_ratio=e)
                )
                in_ch = out_ch
            features.append(nn.Sequential(*blocks))
        self.num_features = ch(1280)
        features.append(conv_bn_act(in_ch, self.num_features, 1))
        self.features = nn.Sequential(*features)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(
            nn.Dropout(dropout), nn.Linear(self.num_features, num_classes)
        )
        init_mobilenet_weights(self, classifier=_uniform_classifier)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.pool(self.features(x)).flatten(1))


@register_model("efficientnet_b0", family="efficientnet")
def efficientnet_b0(
    *,
    num_classes: int = 10,
    in_channels: int = 3,
    width_mult: float = 1.0,
    depth_mult: float = 1.0,
    dropout: float = 0.2,
    small_input: bool = True,
) -> nn.Module:
    """EfficientNet-B0 (~4.0M parameters at width/depth 1, 10 classes).

    Resolution is not a constructor argument: scale the input instead.
    """
    return EfficientNet(
        num_classes=num_classes,
        in_channels=in_channels,
        width_mult=width_mult,
        depth_mult=depth_mult,
        dropout=dropout,
        small_input=small_input,
    )


@register_model("efficientnet_b0_tiny", family="efficientnet")
def efficientnet_b0_tiny(
    *,
    num_classes: int = 10,
    in_channels: int = 3,
    width_mult: float = 0.25,
    depth_mult: float = 0.34,
    dropout: float = 0.2,
    small_input: bool = True,
) -> nn.Module:
    """EfficientNet-B0 at width 0.25, depth 0.34: a tiny, fast net for tests."""
    return efficientnet_b0(
        num_classes=num_classes,
        in_channels=in_channels,
        width_mult=width_mult,
        depth_mult=depth_mult,
        dropout=dropout,
        small_input=small_input,
    )
