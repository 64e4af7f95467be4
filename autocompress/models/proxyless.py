"""ProxylessNAS mobile search space (Cai et al. 2019) as buildable networks.

One network of the space: a 3x3 stride-2 stem (3 -> 32), a fixed first
block (expand 1, kernel 3, 32 -> 16), then six stages of widths 24, 40, 80,
96, 192 and 320 (repeats 4, 4, 4, 4, 4, 1; first strides 2, 2, 2, 1, 2, 1)
in which every block picks an expand ratio and a kernel size, and every block
but a stage's first may be skipped (an identity); then a 1x1 convolution
320 -> 1280, global average pooling and a linear classifier.

``blocks`` is the per-block choice list, one entry for each of the 21 stage
blocks: ``(expand, kernel)`` or ``None`` (skipped). The space's choices are
:data:`EXPAND_CHOICES` and :data:`KERNEL_CHOICES`; other positive expand
ratios and odd kernels also build, so a network outside what a published table
covers can be described and is then refused by the pricer, not here.

:func:`block_specs` describes a built network block by block at an input
resolution, as plain dicts with the fields ProxylessNAS's latency estimator
puts into its lookup-table keys (input and output HxWxC, expand ratio,
kernel, stride, identity skip), so per-block tables can price it without
this package's pricing layer knowing about torch models.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor, nn

from .mobilenetv2 import conv_bn_relu6, init_mobilenet_weights
from .registry import register_model

__all__ = [
    "EXPAND_CHOICES",
    "KERNEL_CHOICES",
    "PROXYLESS_STAGES",
    "MBInvertedConv",
    "ProxylessBlock",
    "ProxylessMobile",
    "block_specs",
    "proxyless_mobile",
    "stage_of_blocks",
]

#: (output channels, repeats, first stride) of the six searched stages
PROXYLESS_STAGES: tuple[tuple[int, int, int], ...] = (
    (24, 4, 2),
    (40, 4, 2),
    (80, 4, 2),
    (96, 4, 1),
    (192, 4, 2),
    (320, 1, 1),
)
EXPAND_CHOICES: tuple[int, ...] = (3, 6)
KERNEL_CHOICES: tuple[int, ...] = (3, 5, 7)
STEM_CHANNELS = 32
FIRST_BLOCK_CHANNELS = 16
FEATURE_MIX_CHANNELS = 1280

BlockChoice = tuple[int, int] | None


def stage_of_blocks() -> list[tuple[int, bool]]:
    """For each of the 21 choice slots: its stage index and whether it is the stage's first block."""
    return [(s, i == 0) for s, (_, repeats, _) in enumerate(PROXYLESS_STAGES) for i in range(repeats)]


class MBInvertedConv(nn.Module):
    """1x1 expand (absent at expand 1) -> kxk depthwise -> 1x1 linear projection, ReLU6 as in ProxylessNAS."""

    def __init__(self, in_ch: int, out_ch: int, *, kernel: int, stride: int, expand: int) -> None:
        super().__init__()
        self.in_channels, self.out_channels = in_ch, out_ch
        self.kernel_size, self.stride, self.expand_ratio = kernel, stride, expand
        self.mid_channels = in_ch * expand
        self.inverted_bottleneck = conv_bn_relu6(in_ch, self.mid_channels, kernel=1) if expand != 1 else None
        self.depth_conv = conv_bn_relu6(
            self.mid_channels, self.mid_channels, kernel=kernel, stride=stride, groups=self.mid_channels
        )
        self.point_linear = nn.Sequential(
            nn.Conv2d(self.mid_channels, out_ch, 1, bias=False), nn.BatchNorm2d(out_ch)
        )

    def forward(self, x: Tensor) -> Tensor:
        if self.inverted_bottleneck is not None:
            x = self.inverted_bottleneck(x)
        return self.point_linear(self.depth_conv(x))


class ProxylessBlock(nn.Module):
    """An inverted-residual block, with an identity shortcut where stride is 1 and widths match."""

    def __init__(self, in_ch: int, out_ch: int, *, kernel: int, stride: int, expand: int) -> None:
        super().__init__()
        self.conv = MBInvertedConv(in_ch, out_ch, kernel=kernel, stride=stride, expand=expand)
        self.residual = stride == 1 and in_ch == out_ch

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv(x)
        return x + out if self.residual else out


def _check_choices(blocks: Sequence[Sequence[int] | None]) -> list[BlockChoice]:
    slots = stage_of_blocks()
    if isinstance(blocks, str) or len(blocks) != len(slots):
        raise ValueError(f"blocks: expected {len(slots)} entries (one per stage block: repeats "
                         f"{[n for _, n, _ in PROXYLESS_STAGES]}), got {len(blocks)}")
    out: list[BlockChoice] = []
    for i, (choice, (stage, first)) in enumerate(zip(blocks, slots, strict=True)):
        if choice is None:
            if first:
                raise ValueError(f"blocks[{i}]: the first block of stage {stage + 1} (width "
                                 f"{PROXYLESS_STAGES[stage][0]}) changes the shape and cannot be skipped")
            out.append(None)
            continue
        if isinstance(choice, str) or len(choice) != 2:
            raise ValueError(f"blocks[{i}]: expected (expand, kernel) or None, got {choice!r}")
        expand, kernel = choice
        if not isinstance(expand, int) or isinstance(expand, bool) or expand < 1:
            raise ValueError(f"blocks[{i}]: expand must be a positive integer ratio, got {expand!r}")
        if not isinstance(kernel, int) or isinstance(kernel, bool) or kernel < 1 or kernel % 2 == 0:
            raise ValueError(f"blocks[{i}]: kernel must be a positive odd integer, got {kernel!r}")
        out.append((expand, kernel))
    return out


