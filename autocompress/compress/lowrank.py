"""Low-rank factorization by truncated SVD.

Linear(in, out) -> Linear(in, r, no bias) then Linear(r, out).
Conv2d(in, out, k) -> Conv2d(in, r, k, same stride/padding/dilation) then a
1x1 Conv2d(r, out): the weight reshaped to (out, in*k*k) is factorized, so at
full rank the pair reproduces the layer exactly. The singular values are split
evenly (sqrt) between the two factors to keep their scales balanced for
fine-tuning.
"""

from __future__ import annotations

import torch
from torch import nn


class LowRank(nn.Sequential):
    """The two factors of a factorized layer; sits where the layer was, under its name."""

    @property
    def rank(self) -> int:
        first = self[0]
        return first.out_channels if isinstance(first, nn.Conv2d) else first.out_features


def _svd_factors(matrix: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    u, s, vh = torch.linalg.svd(matrix.detach().double(), full_matrices=False)
    if not 1 <= rank <= s.numel():
        raise ValueError(f"rank must be in 1..{s.numel()}, got {rank}")
    root = s[:rank].sqrt()
    return (u[:, :rank] * root).to(matrix.dtype), (root[:, None] * vh[:rank]).to(matrix.dtype)


def factorize_linear(layer: nn.Linear, rank: int) -> LowRank:
    left, right = _svd_factors(layer.weight, rank)
    first = nn.Linear(layer.in_features, rank, bias=False)
    second = nn.Linear(rank, layer.out_features, bias=layer.bias is not None)
    with torch.no_grad():
        first.weight.copy_(right)
        second.weight.copy_(left)
        if layer.bias is not None:
            second.bias.copy_(layer.bias)
    return LowRank(first, second).to(layer.weight.device)


def factorize_conv(layer: nn.Conv2d, rank: int) -> LowRank:
    if layer.groups != 1:
        raise ValueError("grouped and depthwise convolutions are not factorized")
    out_c, in_c, kh, kw = layer.weight.shape
    left, right = _svd_factors(layer.weight.reshape(out_c, -1), rank)
    first = nn.Conv2d(in_c, rank, (kh, kw), stride=layer.stride, padding=layer.padding,
                      dilation=layer.dilation, padding_mode=layer.padding_mode, bias=False)
    second = nn.Conv2d(rank, out_c, 1, bias=layer.bias is not None)
    with torch.no_grad():
        first.weight.copy_(right.reshape(rank, in_c, kh, kw))
        second.weight.copy_(left.reshape(out_c, rank, 1, 1))
        if layer.bias is not None:
            second.bias.copy_(layer.bias)
    return LowRank(first, second).to(layer.weight.device)


def factorize(layer: nn.Module, rank: int) -> LowRank:
    if isinstance(layer, nn.Linear):
        return factorize_linear(layer, rank)
    if isinstance(layer, nn.Conv2d):
        return factorize_conv(layer, rank)
    raise TypeError(f"cannot factorize {type(layer).__name__}")
