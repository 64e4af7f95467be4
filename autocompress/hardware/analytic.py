"""Analytic profiles: a device described by a roofline and an energy table, not measured.

For an accelerator one cannot run on (or that does not exist yet), each layer
signature is priced as max(compute time, memory time) from peak MAC rates per
precision and memory bandwidth, plus a fixed per-layer overhead; energy comes
from the profile's energy table (e.g. 45 nm per-operation and per-byte
figures). The profile says ``kind: analytic`` and its energy method says
``modelled``.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timezone

from autocompress.hardware.energy import PRECISION_BITS, EnergyTable
from autocompress.hardware.profile import (
    DeviceInfo,
    EnergySpec,
    HardwareProfile,
    PrecisionRule,
    ProfileError,
    Provenance,
    Roofline,
)
from autocompress.hardware.signature import LayerSignature


def roofline_ms(sig: LayerSignature, *, peak_macs_per_s: Mapping[str, float], bandwidth_bytes_per_s: float,
                layer_overhead_ms: float = 0.0) -> float:
    if sig.precision not in peak_macs_per_s:
        raise ProfileError(f"no peak MAC rate for precision {sig.precision!r} (layer {sig.key})")
    width = PRECISION_BITS[sig.precision] / 8
    moved = (sig.weight_params * (1 - sig.sparsity) + sig.input_elements + sig.output_elements) * width
    compute_s = sig.macs * (1 - sig.sparsity) / peak_macs_per_s[sig.precision]
    return max(compute_s, moved / bandwidth_bytes_per_s) * 1e3 + layer_overhead_ms


def analytic_profile(
    *,
    name: str,
    device: str,
    peak_macs_per_s: Mapping[str, float],
    bandwidth_bytes_per_s: float,
    energy_table: EnergyTable,
    layer_overhead_ms: float = 0.0,
    precision_rules: list[PrecisionRule] | None = None,
    sparse_kernels: bool = False,
    command: str = "",
) -> HardwareProfile:
    """A profile that prices every signature from a roofline: no table, any space."""
    rates = ", ".join(f"{p} {r / 1e9:g} GMAC/s" for p, r in peak_macs_per_s.items())
    return HardwareProfile(
        name=name, kind="analytic",
        device=DeviceInfo(name=device, notes=f"roofline: {rates}; {bandwidth_bytes_per_s / 1e9:g} GB/s; "
                                            f"{layer_overhead_ms} ms per layer"),
        runtime="analytic-roofline", threads=1, batch_size=1, repetitions="not measured",
        precisions={p: f"modelled at {r / 1e9:g} GMAC/s" for p, r in peak_macs_per_s.items()},
        precision_rules=precision_rules if precision_rules is not None else
        [PrecisionRule(max_w_bits=8, max_a_bits=8, precision="int8")],
        sparse_kernels=sparse_kernels, interpolation="none",
        roofline=Roofline(peak_macs_per_s=dict(peak_macs_per_s), bandwidth_bytes_per_s=bandwidth_bytes_per_s,
                          layer_overhead_ms=layer_overhead_ms),
        energy=EnergySpec(method="modelled", table=energy_table.to_dict(),
                          notes=f"energy modelled from {energy_table.source}"),
        provenance=Provenance(command=command, date=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                              source="analytic roofline"),
    )