class ProxylessMobile(nn.Module):
    """One network of the ProxylessNAS mobile space; ``choices`` keeps the per-block list it was built from."""

    def __init__(
        self,
        *,
        blocks: Sequence[Sequence[int] | None],
        num_classes: int = 1000,
        in_channels: int = 3,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.choices = _check_choices(blocks)
        self.first_conv = conv_bn_relu6(in_channels, STEM_CHANNELS, kernel=3, stride=2)
        self.first_block = ProxylessBlock(STEM_CHANNELS, FIRST_BLOCK_CHANNELS, kernel=3, stride=1, expand=1)
        layers: list[nn.Module] = []  # self.blocks[i] is built from choice blocks[i]
        in_ch = FIRST_BLOCK_CHANNELS
        slot = 0
        for width, repeats, first_stride in PROXYLESS_STAGES:
            for i in range(repeats):
                choice = self.choices[slot]
                slot += 1
                if choice is None:
                    layers.append(nn.Identity())  # skipped: the shape does not change
                    continue
                expand, kernel = choice
                stride = first_stride if i == 0 else 1
                layers.append(ProxylessBlock(in_ch, width, kernel=kernel, stride=stride, expand=expand))
                in_ch = width
        self.blocks = nn.Sequential(*layers)
        self.feature_mix_layer = conv_bn_relu6(in_ch, FEATURE_MIX_CHANNELS, kernel=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(FEATURE_MIX_CHANNELS, num_classes))
        init_mobilenet_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        x = self.feature_mix_layer(self.blocks(self.first_block(self.first_conv(x))))
        return self.classifier(self.pool(x).flatten(1))


def _conv_out(size: int, conv: nn.Conv2d, dim: int) -> int:
    k, s, p, d = conv.kernel_size[dim], conv.stride[dim], conv.padding[dim], conv.dilation[dim]
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


def block_specs(model: ProxylessMobile, input_hw: int | tuple[int, int]) -> list[dict[str, Any]]:
    """``model`` block by block at input ``input_hw``, as ProxylessNAS's latency estimator keys it.

    Stem ``Conv``, one ``expanded_conv`` per block that is not skipped (a
    skipped block costs nothing and has no entry), ``Conv_1`` (the 1x1
    feature mix) and ``Logits`` (pooling and the classifier). Shapes are
    ``[H, W, C]``, computed from each layer's own kernel, stride and padding;
    ``expand`` is the ratio, ``idskip`` whether the block adds its input.
    ``name`` is the module's qualified name, for messages only.
    """
    if not isinstance(model, ProxylessMobile):
        raise TypeError(f"block_specs describes a ProxylessMobile network, got {type(model).__name__}")
    h, w = (input_hw, input_hw) if isinstance(input_hw, int) else input_hw
    stem = model.first_conv[0]
    out_h, out_w = _conv_out(h, stem, 0), _conv_out(w, stem, 1)
    specs: list[dict[str, Any]] = [{"name": "first_conv", "type": "Conv", "input_hwc": [h, w, stem.in_channels],
                                    "output_hwc": [out_h, out_w, stem.out_channels]}]
    h, w = out_h, out_w
    for name, block in [("first_block", model.first_block),
                        *((f"blocks.{i}", b) for i, b in enumerate(model.blocks))]:
        if not isinstance(block, ProxylessBlock):
            continue
        conv = block.conv
        depthwise = conv.depth_conv[0]
        out_h, out_w = _conv_out(h, depthwise, 0), _conv_out(w, depthwise, 1)
        specs.append({"name": name, "type": "expanded_conv", "input_hwc": [h, w, conv.in_channels],
                      "output_hwc": [out_h, out_w, conv.out_channels], "expand": conv.expand_ratio,
                      "kernel": conv.kernel_size, "stride": conv.stride, "idskip": block.residual})
        h, w = out_h, out_w
    mix = model.feature_mix_layer[0]
    specs.append({"name": "feature_mix_layer", "type": "Conv_1", "input_hwc": [h, w, mix.in_channels],
                  "output_hwc": [h, w, mix.out_channels]})
    linear = model.classifier[-1]
    specs.append({"name": "classifier", "type": "Logits", "input_hwc": [h, w, linear.in_features],
                  "output_hwc": [linear.out_features]})
    return specs


@register_model("proxyless_mobile", family="generic")
def proxyless_mobile(
    *,
    num_classes: int = 1000,
    in_channels: int = 3,
    blocks: Sequence[Sequence[int] | None] | None = None,
    dropout: float = 0.0,
) -> nn.Module:
    """A ProxylessNAS mobile-space network (224x224 ImageNet inputs; any size runs).

    ``blocks``: 21 entries of ``(expand, kernel)`` or ``None`` (skipped);
    default: every block at expand 6, kernel 3 (the MobileNetV2-like point of
    the space, ~4.7M parameters at 1000 classes). Its search space is the
    generic one: channel pruning would leave the widths a per-block table
    was measured for.
    """
    if blocks is None:
        blocks = [(6, 3)] * len(stage_of_blocks())
    return ProxylessMobile(blocks=blocks, num_classes=num_classes, in_channels=in_channels, dropout=dropout)
