"""MobileNetV2 (Sandler et al. 2018), CIFAR variant.

As in common CIFAR ports: the stem conv has stride 1 and the second stage
(t=6, c=24) has stride 1 instead of 2, so a 32x32 input ends at 4x4.
``features`` is ``[stem, stage_1, ..., stage_7, last_conv]``: every (t, c, n, s)
row is its own ``nn.Sequential`` of :class:`InvertedResidual` blocks.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn

from .registry import register_model

__all__ = ["InvertedResidual", "MobileNetV2", "make_divisible", "mobilenetv2_cifar", "mobilenetv2_cifar_050"]

#: (expand ratio t, output channels c, repeats n, first stride s), CIFAR strides.
CIFAR_SETTINGS: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),
    (6, 24, 2, 1),  # stride 2 in the ImageNet table
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round ``value`` to the nearest multiple of ``divisor``, never below 90% of it."""
    min_value = divisor if min_value is None else min_value
    new = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if new < 0.9 * value:
        new += divisor
    return new


def conv_bn_relu6(
    in_ch: int, out_ch: int, kernel: int = 3, stride: int = 1, groups: int = 1
) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.ReLU6(),
    )


def _normal_classifier(linear: nn.Linear) -> None:
    nn.init.normal_(linear.weight, 0, 0.01)


def init_mobilenet_weights(model: nn.Module, classifier: Callable[[nn.Linear], None] = _normal_classifier) -> None:
    """torchvision's MobileNet-family initialisation: Kaiming (fan out) convolutions, unit BatchNorm, zero biases;
    ``classifier`` initialises each Linear's weight (MobileNetV2: normal(0, 0.01))."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            classifier(m)
            nn.init.zeros_(m.bias)


class InvertedResidual(nn.Module):
    """1x1 expand (skipped when t=1) → 3x3 depthwise → 1x1 linear projection."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2 (got {stride})")
        hidden = int(round(in_ch * expand_ratio))
        self.use_res_connect = stride == 1 and in_ch == out_ch
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(conv_bn_relu6(in_ch, hidden, kernel=1))
        layers += [
            conv_bn_relu6(hidden, hidden, kernel=3, stride=stride, groups=hidden),
            nn.Conv2d(hidden, out_ch, 1, bias=False),
            nn.BatchNorm2d(out_ch),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        if self.use_res_connect:
            return x + self.conv(x)
        return self.conv(x)


class MobileNetV2(nn.Module):
    def __init__(
        self,
        *,
        num_classes: int = 10,
        in_channels: int = 3,
        width_mult: float = 1.0,
        dropout: float = 0.2,
        settings: tuple[tuple[int, int, int, int], ...] = CIFAR_SETTINGS,
        stem_stride: int = 1,
        round_nearest: int = 8,
    ) -> None:
        super().__init__()
        if width_mult <= 0:
            raise ValueError(f"width_mult must be > 0 (got {width_mult})")
        in_ch = make_divisible(32 * width_mult, round_nearest)
        self.last_channel = make_divisible(1280 * max(1.0, width_mult), round_nearest)
        features: list[nn.Module] = [conv_bn_relu6(in_channels, in_ch, stride=stem_stride)]
        for t, c, n, s in settings:
            out_ch = make_divisible(c * width_mult, round_nearest)
            blocks = []
            for i in range(n):
                blocks.append(InvertedResidual(in_ch, out_ch, s if i == 0 else 1, t))
                in_ch = out_ch
            features.append(nn.Sequential(*blocks))
        features.append(conv_bn_relu6(in_ch, self.last_channel, kernel=1))
        self.features = nn.Sequential(*features)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(
            nn.Dropout(dropout), nn.Linear(self.last_channel, num_classes)
        )
        init_mobilenet_weights(self)


    def forward(self, x: Tensor) -> Tensor:
        x = self.pool(self.features(x)).flatten(1)
        return self.classifier(x)


@register_model("mobilenetv2_cifar", family="mobilenetv2")
def mobilenetv2_cifar(
    *,
    num_classes: int = 10,
    in_channels: int = 3,
    width_mult: float = 1.0,
    dropout: float = 0.2,
) -> nn.Module:
    """MobileNetV2 for 32x32 inputs (~2.24M parameters at width 1, 10 classes)."""
    return MobileNetV2(
        num_classes=num_classes, in_channels=in_channels, width_mult=width_mult, dropout=dropout
    )


@register_model("mobilenetv2_cifar_050", family="mobilenetv2")
def mobilenetv2_cifar_050(
    *,
    num_classes: int = 10,
    in_channels: int = 3,
    dropout: float = 0.2,
) -> nn.Module:
    """MobileNetV2 for 32x32 inputs at width 0.5 (~0.70M parameters; the classifier's 1280 features stay).

    A name of its own, as timm's ``mobilenetv2_050``, so that profiles, calibrations and
    studies tell it apart from the width-1 model.
    """
    return mobilenetv2_cifar(num_classes=num_classes, in_channels=in_channels, width_mult=0.5, dropout=dropout)
