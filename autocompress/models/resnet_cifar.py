"""CIFAR ResNets (He et al. 2016, section 4.2): 3 stages of n BasicBlocks.

Depth = 6n + 2; stage widths 16/32/64 scaled by ``width_mult``.  Shortcuts are
option B (1x1 conv + BN where the shape changes, identity otherwise) so that
structured pruning can couple channels across the residual adds.
"""

from __future__ import annotations

from torch import Tensor, nn

from .registry import register_model

__all__ = ["BasicBlock", "ResNetCifar", "resnet20", "resnet32", "resnet56"]


def _scaled(channels: int, width_mult: float) -> int:
    return max(1, int(round(channels * width_mult)))


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN, plus shortcut, then ReLU."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        if stride != 1 or in_planes != planes:
            self.shortcut: nn.Module = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes),
            )
        else:
            self.shortcut = nn.Sequential()  # identity
        self.relu2 = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + self.shortcut(x))


class ResNetCifar(nn.Module):
    """ResNet-(6n+2) for small images; works for any input >= 8x8 (adaptive pooling)."""

    def __init__(
        self,
        num_blocks: int,
        *,
        num_classes: int = 10,
        in_channels: int = 3,
        width_mult: float = 1.0,
    ) -> None:
        super().__init__()
        if num_blocks < 1:
            raise ValueError(f"num_blocks must be >= 1 (got {num_blocks})")
        if width_mult <= 0:
            raise ValueError(f"width_mult must be > 0 (got {width_mult})")
        widths = [_scaled(c, width_mult) for c in (16, 32, 64)]
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU()
        in_planes = widths[0]
        stages = []
        for i, planes in enumerate(widths):
            blocks = []
            for j in range(num_blocks):
                stride = 2 if (i > 0 and j == 0) else 1
                blocks.append(BasicBlock(in_planes, planes, stride))
                in_planes = planes
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_planes, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.kaiming_normal_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        x = self.avgpool(x).flatten(1)
        return self.fc(x)


@register_model("resnet20", family="resnet_cifar")
def resnet20(*, num_classes: int = 10, in_channels: int = 3, width_mult: float = 1.0) -> nn.Module:
    """ResNet-20 (n=3), ~0.27M parameters at width 1."""
    return ResNetCifar(3, num_classes=num_classes, in_channels=in_channels, width_mult=width_mult)


@register_model("resnet32", family="resnet_cifar")
def resnet32(*, num_classes: int = 10, in_channels: int = 3, width_mult: float = 1.0) -> nn.Module:
    """ResNet-32 (n=5), ~0.46M parameters at width 1."""
    return ResNetCifar(5, num_classes=num_classes, in_channels=in_channels, width_mult=width_mult)


@register_model("resnet56", family="resnet_cifar")
def resnet56(*, num_classes: int = 10, in_channels: int = 3, width_mult: float = 1.0) -> nn.Module:
    """ResNet-56 (n=9), ~0.85M parameters at width 1."""
    return ResNetCifar(9, num_classes=num_classes, in_channels=in_channels, width_mult=width_mult)
