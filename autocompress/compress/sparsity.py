"""Unstructured magnitude sparsity as a fixed weight mask (a parametrization).

The mask is chosen once from the weights' magnitudes when the model is
materialized and kept through fine-tuning, so the zeros a cost table priced
are the zeros the deployed model has.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrize


class MagnitudeMask(nn.Module):
    """Parametrization: weight * mask, with the smallest-magnitude fraction zeroed."""

    def __init__(self, weight: torch.Tensor, amount: float):
        super().__init__()
        if not 0.0 <= amount < 1.0:
            raise ValueError(f"sparsity must be in [0, 1), got {amount}")
        n_zero = int(round(amount * weight.numel()))
        mask = torch.ones(weight.numel(), dtype=weight.dtype, device=weight.device)
        if n_zero:
            order = torch.argsort(weight.detach().abs().flatten(), stable=True)
            mask[order[:n_zero]] = 0.0
        self.register_buffer("mask", mask.view_as(weight))

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return w * self.mask

    @property
    def density(self) -> float:
        return float(self.mask.mean())


def sparsify_layer(layer: nn.Module, amount: float) -> None:
    if amount > 0.0:
        parametrize.register_parametrization(layer, "weight", MagnitudeMask(layer.weight, amount))


def layer_sparsity(layer: nn.Module) -> float:
    """Fraction of the layer's weights held at zero by a mask (0.0 without one)."""
    if parametrize.is_parametrized(layer, "weight"):
        for p in layer.parametrizations.weight:
            if isinstance(p, MagnitudeMask):
                return 1.0 - p.density
    return 0.0
