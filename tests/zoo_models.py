"""Awkward toy topologies for graph / pruning tests.

Each builder takes ``num_classes=10, in_channels=3`` and returns a small
``nn.Module`` with a single output, usable as ``tests.zoo_models:<name>`` in
``create_model``.  All work for any input of at least 8x8 (adaptive pooling).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["TOYS", "depthwise_se", "grouped_conv", "residual_concat", "squeezenet_tiny"]


def _cbr(
    in_ch: int, out_ch: int, kernel: int = 3, stride: int = 1, groups: int = 1
) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.ReLU(),
    )


class Fire(nn.Module):
    """SqueezeNet fire module: squeeze 1x1 → cat(expand 1x1, expand 3x3)."""

    def __init__(self, in_ch: int, squeeze: int, expand1x1: int, expand3x3: int) -> None:
        super().__init__()
        self.squeeze = nn.Conv2d(in_ch, squeeze, 1)
        self.squeeze_act = nn.ReLU()
        self.expand1x1 = nn.Conv2d(squeeze, expand1x1, 1)
        self.expand3x3 = nn.Conv2d(squeeze, expand3x3, 3, padding=1)
        self.expand_act = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        s = self.squeeze_act(self.squeeze(x))
        return self.expand_act(torch.cat([self.expand1x1(s), self.expand3x3(s)], dim=1))


class SqueezeNetTiny(nn.Module):
    def __init__(self, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, 16, 3, stride=1, padding=1), nn.ReLU())
        self.fire1 = Fire(16, 4, 8, 8)
        self.pool = nn.MaxPool2d(2)
        self.fire2 = Fire(16, 6, 12, 12)
        self.fire3 = Fire(24, 6, 12, 12)
        # SqueezeNet-style conv classifier, then global pooling.
        self.classifier = nn.Conv2d(24, num_classes, 1)
        self.gap = nn.AdaptiveAvgPool2d(1)

    def forward(self, x: Tensor) -> Tensor:
        x = self.fire1(self.stem(x))
        x = self.fire3(self.fire2(self.pool(x)))
        return self.gap(self.classifier(x)).flatten(1)


class ResidualConcat(nn.Module):
    """A residual add whose result is concatenated with a parallel branch."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        self.stem = _cbr(in_channels, 16)
        self.res_conv1 = _cbr(16, 16)
        self.res_conv2 = nn.Sequential(
            nn.Conv2d(16, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16)
        )
        self.branch = _cbr(16, 8, kernel=1)
        self.relu = nn.ReLU()
        self.mix = _cbr(24, 32, stride=2)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(32, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem(x)
        r = self.relu(x + self.res_conv2(self.res_conv1(x)))
        y = torch.cat([r, self.branch(x)], dim=1)
        return self.fc(self.gap(self.mix(y)).flatten(1))


class DepthwiseSE(nn.Module):
    """Depthwise separable conv followed by a squeeze-excite sigmoid gate."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        self.stem = _cbr(in_channels, 16)
        self.dw = _cbr(16, 16, groups=16)
        self.pw = _cbr(16, 32, kernel=1)
        self.se_pool = nn.AdaptiveAvgPool2d(1)
        self.se_reduce = nn.Conv2d(32, 8, 1)
        self.se_act = nn.ReLU()
        self.se_expand = nn.Conv2d(8, 32, 1)
        self.se_gate = nn.Sigmoid()
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(32, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.pw(self.dw(self.stem(x)))
        s = self.se_gate(self.se_expand(self.se_act(self.se_reduce(self.se_pool(x)))))
        x = x * s
        return self.fc(self.gap(x).flatten(1))


class GroupedConv(nn.Module):
    """A grouped 3x3 conv (groups=4) between two dense convs."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        self.stem = _cbr(in_channels, 16)
        self.grouped = _cbr(16, 32, stride=2, groups=4)
        self.pw = _cbr(32, 32, kernel=1)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(32, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.pw(self.grouped(self.stem(x)))
        return self.fc(self.gap(x).flatten(1))


def squeezenet_tiny(num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    return SqueezeNetTiny(num_classes=num_classes, in_channels=in_channels)


def residual_concat(num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    return ResidualConcat(num_classes=num_classes, in_channels=in_channels)


def depthwise_se(num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    return DepthwiseSE(num_classes=num_classes, in_channels=in_channels)


def grouped_conv(num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    return GroupedConv(num_classes=num_classes, in_channels=in_channels)


#: Name → builder of every toy, for parametrized tests.
TOYS = {
    "squeezenet_tiny": squeezenet_tiny,
    "residual_concat": residual_concat,
    "depthwise_se": depthwise_se,
    "grouped_conv": grouped_conv,
}
