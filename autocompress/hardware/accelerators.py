"""Analytic accelerator models: a bit-flexible array (BitFusion-like) and a row-stationary one (Eyeriss-like).

On a CPU every bit-width below 8 runs on int8 kernels, so a mixed-precision
search has nothing to win in latency there. Bit-flexible accelerators are
where 2..8-bit choices pay off (the hardware HAQ searched against), and data
movement, not arithmetic, is where a spatial accelerator spends its energy
(Eyeriss). Each model prices one layer signature at its precision
``"w{w}a{a}"`` from the parameters kept in the profile
(:class:`~autocompress.hardware.profile.BitFusionModel`,
:class:`~autocompress.hardware.profile.EyerissModel`): latency is a roofline,
max(compute, memory) per layer, and energy is arithmetic plus bytes moved per
memory level. They are models: right in trend and ranking, not figures of a
chip (``experiments/check_bitfusion.py`` compares the BitFusion model with a
BitFusion simulator's table).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from pydantic import ValidationError

from autocompress.files import validation_problems
from autocompress.hardware.energy import PJ_PER_MJ, row_stationary_movement
from autocompress.hardware.profile import (
    ACCELERATOR_MODELS,
    AcceleratorModel,
    BitFusionModel,
    DeviceInfo,
    EnergySpec,
    EyerissModel,
    HardwareProfile,
    ProfileError,
    Provenance,
)
from autocompress.hardware.signature import LayerSignature

__all__ = ["ACCELERATOR_MODELS", "LayerCost", "accelerator_model", "accelerator_profile", "bricks", "layer_cost"]


@dataclass(frozen=True)
class LayerCost:
    """One layer on an accelerator model: latency (ms) and energy (mJ), with what bounds and what spends them.

    ``bound`` is ``"compute"`` or the memory that limits the layer (``"dram"``,
    ``"input_buffer"``); ``energy_pj`` splits the energy by where it goes.
    """

    latency_ms: float
    energy_mj: float
    compute_ms: float
    memory_ms: float
    bound: str
    energy_pj: dict[str, float]


def layer_cost(model: AcceleratorModel, sig: LayerSignature) -> LayerCost:
    """Price ``sig`` (its precision ``"w{w}a{a}"``, its sparsity) on ``model``."""
    if isinstance(model, BitFusionModel):
        return _bitfusion(model, sig)
    if isinstance(model, EyerissModel):
        return _eyeriss(model, sig)
    raise ProfileError(f"no pricing for accelerator model {type(model).__name__}; known: {sorted(ACCELERATOR_MODELS)}")


def _shape(sig: LayerSignature) -> tuple[int, int, int, int, float]:
    """(groups, in channels per group, out channels per group, output pixels, weight density)."""
    if not 0.0 <= sig.sparsity < 1.0:
        raise ProfileError(f"layer {sig.key}: sparsity must be in [0, 1), got {sig.sparsity!r}")
    oh, ow = sig.out_hw
    return sig.groups, sig.in_channels // sig.groups, sig.out_channels // sig.groups, oh * ow, 1.0 - sig.sparsity


# -- BitFusion ------------------------------------------------------------------------------------------
def _operand(model: BitFusionModel, bits: int) -> tuple[int, int]:
    """(bricks, stored bits) of one operand."""
    if model.operand_rounding == "power_of_two":
        width = max(model.brick_bits, 1 << math.ceil(math.log2(bits)))
        return math.ceil(width / model.brick_bits), width
    return math.ceil(bits / model.brick_bits), bits


def bricks(model: BitFusionModel, w_bits: int, a_bits: int) -> int:
    """BitBrick-cycles of one w x a MAC; by default ceil(w/2) * ceil(a/2) (8x8: 16, 4x4: 4, 2x2: 1)."""
    return _operand(model, w_bits)[0] * _operand(model, a_bits)[0]


def _bitfusion(model: BitFusionModel, sig: LayerSignature) -> LayerCost:
    """BitFusion-like pricing; the model in numbers.

    Array: input channels go down the ``rows``, output channels across the
    ``columns``; a Fusion Unit does ``bricks_per_unit`` brick-cycles per clock, so it
    sums ``bricks_per_unit / bricks`` products a cycle (or takes several cycles for one
    wider than 8x8). A group's input channels take ``rows_g = min(cin_g, rows)`` rows
    and its output channels ``min(cout_g, columns)`` columns; groups smaller than the
    array sit side by side on its diagonal (``side = min(rows // rows_g, columns //
    min(cout_g, columns))`` at once: a depthwise layer runs 16 channels at a time).
    Each output pixel then takes ``passes`` cycles over the group's reduction of
    ``cin_g * kh * kw`` products (nonzero weights only)::

        passes = ceil(cin_g * kh * kw * bricks / (rows_g * bricks_per_unit))
        cycles = ceil(groups / side) * ceil(cout_g / columns) * out_pixels * passes

    Memory, bytes scaling with the operand widths (weights w bits, activations a bits,
    outputs re-quantized to a bits on the way out): DRAM moves weights, inputs and
    outputs once, plus re-reads when a layer does not fit its buffers (inputs again per
    weight tile of ``weight_buffer_bytes``, or weights again per input tile of
    ``input_buffer_bytes``, whichever moves less); the input buffer feeds each
    activation once per cycle to a row, broadcast to the columns in use
    (``macs * a/8 / min(columns, cout_g)`` bytes). Latency is the roofline
    max(cycles / clock, DRAM bytes / DRAM bandwidth, input-buffer bytes / its
    bandwidth) plus ``layer_overhead_ms``.

    Energy: ``macs * bricks * brick_pj`` + weights read from each Fusion Unit's own
    bank (``macs * w/8`` bytes at ``local_pj_per_byte``) + input-buffer reads and
    ``accumulator_bits`` partial sums written and read once per reduction pass
    (``buffer_pj_per_byte``) + DRAM bytes at ``dram_pj_per_byte``.
    """
    w_bits, a_bits = model.bits_of(sig.precision)
    groups, cin_g, cout_g, pixels, density = _shape(sig)
    (w_bricks, w_stored), (a_bricks, a_stored) = _operand(model, w_bits), _operand(model, a_bits)
    per_mac = w_bricks * a_bricks
    kh, kw = sig.kernel_size
    rows_g, cols_g = min(cin_g, model.rows), min(cout_g, model.columns)
    side = max(1, min(model.rows // rows_g, model.columns // cols_g))
    passes = math.ceil(cin_g * kh * kw * density * per_mac / (rows_g * model.bricks_per_unit))
    cycles = math.ceil(groups / side) * math.ceil(cout_g / model.columns) * pixels * passes
    macs = sig.macs * density

    weight_bytes = sig.weight_params * density * w_stored / 8
    input_bytes = sig.input_elements * a_stored / 8
    output_bytes = sig.output_elements * a_stored / 8
    weight_tiles = math.ceil(weight_bytes / model.weight_buffer_bytes)
    input_tiles = math.ceil(input_bytes / model.input_buffer_bytes)
    dram_bytes = output_bytes + min(weight_bytes + input_bytes * weight_tiles, input_bytes + weight_bytes * input_tiles)
    input_feed = macs * a_stored / 8 / min(model.columns, cout_g)
    psum_bytes = sig.output_elements * passes * 2 * model.accumulator_bits / 8

    times = {"compute": cycles / model.clock_hz, "dram": dram_bytes / model.dram_bytes_per_s,
             "input_buffer": input_feed / model.input_buffer_bytes_per_s}
    bound = max(times, key=times.__getitem__)
    energy = {"bricks": macs * per_mac * model.brick_pj,
              "weight_banks": macs * w_stored / 8 * model.local_pj_per_byte,
              "buffers": (input_feed + psum_bytes) * model.buffer_pj_per_byte,
              "dram": dram_bytes * model.dram_pj_per_byte}
    memory_s = max(times["dram"], times["input_buffer"])
    return LayerCost(latency_ms=times[bound] * 1e3 + model.layer_overhead_ms,
                     energy_mj=sum(energy.values()) / PJ_PER_MJ, compute_ms=times["compute"] * 1e3,
                     memory_ms=memory_s * 1e3, bound=bound, energy_pj=energy)


# -- Eyeriss --------------------------------------------------------------------------------------------
def _eyeriss(model: EyerissModel, sig: LayerSignature) -> LayerCost:
    """Eyeriss-like pricing: row-stationary mapping for time, data movement for energy.

    A PE set is ``kh`` PE rows (one filter row each) by up to ``columns`` PEs (one
    output row each); ``rows // kh`` sets stack vertically (different channels), so
    ``min(rows, kh * (rows // kh)) * min(oh, columns)`` PEs do one 16-bit MAC a cycle
    each (a filter taller than the array folds onto all rows). Latency is the
    roofline max(MACs / busy PEs / clock, DRAM bytes / DRAM bandwidth) +
    ``layer_overhead_ms``; bits change it only through DRAM bytes. Energy is
    :func:`~autocompress.hardware.energy.row_stationary_movement` priced at the
    model's normalized costs times ``unit_pj``.
    """
    w_bits, a_bits = model.bits_of(sig.precision)
    _, _, _, _, density = _shape(sig)
    kh, _ = sig.kernel_size
    oh, _ = sig.out_hw
    rows_busy = kh * (model.rows // kh) if kh <= model.rows else model.rows
    busy = rows_busy * min(oh, model.columns)
    macs = sig.macs * density
    movement = row_stationary_movement(sig, w_bits=w_bits, a_bits=a_bits, psum_bits=model.psum_bits,
                                       word_bits=model.word_bits, array_columns=model.columns,
                                       glb_bytes=model.glb_bytes)
    dram_bytes = sum(movement.words["dram"].values()) * model.word_bits / 8
    times = {"compute": macs / busy / model.clock_hz, "dram": dram_bytes / model.dram_bytes_per_s}
    bound = max(times, key=times.__getitem__)
    costs = {"mac": model.mac_cost, "rf": model.rf_cost, "noc": model.noc_cost, "glb": model.glb_cost,
             "dram": model.dram_cost}
    energy = movement.energy_pj(costs, model.unit_pj)
    return LayerCost(latency_ms=times[bound] * 1e3 + model.layer_overhead_ms,
                     energy_mj=sum(energy.values()) / PJ_PER_MJ, compute_ms=times["compute"] * 1e3,
                     memory_ms=times["dram"] * 1e3, bound=bound, energy_pj=energy)


# -- profiles -------------------------------------------------------------------------------------------
def accelerator_model(name: str, **params: Any) -> AcceleratorModel:
    """A named model (``"bitfusion"``, ``"eyeriss"``) with its defaults, ``params`` overriding some."""
    if name not in ACCELERATOR_MODELS:
        raise ProfileError(f"unknown accelerator model {name!r}; expected one of {sorted(ACCELERATOR_MODELS)}")
    try:
        return ACCELERATOR_MODELS[name](**params)  # type: ignore[return-value]
    except ValidationError as exc:
        raise ProfileError(f"accelerator model {name!r}: {validation_problems(exc)}") from None


_DESCRIPTION = {
    "bitfusion": lambda m: (f"BitFusion-like bit-flexible array (model): {m.rows}x{m.columns} fusion units x "
                            f"{m.bricks_per_unit} {m.brick_bits}-bit bricks, {m.clock_hz / 1e6:g} MHz, DRAM "
                            f"{m.dram_bytes_per_s / 1e9:g} GB/s"),
    "eyeriss": lambda m: (f"Eyeriss-like row-stationary array (model): {m.rows}x{m.columns} PEs at {m.word_bits} bits, "
                          f"{m.clock_hz / 1e6:g} MHz, {m.glb_bytes // 1024} KiB global buffer, DRAM "
                          f"{m.dram_bytes_per_s / 1e9:g} GB/s"),
}


def accelerator_profile(model: AcceleratorModel | str, *, name: str, device: str | None = None,
                        command: str = "") -> HardwareProfile:
    """An analytic profile priced by ``model`` (an instance, or a name for its defaults): any space, any bits."""
    if isinstance(model, str):
        model = accelerator_model(model)
    label = model.model
    describe = _DESCRIPTION[label](model)
    energy_notes = {"bitfusion": "modelled: brick energy x bricks + bytes moved x per-level energy (45 nm estimates)",
                    "eyeriss": "modelled: row-stationary data movement x normalized access costs "
                               "(RF, NoC, global buffer, DRAM) x unit_pj"}[label]
    wide = model.unquantized_bits
    return HardwareProfile(
        name=name, kind="analytic", device=DeviceInfo(name=device or f"{label} accelerator model", notes=describe),
        runtime=f"analytic-{label}", threads=1, batch_size=1, repetitions="not measured",
        precisions={f"w2a2..w{model.max_bits}a{model.max_bits}": f"every bit-width pair priced by the {label} model",
                    f"w{wide}a{wide}": f"not quantized (32 in the space): {wide}-bit fixed point"},
        accelerator=model, interpolation="none",
        energy=EnergySpec(method="modelled", notes=energy_notes),
        provenance=Provenance(command=command, date=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                              source=f"analytic {label} model"),
    )
