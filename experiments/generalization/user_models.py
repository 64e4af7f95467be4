"""Two models of the kind a user brings, for checking a profile on models its calibration never saw.

Loaded as ``user_models:se_cnn`` and ``user_models:vgg_head`` with this
folder on PYTHONPATH. Their shapes are unlike the zoo's ResNets: squeeze-
excite gates (1x1 convolutions on a 1x1 map, a broadcast multiply), max
pooling, and a Linear head larger than the convolutions before it.
"""

from __future__ import annotations

import torch
from torch import nn


def _conv_bn_relu(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class SqueezeExcite(nn.Module):
    """Channel gate: global average pool, 1x1 conv down, ReLU, 1x1 conv up, sigmoid, multiply."""

    def __init__(self, channels: int, reduced: int):
        super().__init__()
        self.reduce = nn.Conv2d(channels, reduced, 1)
        self.expand = nn.Conv2d(reduced, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = x.mean((2, 3), keepdim=True)
        gate = torch.sigmoid(self.expand(torch.relu(self.reduce(gate))))
        return x * gate


class SEBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = _conv_bn_relu(cin, cout, stride)
        self.conv2 = nn.Sequential(nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout))
        self.se = SqueezeExcite(cout, max(4, cout // 4))
        self.shortcut = nn.Sequential() if stride == 1 and cin == cout else nn.Sequential(
            nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.se(self.conv2(self.conv1(x))) + self.shortcut(x))


class SECNN(nn.Module):
    """A small squeeze-excite residual network for 32x32 images."""

    def __init__(self, in_channels: int = 3, num_classes: int = 10, widths: tuple[int, ...] = (24, 48, 96)):
        super().__init__()
        self.stem = _conv_bn_relu(in_channels, widths[0])
        blocks, cin = [], widths[0]
        for i, width in enumerate(widths):
            blocks += [SEBlock(cin, width, 1 if i == 0 else 2), SEBlock(width, width, 1)]
            cin = width
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.blocks(self.stem(x))), 1))


class VGGHead(nn.Module):
    """VGG-like: conv stacks with max pooling, then a 4096 -> 512 Linear head (most of the weights)."""

    def __init__(self, in_channels: int = 3, num_classes: int = 10, widths: tuple[int, ...] = (32, 64, 128, 256)):
        super().__init__()
        layers, cin = [], in_channels
        for i, width in enumerate(widths):
            layers += [_conv_bn_relu(cin, width), _conv_bn_relu(width, width)]
            if i < len(widths) - 1:
                layers.append(nn.MaxPool2d(2))
            cin = width
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(cin * 4 * 4, 512), nn.ReLU(inplace=True),
                                  nn.Linear(512, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def se_cnn(in_channels: int = 3, num_classes: int = 10) -> nn.Module:
    return SECNN(in_channels, num_classes)


def vgg_head(in_channels: int = 3, num_classes: int = 10) -> nn.Module:
    return VGGHead(in_channels, num_classes)
