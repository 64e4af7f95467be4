"""Modelled energy per inference: first-order analytic models, labelled as such.

Energy per operation and per byte moved, by precision and memory level, lives
in an :class:`EnergyTable` (data, JSON round-trippable); :func:`layer_energy`
turns one :class:`~autocompress.hardware.signature.LayerSignature` into an
:class:`EnergyEstimate` and :func:`model_energy` sums layers. The shipped table,
:data:`HOROWITZ_45NM`, uses M. Horowitz, "Computing's energy problem (and what we
can do about it)", ISSCC 2014 (45 nm, 0.9 V).

:func:`row_stationary_movement` is the second model, for spatial accelerators
(Eyeriss): per-level access counts from a row-stationary reuse model, priced by
normalized costs per access (:data:`EYERISS_NORMALIZED_COSTS`).

Every estimate says how it was obtained in ``method``: ``"modelled:<table>"``
here, or ``"measured:rapl"`` / ``"measured:nvml"`` for figures a hardware
counter measured (``autocompress.runtime.energy_meters``, which measures;
this package only prices).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from autocompress.hardware.signature import LayerSignature

__all__ = [
    "DATA_MOVEMENT_LEVELS", "EYERISS_NORMALIZED_COSTS", "HOROWITZ_45NM", "KNOWN_MEMORY_LEVELS", "PRECISION_BITS",
    "DataMovement", "EnergyEstimate", "EnergyTable", "EnergyTableError", "layer_energy", "model_energy",
    "row_stationary_movement",
]

PJ_PER_MJ = 1e9  # 1 mJ = 1e9 pJ

#: Kernel precisions an energy table may price, and their operand width in bits (the default storage
#: width of weights and activations at that precision).
PRECISION_BITS: dict[str, int] = {"fp32": 32, "fp16": 16, "bf16": 16, "int32": 32, "int16": 16, "int8": 8}

#: Memory levels an energy table may price, smallest/cheapest first.
KNOWN_MEMORY_LEVELS: tuple[str, ...] = ("register", "sram_small", "sram_medium", "sram_large", "dram")
_REQUIRED_MEMORY_LEVELS = ("register", "dram")

# ---------------------------------------------------------------------------------------------------
# Horowitz, ISSCC 2014, 45 nm — the raw figures, one source each, kept as data.
# ---------------------------------------------------------------------------------------------------

#: Energy of one arithmetic operation, pJ. Horowitz ISSCC 2014, Fig. 1.1.9 ("Energy per operation"):
#: 8b add 0.03, 32b add 0.1, 8b mult 0.2, 32b mult 3.1, 16b FP add 0.4, 16b FP mult 1.1,
#: 32b FP add 0.9, 32b FP mult 3.7.
HOROWITZ_45NM_OP_PJ: dict[str, float] = {
    "int8_add": 0.03, "int32_add": 0.1, "int8_mult": 0.2, "int32_mult": 3.1,
    "fp16_add": 0.4, "fp16_mult": 1.1, "fp32_add": 0.9, "fp32_mult": 3.7,
}

#: Memory access energy, pJ per byte. Cache/SRAM and DRAM figures are Horowitz ISSCC 2014, Fig. 1.1.9,
#: given per 64-bit (8-byte) access; divided by 8 here.
HOROWITZ_45NM_MEMORY_PJ_PER_BYTE: dict[str, float] = {
    # Not in Horowitz's table. Assumption: ~0.1 pJ/B, an order of magnitude below the 8 KB SRAM, in line
    # with Eyeriss's normalised costs (Chen et al., ISCA 2016: register file ~1x a MAC, global buffer ~6x,
    # DRAM ~200x).
    "register": 0.1,
    "sram_small": 10.0 / 8,    # 8 KB cache, 10 pJ per 64-bit access -> 1.25 pJ/B (Horowitz 2014)
    "sram_medium": 20.0 / 8,   # 32 KB cache, 20 pJ per 64-bit access -> 2.5 pJ/B (Horowitz 2014)
    "sram_large": 100.0 / 8,   # 1 MB cache, 100 pJ per 64-bit access -> 12.5 pJ/B (Horowitz 2014)
    "dram": 1300.0 / 8,        # DRAM, 1.3-2.6 nJ per 64-bit access; low end taken -> 162.5 pJ/B (Horowitz 2014)
}


class EnergyTableError(ValueError):
    """An energy table that is malformed: negative or non-numeric energies, unknown keys, missing fields."""


def _check_energies(table_name: str, field_name: str, values: Any, known: Iterable[str]) -> dict[str, float]:
    if not isinstance(values, Mapping) or not values:
        raise EnergyTableError(f"energy table {table_name!r}: {field_name} must be a non-empty mapping, "
                               f"got {values!r}")
    known = tuple(known)
    out: dict[str, float] = {}
    for key, value in values.items():
        if key not in known:
            raise EnergyTableError(f"energy table {table_name!r}: {field_name} has unknown key {key!r}; "
                                   f"expected one of {list(known)}")
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
            raise EnergyTableError(f"energy table {table_name!r}: {field_name}[{key!r}] must be a finite "
                                   f"non-negative number (pJ), got {value!r}")
        out[key] = float(value)
    return out


@dataclass(frozen=True)
class EnergyTable:
    """Per-operation and per-byte energies of one device (or technology node); a plain data file.

    ``mac_pj`` maps a kernel precision (a key of :data:`PRECISION_BITS`) to the energy of one
    multiply-accumulate at that precision. ``memory_pj_per_byte`` maps a memory level (a key of
    :data:`KNOWN_MEMORY_LEVELS`; ``register`` and ``dram`` required) to the energy of moving one byte.
    ``on_chip_bytes`` is the on-chip buffer: a layer's working set up to that size is served from the
    ``on_chip_level`` memory (which must be priced), the rest from DRAM.
    """

    name: str
    source: str
    mac_pj: dict[str, float]
    memory_pj_per_byte: dict[str, float]
    on_chip_bytes: int
    on_chip_level: str = "sram_large"

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise EnergyTableError(f"energy table name must be a non-empty string, got {self.name!r}")
        if not isinstance(self.source, str):
            raise EnergyTableError(f"energy table {self.name!r}: source must be a string, got {self.source!r}")
        mac = _check_energies(self.name, "mac_pj", self.mac_pj, PRECISION_BITS)
        mem = _check_energies(self.name, "memory_pj_per_byte", self.memory_pj_per_byte, KNOWN_MEMORY_LEVELS)
        missing = [level for level in (*_REQUIRED_MEMORY_LEVELS, self.on_chip_level) if level not in mem]
        if missing:
            raise EnergyTableError(f"energy table {self.name!r}: memory_pj_per_byte is missing {missing} "
                                   f"(needs 'register', 'dram' and the on_chip_level {self.on_chip_level!r})")
        if isinstance(self.on_chip_bytes, bool) or not isinstance(self.on_chip_bytes, int) or self.on_chip_bytes < 0:
            raise EnergyTableError(f"energy table {self.name!r}: on_chip_bytes must be a non-negative integer, "
                                   f"got {self.on_chip_bytes!r}")
        # private copies: the caller's dicts can change without changing a frozen table
        object.__setattr__(self, "mac_pj", mac)
        object.__setattr__(self, "memory_pj_per_byte", mem)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "source": self.source, "mac_pj": dict(self.mac_pj),
                "memory_pj_per_byte": dict(self.memory_pj_per_byte), "on_chip_bytes": self.on_chip_bytes,
                "on_chip_level": self.on_chip_level}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EnergyTable:
        if not isinstance(data, Mapping):
            raise EnergyTableError(f"energy table must be a mapping, got {type(data).__name__}")
        required = ("name", "source", "mac_pj", "memory_pj_per_byte", "on_chip_bytes")
        allowed = (*required, "on_chip_level")
        label = data.get("name", "<unnamed>")
        missing = [k for k in required if k not in data]
        if missing:
            raise EnergyTableError(f"energy table {label!r}: missing field(s) {missing}")
        unknown = sorted(set(data) - set(allowed))
        if unknown:
            raise EnergyTableError(f"energy table {label!r}: unknown field(s) {unknown}; expected {list(allowed)}")
        return cls(**{k: data[k] for k in allowed if k in data})


HOROWITZ_45NM = EnergyTable(
    name="horowitz-45nm",
    source="M. Horowitz, 'Computing's energy problem (and what we can do about it)', ISSCC 2014, 45 nm; "
           "register-file energy assumed (~0.1 pJ/B, cf. Chen et al. ISCA 2016)",
    mac_pj={
        # int8 kernels (FBGEMM, QNNPACK/XNNPACK, oneDNN VNNI, TensorRT) multiply int8 x int8 and accumulate
        # into int32: a sum of many 16-bit products overflows anything narrower. -> 0.2 + 0.1 = 0.3 pJ
        "int8": HOROWITZ_45NM_OP_PJ["int8_mult"] + HOROWITZ_45NM_OP_PJ["int32_add"],
        "int32": HOROWITZ_45NM_OP_PJ["int32_mult"] + HOROWITZ_45NM_OP_PJ["int32_add"],  # 3.2 pJ
        # fp16 kernels (tensor cores, CPU fp16 GEMM) accumulate in fp32 for the same reason. -> 1.1 + 0.9 = 2.0
        "fp16": HOROWITZ_45NM_OP_PJ["fp16_mult"] + HOROWITZ_45NM_OP_PJ["fp32_add"],
        "fp32": HOROWITZ_45NM_OP_PJ["fp32_mult"] + HOROWITZ_45NM_OP_PJ["fp32_add"],  # 4.6 pJ
    },
    memory_pj_per_byte=dict(HOROWITZ_45NM_MEMORY_PJ_PER_BYTE),
    on_chip_bytes=1 << 20,  # the 1 MB SRAM the 'sram_large' figure is for
    on_chip_level="sram_large",
)


# ---------------------------------------------------------------------------------------------------
# Estimates and the analytic model
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EnergyEstimate:
    """Energy of one inference (or one layer of it), in millijoules, and how it was obtained.

    ``method`` is ``"modelled:<table name>"`` for the analytic model or ``"measured:<counter>"``
    for a hardware counter; measured estimates have no compute/memory split (both ``nan``).
    """

    total_mj: float
    compute_mj: float
    memory_mj: float
    method: str = "modelled"

    @property
    def is_measured(self) -> bool:
        return self.method.startswith("measured")


def _bits_of(precision: str) -> int:
    try:
        return PRECISION_BITS[precision]
    except KeyError:
        raise EnergyTableError(f"unknown precision {precision!r}; expected one of {list(PRECISION_BITS)}") from None


def _positive_bits(name: str, value: int | None, default: int) -> int:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


@dataclass(frozen=True)
class _LayerBytes:
    weight: float
    activation: float
    register: float

    @property
    def working_set(self) -> float:
        return self.weight + self.activation


def _layer_bytes(sig: LayerSignature, w_bits: int, a_bits: int) -> _LayerBytes:
    density = 1.0 - sig.sparsity
    weight = sig.weight_params * density * w_bits / 8  # nonzeros only; index overhead ignored
    activation = (sig.input_elements + sig.output_elements) * a_bits / 8
    # two operands per MAC (weight, activation), read from the register file at the width the kernel computes
    register = sig.macs * density * 2 * _bits_of(sig.precision) / 8
    return _LayerBytes(weight, activation, register)


def layer_energy(sig: LayerSignature, table: EnergyTable, *, w_bits: int | None = None,
                 a_bits: int | None = None) -> EnergyEstimate:
    """Modelled energy of one leaf op (one inference, batch 1), in mJ.

    A first-order model in the spirit of Yang, Chen & Sze, "Designing energy-efficient convolutional
    neural networks using energy-aware pruning", CVPR 2017: energy = computation + data movement, each a
    count times a per-unit energy from ``table``.

    * compute = effective MACs (``macs * (1 - sparsity)``) * ``mac_pj[precision]``;
    * memory = bytes moved * energy per byte at the level they come from:
      weights read once (``weight_params * (1 - sparsity) * w_bits / 8``: nonzeros only, sparse index
      overhead ignored), input activations read once and outputs written once (``elements * a_bits / 8``).
      The layer's working set (weights + input + output) is served from ``table.on_chip_level`` up to
      ``table.on_chip_bytes``; the part beyond that comes from DRAM. (Continuous in the working set, so
      a layer just over the buffer costs just over the on-chip figure; a layer far over it costs ~DRAM.)
    * plus a register-file access per MAC operand: two operands (weight, activation) per effective MAC,
      each the width of the kernel precision (a 4-bit weight is unpacked to int8 before it is used).

    ``w_bits`` / ``a_bits`` default to the width of ``sig.precision`` (int8 -> 8, fp16 -> 16, fp32 -> 32);
    pass them to model sub-8-bit storage, e.g. 4-bit packed weights computed on int8 kernels
    (``precision="int8", w_bits=4``).

    Not modelled: tiling re-reads (each byte moves once), partial-sum traffic, bias, non-linearities,
    pooling, control and static/leakage power. Expect the right order of magnitude and the right
    *ranking* between candidates, not joules on any real chip; measure for that.
    """
    if sig.precision not in table.mac_pj:
        raise EnergyTableError(f"energy table {table.name!r} has no MAC energy for precision {sig.precision!r} "
                               f"(layer {sig.key}); it prices {sorted(table.mac_pj)}")
    if not 0.0 <= sig.sparsity < 1.0:
        raise ValueError(f"layer {sig.key}: sparsity must be in [0, 1), got {sig.sparsity!r}")
    default_bits = _bits_of(sig.precision)
    w = _positive_bits("w_bits", w_bits, default_bits)
    a = _positive_bits("a_bits", a_bits, default_bits)

    b = _layer_bytes(sig, w, a)
    compute_pj = sig.macs * (1.0 - sig.sparsity) * table.mac_pj[sig.precision]
    memory_pj = float(_memory_pj(table, b.working_set, b.register))
    compute_mj, memory_mj = compute_pj / PJ_PER_MJ, memory_pj / PJ_PER_MJ
    return EnergyEstimate(total_mj=compute_mj + memory_mj, compute_mj=compute_mj, memory_mj=memory_mj,
                          method=f"modelled:{table.name}")


def _memory_pj(table: EnergyTable, working_set_bytes, register_bytes):
    """Working set from the on-chip level up to its size, the rest from DRAM, plus register reads."""
    mem = table.memory_pj_per_byte
    on_chip = np.minimum(working_set_bytes, float(table.on_chip_bytes))
    return (on_chip * mem[table.on_chip_level] + (working_set_bytes - on_chip) * mem["dram"]
            + register_bytes * mem["register"])


def energy_mj_arrays(table: EnergyTable, *, macs, weight_bytes, activation_bytes, precision) -> np.ndarray:
    """:func:`layer_energy` totals over arrays of layer variants (the cost model prices thousands at once).

    ``macs`` are effective MACs, ``weight_bytes`` the stored nonzero weights, ``activation_bytes`` input
    plus output activations, ``precision`` the kernel precision of each variant.
    """
    precision = np.asarray(precision)
    unknown = set(np.unique(precision)) - set(table.mac_pj)
    if unknown:
        raise EnergyTableError(f"energy table {table.name!r} has no MAC energy for precision(s) {sorted(unknown)}; "
                               f"it prices {sorted(table.mac_pj)}")
    mac_pj = np.vectorize(table.mac_pj.__getitem__, otypes=[float])(precision)
    operand_bytes = np.vectorize(lambda p: _bits_of(p) / 8, otypes=[float])(precision)
    macs = np.asarray(macs, dtype=float)
    working = np.asarray(weight_bytes, dtype=float) + np.asarray(activation_bytes, dtype=float)
    return (macs * mac_pj + _memory_pj(table, working, macs * 2 * operand_bytes)) / PJ_PER_MJ


def model_energy(signatures_with_bits: Iterable[tuple[LayerSignature, int, int]],
                 table: EnergyTable) -> EnergyEstimate:
    """Sum of :func:`layer_energy` over ``(signature, w_bits, a_bits)`` triples (``None`` bits = default)."""
    compute = memory = 0.0
    for sig, w_bits, a_bits in signatures_with_bits:
        e = layer_energy(sig, table, w_bits=w_bits, a_bits=a_bits)
        compute += e.compute_mj
        memory += e.memory_mj
    return EnergyEstimate(total_mj=compute + memory, compute_mj=compute, memory_mj=memory,
                          method=f"modelled:{table.name}")


# ---------------------------------------------------------------------------------------------------
# Data movement in a spatial array (Eyeriss, row stationary)
# ---------------------------------------------------------------------------------------------------

#: Energy of one access at each level, relative to one MAC, for 16-bit words: Y.-H. Chen, J. Emer, V. Sze,
#: "Eyeriss: A Spatial Architecture for Energy-Efficient Dataflow for Convolutional Neural Networks",
#: ISCA 2016 (normalized energy costs, 65 nm): register file 1x, array / NoC (PE to PE) 2x, global buffer 6x,
#: DRAM 200x.
EYERISS_NORMALIZED_COSTS: dict[str, float] = {"mac": 1.0, "rf": 1.0, "noc": 2.0, "glb": 6.0, "dram": 200.0}
#: the levels data moves through, innermost first
DATA_MOVEMENT_LEVELS: tuple[str, ...] = ("rf", "noc", "glb", "dram")


@dataclass(frozen=True)
class DataMovement:
    """One layer's effective MACs and its accesses per level, in words of ``word_bits`` bits.

    ``words[level][data]``: ``data`` is ``weights``, ``inputs`` or ``psums`` (partial sums; at DRAM, the
    final outputs); an element narrower than a word counts as that fraction of a word.
    """

    macs: float
    words: dict[str, dict[str, float]]
    word_bits: int

    def energy_pj(self, costs: Mapping[str, float] = EYERISS_NORMALIZED_COSTS, unit_pj: float = 1.0
                  ) -> dict[str, float]:
        """pJ per level (and ``mac``): accesses x normalized cost x ``unit_pj`` (the energy of one MAC)."""
        missing = [k for k in ("mac", *DATA_MOVEMENT_LEVELS) if k not in costs]
        if missing:
            raise ValueError(f"normalized costs miss {missing}; expected keys {['mac', *DATA_MOVEMENT_LEVELS]}")
        out = {"mac": self.macs * costs["mac"] * unit_pj}
        for level in DATA_MOVEMENT_LEVELS:
            out[level] = sum(self.words[level].values()) * costs[level] * unit_pj
        return out

    def estimate(self, costs: Mapping[str, float] = EYERISS_NORMALIZED_COSTS, unit_pj: float = 1.0,
                 label: str = "eyeriss") -> EnergyEstimate:
        pj = self.energy_pj(costs, unit_pj)
        compute = pj["mac"] / PJ_PER_MJ
        memory = sum(pj[level] for level in DATA_MOVEMENT_LEVELS) / PJ_PER_MJ
        return EnergyEstimate(total_mj=compute + memory, compute_mj=compute, memory_mj=memory,
                              method=f"modelled:{label}")


def row_stationary_movement(sig: LayerSignature, *, w_bits: int, a_bits: int, psum_bits: int = 16,
                            word_bits: int = 16, array_columns: int = 14, glb_bytes: int = 108 * 1024
                            ) -> DataMovement:
    """Accesses per level of one layer on a row-stationary array (Eyeriss), from a simple reuse model.

    Every effective MAC (``macs * (1 - sparsity)``) uses one weight, one input and
    updates one partial sum. A use is served by the innermost level holding the
    datum; a level is accessed (uses / reuse captured below it) times:

    * register file (in the PE): every use -- 1 weight, 1 input, 2 psum accesses
      (read and write) per MAC;
    * array / NoC (PE to PE): weights once per output-row pass of a PE (a filter row
      stays in the PE's RF while it slides along the row: reuse ``ow``); inputs once
      per ``kw / stride`` sliding windows; a psum once per ``kw`` products (a PE's 1-D
      convolution, then passed up its column);
    * global buffer: weights once per group of ``array_columns`` output rows (a filter
      row is multicast across the PEs that compute different output rows); inputs once
      per ``kh / stride`` filter rows (an input row is reused diagonally across PE
      rows); psums read and written once per ``kw x kh`` products (accumulated over a
      PE column, then parked per input channel);
    * DRAM: every weight, input and output once; weights are read again for each
      tile of inputs and psums beyond ``glb_bytes``.

    Weights count ``w_bits``, inputs and outputs ``a_bits`` and psums ``psum_bits``
    per element, as a fraction of a ``word_bits`` word (the width the normalized
    costs are quoted for). A layer with no reuse (a linear layer on one token) thus
    reads every weight from DRAM for a single MAC. Not modelled: RF capacity, how
    many filters or channels share a pass, batch reuse, NoC multicast energy.
    """
    if not 0.0 <= sig.sparsity < 1.0:
        raise ValueError(f"layer {sig.key}: sparsity must be in [0, 1), got {sig.sparsity!r}")
    for name, value in (("w_bits", w_bits), ("a_bits", a_bits), ("psum_bits", psum_bits), ("word_bits", word_bits),
                        ("array_columns", array_columns), ("glb_bytes", glb_bytes)):
        _positive_bits(name, value, 1)
    kh, kw = sig.kernel_size
    sh, sw = sig.stride
    oh, ow = sig.out_hw
    density = 1.0 - sig.sparsity
    uses = sig.macs * density
    weights = sig.weight_params * density
    w, a, p = w_bits / word_bits, a_bits / word_bits, psum_bits / word_bits  # words per element

    w_rf, w_array = ow, min(oh, array_columns)
    i_rf, i_array = max(1.0, kw / sw), max(1.0, kh / sh)
    p_rf, p_array = kw, kh
    working = sig.input_elements * a_bits / 8 + sig.output_elements * psum_bits / 8
    weight_reads = math.ceil(working / glb_bytes) if working > glb_bytes else 1
    words = {
        "rf": {"weights": uses * w, "inputs": uses * a, "psums": 2 * uses * p},
        "noc": {"weights": uses / w_rf * w, "inputs": uses / i_rf * a, "psums": uses / p_rf * p},
        "glb": {"weights": uses / (w_rf * w_array) * w, "inputs": uses / (i_rf * i_array) * a,
                "psums": 2 * uses / (p_rf * p_array) * p},
        "dram": {"weights": weights * weight_reads * w, "inputs": sig.input_elements * a,
                 "psums": sig.output_elements * a},
    }
    return DataMovement(macs=uses, words=words, word_bits=word_bits)
