"""Mixed-precision quantization-aware fake quantization with a straight-through estimator.

Weights: symmetric, per output channel. Activations: asymmetric, per tensor,
with a running min/max observer (updated in train mode, frozen in eval), applied
to each quantized layer's input. Bits 2..8; 32 means "not quantized". The model
stays a plain float model that trains with ordinary PyTorch; deployment to real
int8 kernels happens at export. The rounding itself is PyTorch's fused
``fake_quantize_per_*_affine`` kernels (one pass forward, one backward, the
gradient passed straight through inside the grid's range): written out as
clamp/round/scale tensor ops it was 5x slower and dominated a quantized
fine-tune step on a CPU.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrize

FLOAT_BITS = 32


class WeightFakeQuant(nn.Module):
    """Parametrization: weight -> its per-channel symmetric b-bit grid (STE gradient)."""

    def __init__(self, bits: int):
        super().__init__()
        if not 2 <= bits <= 8:
            raise ValueError(f"weight bits must be in 2..8, got {bits}")
        self.bits = bits

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        qmax = 2 ** (self.bits - 1) - 1
        scale = w.detach().abs().flatten(1).amax(dim=1).clamp_min(1e-12) / qmax
        zero_point = torch.zeros(scale.shape, dtype=torch.int32, device=w.device)
        return torch.fake_quantize_per_channel_affine(w, scale, zero_point, 0, -qmax, qmax)

    def extra_repr(self) -> str:
        return f"bits={self.bits}"


class ActFakeQuant(nn.Module):
    """Per-tensor asymmetric b-bit fake quantization with an EMA min/max observer."""

    def __init__(self, bits: int, momentum: float = 0.1):
        super().__init__()
        if not 2 <= bits <= 8:
            raise ValueError(f"activation bits must be in 2..8, got {bits}")
        self.bits = bits
        self.momentum = momentum
        self.register_buffer("min_val", torch.zeros(()))
        self.register_buffer("max_val", torch.zeros(()))
        self.register_buffer("observed", torch.zeros((), dtype=torch.bool))

    @torch.no_grad()
    def _observe(self, x: torch.Tensor) -> None:
        lo, hi = x.min(), x.max()
        if not bool(self.observed):
            self.min_val.copy_(lo)
            self.max_val.copy_(hi)
            self.observed.fill_(True)
        else:
            self.min_val.lerp_(lo, self.momentum)
            self.max_val.lerp_(hi, self.momentum)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            self._observe(x)
        if bool(self.observed):
            lo, hi = self.min_val, self.max_val
        else:  # never calibrated: quantize on this batch's own range rather than not at all
            lo, hi = x.detach().min(), x.detach().max()
        lo, hi = torch.clamp(lo, max=0.0), torch.clamp(hi, min=0.0)  # zero stays exactly representable
        levels = 2**self.bits - 1
        scale = ((hi - lo) / levels).clamp_min(1e-12).float().reshape(1)
        zero_point = torch.round(-lo / scale).to(torch.int32).reshape(1)
        return torch.fake_quantize_per_tensor_affine(x, scale, zero_point, 0, levels)

    def extra_repr(self) -> str:
        return f"bits={self.bits}"


def _quantize_input(module: nn.Module, args: tuple) -> tuple:
    return (module.input_quant(args[0]), *args[1:])


def quantize_layer(layer: nn.Module, w_bits: int, a_bits: int) -> None:
    """Fake-quantize a Conv2d/Linear in place: its weight and its input."""
    if w_bits != FLOAT_BITS:
        parametrize.register_parametrization(layer, "weight", WeightFakeQuant(w_bits))
    if a_bits != FLOAT_BITS:
        layer.input_quant = ActFakeQuant(a_bits)
        layer.register_forward_pre_hook(_quantize_input)


def layer_bits(layer: nn.Module) -> tuple[int, int]:
    """(weight bits, activation bits) a layer runs at; 32 for float."""
    w_bits = FLOAT_BITS
    if parametrize.is_parametrized(layer, "weight"):
        for p in layer.parametrizations.weight:
            if isinstance(p, WeightFakeQuant):
                w_bits = p.bits
    a_bits = layer.input_quant.bits if isinstance(getattr(layer, "input_quant", None), ActFakeQuant) else FLOAT_BITS
    return w_bits, a_bits
