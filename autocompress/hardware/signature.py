"""Layer signatures: the fixed-format keys of a hardware cost table.

A signature holds everything about one leaf operation that can change its cost
on a device: op type, channels, kernel, stride, padding, groups, input size and
the precision the kernel really runs at. A factorized layer is two leaf ops, so
it is two signatures. Bit-widths map to kernel precisions through the profile
(below 8 bits a CPU still runs int8 kernels), and sparsity is part of the key
only on runtimes with sparse kernels.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from autocompress.space import LayerConfig

_KEY = re.compile(
    r"^(?P<op>conv):in(?P<cin>\d+):out(?P<cout>\d+):k(?P<kh>\d+)x(?P<kw>\d+):s(?P<sh>\d+)x(?P<sw>\d+)"
    r":p(?P<ph>\d+)x(?P<pw>\d+):g(?P<g>\d+):hw(?P<h>\d+)x(?P<w>\d+):(?P<prec>[a-z0-9]+)(?::sp(?P<sp>[0-9.]+))?$"
    r"|^(?P<lop>linear):in(?P<lcin>\d+):out(?P<lcout>\d+):t(?P<t>\d+):(?P<lprec>[a-z0-9]+)(?::sp(?P<lsp>[0-9.]+))?$"
)


class SignatureError(ValueError):
    """A malformed signature key."""


@dataclass(frozen=True, order=True)
class LayerSignature:
    op: str  # "conv" | "linear"
    in_channels: int
    out_channels: int
    kernel_size: tuple[int, int] = (1, 1)
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    groups: int = 1
    in_hw: tuple[int, int] = (1, 1)  # linear: (tokens, 1)
    precision: str = "fp32"
    sparsity: float = 0.0

    @property
    def out_hw(self) -> tuple[int, int]:
        if self.op == "linear":
            return self.in_hw
        return tuple(  # type: ignore[return-value]
            (size + 2 * p - k) // s + 1
            for size, p, k, s in zip(self.in_hw, self.padding, self.kernel_size, self.stride, strict=True)
        )

    @property
    def macs(self) -> int:
        kh, kw = self.kernel_size
        oh, ow = self.out_hw
        return self.out_channels * (self.in_channels // self.groups) * kh * kw * oh * ow

    @property
    def weight_params(self) -> int:
        kh, kw = self.kernel_size
        return self.out_channels * (self.in_channels // self.groups) * kh * kw

    @property
    def input_elements(self) -> int:
        return self.in_channels * self.in_hw[0] * self.in_hw[1]

    @property
    def output_elements(self) -> int:
        oh, ow = self.out_hw
        return self.out_channels * oh * ow

    @property
    def key(self) -> str:
        sp = f":sp{self.sparsity:.2f}" if self.sparsity else ""
        if self.op == "linear":
            return f"linear:in{self.in_channels}:out{self.out_channels}:t{self.in_hw[0]}:{self.precision}{sp}"
        (kh, kw), (sh, sw), (ph, pw), (h, w) = self.kernel_size, self.stride, self.padding, self.in_hw
        return (f"conv:in{self.in_channels}:out{self.out_channels}:k{kh}x{kw}:s{sh}x{sw}:p{ph}x{pw}"
                f":g{self.groups}:hw{h}x{w}:{self.precision}{sp}")

    @classmethod
    def parse(cls, key: str) -> LayerSignature:
        m = _KEY.match(key)
        if not m:
            raise SignatureError(f"malformed layer signature {key!r}; expected e.g. "
                                 "'conv:in16:out32:k3x3:s1x1:p1x1:g1:hw32x32:fp32' or 'linear:in64:out10:t1:int8'")
        d = m.groupdict()
        if d["lop"]:
            return cls("linear", int(d["lcin"]), int(d["lcout"]), in_hw=(int(d["t"]), 1),
                       precision=d["lprec"], sparsity=float(d["lsp"] or 0.0))
        return cls("conv", int(d["cin"]), int(d["cout"]), (int(d["kh"]), int(d["kw"])), (int(d["sh"]), int(d["sw"])),
                   (int(d["ph"]), int(d["pw"])), int(d["g"]), (int(d["h"]), int(d["w"])), d["prec"],
                   float(d["sp"] or 0.0))

    def __str__(self) -> str:
        return self.key


def leaf_signatures(cfg: LayerConfig, precision: str, sparsity: float = 0.0) -> list[LayerSignature]:
    """One signature per leaf op the layer becomes (two for a factorized layer)."""
    if cfg.op == "linear":
        if cfg.rank is None:
            return [LayerSignature("linear", cfg.in_channels, cfg.out_channels, in_hw=cfg.in_hw,
                                   precision=precision, sparsity=sparsity)]
        return [LayerSignature("linear", cfg.in_channels, cfg.rank, in_hw=cfg.in_hw, precision=precision, sparsity=sparsity),
                LayerSignature("linear", cfg.rank, cfg.out_channels, in_hw=cfg.in_hw, precision=precision, sparsity=sparsity)]
    base = LayerSignature("conv", cfg.in_channels, cfg.out_channels, cfg.kernel_size, cfg.stride, cfg.padding,
                          cfg.groups, cfg.in_hw, precision, sparsity)
    if cfg.rank is None:
        return [base]
    first = LayerSignature("conv", cfg.in_channels, cfg.rank, cfg.kernel_size, cfg.stride, cfg.padding, 1,
                           cfg.in_hw, precision, sparsity)
    second = LayerSignature("conv", cfg.rank, cfg.out_channels, (1, 1), (1, 1), (0, 0), 1, first.out_hw,
                            precision, sparsity)
    return [first, second]
