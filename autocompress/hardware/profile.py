"""HardwareProfile: a device + runtime and its cost tables, as a versioned JSON file.

A profile says what it is (measured / analytic / imported; device, runtime,
threads, batch, repetitions), which precisions run on real kernels, how it
prices each layer signature, how its per-layer sum is calibrated to whole-model
cost, and how well that predicted reality when validated. It is data: loaded
with ``json`` and validated with pydantic, never unpickled.
"""

from __future__ import annotations

import os
import platform
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from autocompress.files import path_exists, read_json, validation_problems, write_json
from autocompress.hardware.predictor import Finite, SignaturePredictor
from autocompress.hardware.signature import LayerSignature, SignatureError
from autocompress.shipped import shipped_dir

SCHEMA_VERSION = 1
NonNegative = Annotated[float, Field(ge=0.0, allow_inf_nan=False)]
Positive = Annotated[float, Field(gt=0.0, allow_inf_nan=False)]
#: where an energy figure came from: a hardware counter, a published table, or the energy model
MeasuredEnergy = Literal["measured:rapl", "measured:nvml"]


class ProfileError(ValueError):
    """A profile that cannot be loaded, or that cannot price a signature."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DeviceInfo(_Strict):
    name: str
    cpu: str = ""
    cores: int | None = None
    gpu: str | None = None
    os: str = ""
    notes: str = ""


class Provenance(_Strict):
    """How the file came to be: enough to redo it."""

    command: str
    date: str
    versions: dict[str, str] = {}
    source: str = ""  # for imported tables: where the numbers come from


class Entry(_Strict):
    """Cost of one layer signature."""

    latency_ms: NonNegative  # the value the cost model uses (for measurements: min of round medians)
    std_ms: NonNegative = 0.0
    count: Annotated[int, Field(ge=1)] = 1
    energy_mj: NonNegative | None = None  # measured or imported energy; None: the energy model prices it
    #: the counter that measured ``energy_mj``; None: as the profile's ``energy.method`` says (older files)
    energy_method: MeasuredEnergy | Literal["imported"] | None = None

    @model_validator(mode="after")
    def _method_needs_a_figure(self) -> Entry:
        if self.energy_method is not None and self.energy_mj is None:
            raise ValueError(f"energy_method {self.energy_method!r} without an energy_mj it describes")
        return self


class PrecisionRule(_Strict):
    """Layers with w_bits <= max_w_bits and a_bits <= max_a_bits run on ``precision`` kernels."""

    max_w_bits: int
    max_a_bits: int
    precision: str


#: summed over a candidate's layers: isolated-layer latencies, layer counts and output activations
#: (millions), each split between float kernels and quantized kernels
SUMMED_FEATURES = ("sum_float_ms", "sum_quant_ms", "layers_float", "layers_quant", "mact_float", "mact_quant")
#: float<->quantized transitions between consecutive units in execution order, and the activations (millions)
#: they convert: the QuantizeLinear / DequantizeLinear (and layout changes) a mixed graph runs at every switch,
#: which an all-int8 graph runs once and no isolated layer sees
BOUNDARY_FEATURES = ("boundaries", "boundary_mact")
#: the precision whose in-graph factor scales a model's quantized layer sums (HardwareProfile.quant_context)
QUANT_CONTEXT = "int8"
#: what a calibration may weigh: the sums, the boundaries, and whether any layer runs on quantized kernels
CALIBRATION_FEATURES = (*SUMMED_FEATURES, *BOUNDARY_FEATURES, "any_quant")


def calibration_key(model: str, input_shape: Sequence[int]) -> str:
    """Where a model's own calibration at one input shape is kept: ``"resnet20@3x32x32"``."""
    return f"{model}@{'x'.join(str(int(d)) for d in input_shape)}"


def model_keys(model: str | None, input_shape: Sequence[int] | None = None) -> list[str]:
    """What a model's calibrations and validations are filed under, most specific first: the model at this
    input shape (:func:`calibration_key`), then its bare name (older profiles). None: only the pooled ones."""
    if not model:
        return []
    return ([calibration_key(model, input_shape)] if input_shape is not None else []) + [model]


def calibration_features(summed: Mapping[str, Any]) -> dict[str, Any]:
    """CALIBRATION_FEATURES from the SUMMED_FEATURES and BOUNDARY_FEATURES of one candidate or (as arrays) of
    many."""
    return {**{name: summed[name] for name in (*SUMMED_FEATURES, *BOUNDARY_FEATURES)},
            "any_quant": (np.asarray(summed["layers_quant"]) > 0).astype(float)}


def in_context(features: Mapping[str, Any], quant_context: float) -> dict[str, Any]:
    """Calibration features with the quantized layer sums scaled by a model's ``quant_context``
    (:meth:`HardwareProfile.quant_context`): what a calibration is fitted on and applied to."""
    return {**features, "sum_quant_ms": np.asarray(features["sum_quant_ms"], dtype=float) * quant_context}


class Calibration(_Strict):
    """From the sum of isolated layer timings to whole-model latency.

    latency = sum(coefficients[f] * feature f) + offset_ms, features in CALIBRATION_FEATURES.
    Isolated layers each pay the runtime's per-call overhead and the layout and
    (de)quantize conversions that a whole graph pays once or fuses away (layer
    terms come out negative); activation terms price what the table does not
    hold (adds, activations, pooling); boundary terms the Quantize/Dequantize
    conversions at every switch between float and int8 units.
    ``any_quant`` (1 when any layer is quantized) is the fixed cost of a model
    with an int8 part: without it, fitted on ONNX Runtime validations, float
    models came out 1-4% over and int8-containing ones under.
    """

    coefficients: Annotated[dict[str, Finite], Field(min_length=1)] = {"sum_float_ms": 1.0, "sum_quant_ms": 1.0}
    offset_ms: Finite = 0.0
    form: str = "identity"
    fitted_on: int = 0  # how many measured whole models
    models: list[str] = []  # the models it was fitted on

    @field_validator("coefficients")
    @classmethod
    def _known_features(cls, v: dict[str, float]) -> dict[str, float]:
        unknown = set(v) - set(CALIBRATION_FEATURES)
        if unknown:
            raise ValueError(f"unknown calibration feature(s) {sorted(unknown)}; known: {list(CALIBRATION_FEATURES)}")
        return v

    def apply(self, features):
        """``features``: mapping of feature name -> value or array."""
        return sum(c * features[name] for name, c in self.coefficients.items()) + self.offset_ms


class GraphOps(_Strict):
    """What one model's graph runs between its layers, timed where the runtime runs it.

    The table prices layers; a whole graph also runs operations no layer
    signature holds: squeeze-excite gates (reduce, broadcast multiply), adds
    and activations the runtime does not fuse into a layer, pooling, and the
    layout reorders and quantize/dequantize steps around them. They are timed
    per node in the model's own uncompressed float build and its all-int8 build
    (the runtime's per-node profile, less the profiler's own cost per node),
    summed over the non-layer nodes, and put on the table's scale by the
    anchors (``autocompress.runtime.graph_ops``). A candidate's share scales with the
    activations its layers write in each precision, against the uncompressed
    model's: ``float_ms * mact_float / mact + quant_ms * mact_quant / mact``.
    Where the narrowest uniform build was timed too (``narrow_*``), each
    precision's figure lies instead on the line through both builds at the
    candidate's activations: a node's fixed cost (a squeeze-excite gate's
    reduce and multiply cost about the same at any width) is then not scaled
    away in narrow candidates.

    The same runs time the layers in context: ``layers_ms`` is the build's
    whole-graph time less its operations between layers, ``table_ms`` what the
    table says for the same layers alone. Their ratio (:meth:`layer_factor`) is how
    this model's layers run in its graph against the table: below 1 where a
    graph amortizes the per-call overhead and layout reorders an isolated layer
    pays (ResNet-20's float layers about 0.85, its int8 ones about 0.65), about 1
    where a graph's weights do not stay in a core's cache as one layer's do
    between calls (a VGG-like model with 13 MB of float weights).
    Against the same ratio of the models a calibration was fitted on
    (:meth:`HardwareProfile.context_ratios`), it says whether that calibration
    carries over to this model. The int8 one scales the model's quantized
    layer sums (:meth:`HardwareProfile.quant_context`); where the float one is
    off, the cost model warns. Scaling the float sums too was tried and left
    out: the ratio of the whole model does not hold for its pruned candidates,
    whose weights shrink (a VGG-like model's candidates then came out 45% over).
    """

    float_ms: NonNegative
    quant_ms: NonNegative = 0.0  # 0 without int8 kernels
    mact: Annotated[float, Field(gt=0.0, allow_inf_nan=False)]  # the uncompressed model's layer outputs, millions
    by_op: dict[str, dict[str, NonNegative]] = {}  # precision -> node type -> ms, for people to read
    layers_ms: dict[str, Positive] = {}  # precision -> the build's graph less its graph ops (table scale)
    table_ms: dict[str, Positive] = {}  # precision -> the table's sum for the same layers alone
    narrow_float_ms: NonNegative | None = None  # the same, in the narrowest uniform build
    narrow_quant_ms: NonNegative | None = None
    narrow_mact: Positive | None = None  # that build's layer outputs, millions
    command: str = ""

    def price(self, mact_float, mact_quant):
        """ms for one candidate or (as arrays) many, from its layers' output activations per precision."""
        mact_float, mact_quant = np.asarray(mact_float, dtype=float), np.asarray(mact_quant, dtype=float)
        if self.narrow_mact is None or self.narrow_float_ms is None or self.narrow_mact >= self.mact:
            return (self.float_ms * mact_float + self.quant_ms * mact_quant) / self.mact
        total = mact_float + mact_quant
        along = (total - self.narrow_mact) / (self.mact - self.narrow_mact)  # 0 at the narrow build, 1 at full

        def build_ms(full: float, narrow: float) -> np.ndarray:
            return np.maximum(0.0, narrow + (full - narrow) * along)

        float_share = np.divide(mact_float, total, out=np.zeros_like(total), where=total > 0)
        return np.where(total > 0, build_ms(self.float_ms, self.narrow_float_ms) * float_share
                        + build_ms(self.quant_ms, self.narrow_quant_ms or 0.0) * (1.0 - float_share), 0.0)

    def layer_factor(self, precision: str) -> float:
        """In-graph over isolated time of the model's layers at ``precision`` (1.0 where not measured)."""
        if precision in self.layers_ms and precision in self.table_ms:
            return self.layers_ms[precision] / self.table_ms[precision]
        return 1.0


class ValidationResult(_Strict):
    """How well the calibrated table predicted end-to-end cost on held-out candidates."""

    date: str
    command: str = ""
    models: list[str]
    subset: str = "all"  # "all", "fp32-only", "int8-containing"
    n_candidates: int
    spearman: float
    median_abs_pct_error: float
    p90_abs_pct_error: float
    within_10pct: float
    noise_floor_pct: float  # median |a - b| / a for the same model measured twice in one process
    anchor_ratio: float | None = None  # the profile's anchors timed beside the models / their table values
    calibration: Calibration


class Roofline(_Strict):
    """An analytic device: latency = max(MACs / peak rate, bytes moved / bandwidth) + per-layer overhead."""

    peak_macs_per_s: dict[str, Positive]
    bandwidth_bytes_per_s: Positive
    layer_overhead_ms: NonNegative = 0.0


_ACCELERATOR_PRECISION = re.compile(r"^w(\d+)a(\d+)$")
PositiveInt = Annotated[int, Field(ge=1)]


class _AcceleratorModel(_Strict):
    """What every analytic accelerator model shares: how bit-widths become its precisions.

    A layer with ``w_bits`` and ``a_bits`` up to ``max_bits`` runs at exactly those
    widths, precision ``"w{w}a{a}"`` (so every bit-width of the space is priced on its
    own, unlike a CPU where everything below 8 bits runs on int8 kernels); a wider
    operand (the space's 32, not quantized) runs at ``unquantized_bits`` fixed point.
    """

    max_bits: Annotated[int, Field(ge=1, le=16)] = 8
    unquantized_bits: Annotated[int, Field(ge=2, le=32)] = 16
    clock_hz: Positive
    dram_bytes_per_s: Positive
    layer_overhead_ms: NonNegative = 0.0

    def precision_for(self, w_bits: int, a_bits: int) -> str:
        w = w_bits if w_bits <= self.max_bits else self.unquantized_bits
        a = a_bits if a_bits <= self.max_bits else self.unquantized_bits
        return f"w{w}a{a}"

    def bits_of(self, precision: str) -> tuple[int, int]:
        """``"w4a8"`` -> (4, 8)."""
        m = _ACCELERATOR_PRECISION.match(precision)
        if not m or not all(int(g) >= 1 for g in m.groups()):
            raise ProfileError(f"precision {precision!r} is not one an accelerator model prices; expected "
                               "'w{bits}a{bits}', e.g. 'w4a8'")
        return int(m.group(1)), int(m.group(2))

    def quantized(self, precision: str) -> bool:
        """Whether a layer at ``precision`` counts as quantized (both operands at most ``max_bits``)."""
        w, a = self.bits_of(precision)
        return w <= self.max_bits and a <= self.max_bits


class BitFusionModel(_AcceleratorModel):
    """A BitFusion-like bit-flexible accelerator, as numbers (priced by ``autocompress.hardware.accelerators``).

    A model, not a simulator: defaults follow the published configuration, energy
    figures are 45 nm estimates. Sources:

    * array: ``rows`` x ``columns`` = 16 x 32 Fusion Units of ``bricks_per_unit`` = 16
      2-bit BitBricks each, 500 MHz -- H. Sharma et al., "Bit Fusion: Bit-Level
      Dynamically Composable Architecture for Accelerating Deep Neural Networks", ISCA
      2018, and its simulator's configuration (github.com/hsharma35/bitfusion,
      ``bf_e_conf.ini``: a=16, c=32, 500 MHz, precisions 2..8);
    * memory: 192-bit DRAM interface per cycle (``if_width``) -> 12 GB/s; weight /
      input buffers of 64 / 32 KiB; the input buffer has one 32-bit bank per array row
      (16 x 4 B per cycle -> 32 GB/s); partial sums are 32-bit (same sources);
    * brick energy: the simulator's 45 nm synthesis of a 4 x 4 Fusion-Unit array
      (``results/systolic_array_synth.csv``, 8-bit max / 2-bit min precision, 500 MHz:
      3.6735 mW dynamic) -> 7.35 pJ per cycle / 16 units / 16 bricks = 0.0287 pJ per
      brick-cycle (an 8x8 MAC: 0.46 pJ; Horowitz, ISSCC 2014, puts an 8-bit multiply +
      32-bit add at 0.3 pJ); leakage is not modelled;
    * memory energy (assumptions, 45 nm): a Fusion Unit's private weight bank is priced
      like a register file (0.1 pJ/B, the figure ``HOROWITZ_45NM`` assumes), the shared
      buffers like Horowitz's 32 KB SRAM (2.5 pJ/B), DRAM 162.5 pJ/B (Horowitz, low end).

    ``operand_rounding``: ``"bricks"`` -- a w-bit operand takes ceil(w / 2) bricks, so a
    w x a MAC costs ceil(w/2) * ceil(a/2) brick-cycles (8x8: 16, 4x4: 4, 2x2: 1) and
    operands are stored packed at their width; ``"power_of_two"`` -- operands are
    padded to 2, 4, 8 or 16 bits, the widths BitFusion's spatial fusion supports
    (so 6 bits costs what 8 does, as in the BitFusion simulator).
    """

    model: Literal["bitfusion"] = "bitfusion"
    rows: PositiveInt = 16
    columns: PositiveInt = 32
    bricks_per_unit: PositiveInt = 16
    brick_bits: PositiveInt = 2
    operand_rounding: Literal["bricks", "power_of_two"] = "bricks"
    clock_hz: Positive = 500e6
    dram_bytes_per_s: Positive = 12e9
    input_buffer_bytes_per_s: Positive = 32e9
    weight_buffer_bytes: PositiveInt = 64 * 1024
    input_buffer_bytes: PositiveInt = 32 * 1024
    accumulator_bits: PositiveInt = 32
    brick_pj: NonNegative = 0.0287  # 3.6735 mW / 500 MHz / 16 units / 16 bricks
    local_pj_per_byte: NonNegative = 0.1
    buffer_pj_per_byte: NonNegative = 2.5
    dram_pj_per_byte: NonNegative = 162.5


class EyerissModel(_AcceleratorModel):
    """An Eyeriss-like row-stationary array priced by data movement (``autocompress.hardware.energy``).

    A model: defaults follow the published chip, the absolute energy scale is an
    assumption. Sources: 12 x 14 = 168 PEs, 16-bit fixed point, 108 KB global
    buffer, 200 MHz -- Y.-H. Chen et al., "Eyeriss: An Energy-Efficient Reconfigurable
    Accelerator for Deep Convolutional Neural Networks", JSSC 2017; normalized
    access costs relative to one MAC (RF 1, array/NoC 2, global buffer 6, DRAM 200)
    -- Y.-H. Chen, J. Emer, V. Sze, "Eyeriss: A Spatial Architecture for
    Energy-Efficient Dataflow for Convolutional Neural Networks", ISCA 2016. The
    costs are per ``word_bits``-bit word; narrower data moves proportionally fewer
    bits. Assumptions: ``unit_pj`` (one 16-bit MAC ~ 1 pJ, between Horowitz's 45 nm
    8-bit and 32-bit figures) and DRAM bandwidth (a 64-bit link at the core clock,
    1.6 GB/s). PEs compute at 16 bits: fewer bits save data movement (energy, and
    latency only where a layer is memory-bound), not MAC cycles.
    """

    model: Literal["eyeriss"] = "eyeriss"
    rows: PositiveInt = 12
    columns: PositiveInt = 14
    clock_hz: Positive = 200e6
    dram_bytes_per_s: Positive = 1.6e9
    word_bits: PositiveInt = 16
    psum_bits: PositiveInt = 16
    glb_bytes: PositiveInt = 108 * 1024
    mac_cost: NonNegative = 1.0
    rf_cost: NonNegative = 1.0
    noc_cost: NonNegative = 2.0
    glb_cost: NonNegative = 6.0
    dram_cost: NonNegative = 200.0
    unit_pj: NonNegative = 1.0


#: an analytic accelerator described by a named model and its parameters (``model: bitfusion``)
AcceleratorModel = Annotated[BitFusionModel | EyerissModel, Field(discriminator="model")]
ACCELERATOR_MODELS: dict[str, type[_AcceleratorModel]] = {"bitfusion": BitFusionModel, "eyeriss": EyerissModel}


class EnergySpec(_Strict):
    """Where energy figures come from; every figure the cost model returns carries ``method``.

    Measured or imported: each entry's ``energy_mj``; an entry without one is
    priced by ``table`` where the profile has one (a measured profile extended
    on a machine without the counter), else it has no energy.
    """

    method: MeasuredEnergy | Literal["modelled", "imported", "none"] = "none"
    table: dict[str, Any] | None = None  # an EnergyTable (autocompress.hardware.energy): the energy model
    notes: str = ""


#: the published table layouts ``autocompress.hardware.importers`` reads
ImportFormat = Literal["proxyless", "ofa", "apq", "generic"]


#: block types of per-block tables (ProxylessNAS, Once-for-All)
BLOCK_TYPES = ("Conv", "expanded_conv", "Conv_1", "Conv_2", "AvgPool2D", "Logits")
#: the fields an expanded_conv key carries after input and output, as the key names them, per format
#: (``expand`` is a ratio in ProxylessNAS keys and the middle channel count in Once-for-All ones)
BLOCK_KEY_FIELDS = {"proxyless": ("expand", "kernel", "stride", "idskip"),
                    "ofa": ("expand", "kernel", "stride", "idskip", "se", "hs")}


class BlockEntry(_Strict):
    """One block of a per-block table (ProxylessNAS, Once-for-All), parsed from its key.

    Shapes are as published, ``[H, W, C]`` (a ``Logits`` output is ``[classes]``).
    The key's ``expand`` is a ratio in ProxylessNAS tables and the middle
    channel count in Once-for-All ones: ``mid_channels`` says which it meant.
    """

    key: str  # exactly as in the source file
    type: str  # "Conv", "expanded_conv", "Conv_1", "Conv_2", "AvgPool2D", "Logits"
    input_hwc: list[int]
    output_hwc: list[int]
    expand: int | None = None
    mid_channels: int | None = None
    kernel: int | None = None
    stride: int | None = None
    idskip: bool | None = None
    se: bool | None = None  # squeeze-excite (Once-for-All)
    hs: bool | None = None  # hard-swish activation (Once-for-All)
    latency_ms: NonNegative  # the table's mean
    std_ms: NonNegative | None = None
    var_ms2: NonNegative | None = None  # as published, where the table gives a variance
    count: Annotated[int, Field(ge=1)]


class LayerEntry(_Strict):
    """One layer at one weight/activation bit-width pair (APQ tables, generic rows)."""

    key: str  # as in the source file; generic rows: "row N"
    op: Literal["conv", "linear"]
    in_channels: Annotated[int, Field(ge=1)]
    out_channels: Annotated[int, Field(ge=1)]
    in_hw: tuple[int, int]  # linear: (tokens, 1)
    kernel: Annotated[int, Field(ge=1)] = 1
    stride: Annotated[int, Field(ge=1)] = 1
    padding: Annotated[int, Field(ge=0)] = 0
    groups: Annotated[int, Field(ge=1)] = 1
    w_bits: Annotated[int, Field(ge=1)]
    a_bits: Annotated[int, Field(ge=1)]
    latency_ms: NonNegative
    energy_mj: NonNegative | None = None
    std_ms: NonNegative | None = None
    count: Annotated[int, Field(ge=1)] | None = None


class PartEntry(_Strict):
    """A fixed part of the network the source prices as one figure (APQ's ``head`` and ``tail``)."""

    name: str
    latency_ms: NonNegative
    energy_mj: NonNegative | None = None


class ImportedTable(_Strict):
    """A published lookup table as imported: what it is, where it came from, and its entries as data.

    Its entries are kept as the source structured them (blocks, or layers at
    bit-width pairs), not as layer signatures: per-block tables are priced by
    ``autocompress.hardware.block_pricing``, per-bit-width layer tables not yet.
    """

    format: ImportFormat
    source_file: str  # the file's name
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    obtained: Literal["measured", "simulated", "unknown"]  # simulated: a simulator's figures, not a device's
    units: dict[str, str]  # e.g. {"latency": "ms", "energy": "mJ"}
    input_resolution: int | None = None  # the network input size the block table was measured at
    notes: str = ""
    blocks: list[BlockEntry] = []
    layers: list[LayerEntry] = []
    parts: list[PartEntry] = []

    def counts(self) -> dict[str, int]:
        """Entries per type: block types, layer ops and parts, e.g. ``{"expanded_conv": 69, "Conv": 1}``."""
        out: dict[str, int] = {}
        for name in ([b.type for b in self.blocks] + [f"layer:{e.op}" for e in self.layers]
                     + [f"part:{p.name}" for p in self.parts]):
            out[name] = out.get(name, 0) + 1
        return out


class HardwareProfile(_Strict):
    schema_version: int = SCHEMA_VERSION
    name: str
    kind: Literal["measured", "analytic", "imported"]
    device: DeviceInfo
    runtime: str  # "onnxruntime", "torch-eager", "torch-compile", "tflite", "simulator", ...
    threads: int = Field(ge=1)
    batch_size: int = Field(ge=1)
    repetitions: str = ""  # e.g. "5 rounds x 20 reps, min of round medians"
    precisions: dict[str, str]  # precision -> what kernel runs it, e.g. {"int8": "QLinearConv (u8s8)"}
    precision_rules: list[PrecisionRule] = []  # first match wins; otherwise "fp32"
    sparse_kernels: bool = False  # False: sparsity saves size and modelled energy, not latency
    interpolation: Literal["none", "channels"] = "none"
    entries: dict[str, Entry] = {}
    #: measured profiles: signatures timed beside every chunk of entries, and their reference latency (ms).
    #: Every entry is on this scale; later runs (extensions, validation) compare their anchors with it.
    anchors: dict[str, NonNegative] = {}
    #: measured profiles: the memory probe (``autocompress.runtime.machine_check.WeightStream``, 16 MB of weights
    #: no core cache holds) on the anchors' scale, timed when the profile was measured; None: not recorded
    memory_probe_ms: Positive | None = None
    roofline: Roofline | None = None  # analytic profiles price any signature from this instead of a table
    #: analytic profiles of a named accelerator model: it prices every signature at every bit-width pair
    accelerator: AcceleratorModel | None = None
    calibration: Calibration = Calibration()  # fitted on all validated models together
    #: fitted on one model's candidates, by calibration_key (model@input shape); a bare model name (older
    #: profiles) serves that model at any input shape
    model_calibrations: dict[str, Calibration] = {}
    #: by calibration_key: the operations between layers of models measured in their own graph; the
    #: calibration of such a model is fitted to whole-model latency less these, which are added back
    graph_ops: dict[str, GraphOps] = {}
    energy: EnergySpec = EnergySpec()
    validation: list[ValidationResult] = []
    provenance: Provenance
    imported: ImportedTable | None = None  # kind "imported": the published table it was read from
    #: regressions fitted on the entries that price signatures the table lacks (``autocompress profile
    #: fit-predictor``); None: a missing signature is interpolated as declared, or refused
    predictor: SignaturePredictor | None = None

    @model_validator(mode="after")
    def _table_needs_imported_kind(self) -> HardwareProfile:
        if self.imported is not None and self.kind != "imported":
            raise ValueError(f"an imported table belongs to a profile of kind 'imported', not {self.kind!r}")
        return self

    @model_validator(mode="after")
    def _accelerator_is_the_whole_device(self) -> HardwareProfile:
        if self.accelerator is None:
            return self
        if self.kind != "analytic":
            raise ValueError(f"an accelerator model belongs to a profile of kind 'analytic', not {self.kind!r}")
        if self.roofline is not None or self.precision_rules:
            raise ValueError("a profile with an accelerator model has no roofline and no precision_rules: "
                             "the model prices every bit-width pair itself")
        return self

    @field_validator("schema_version")
    @classmethod
    def _known_version(cls, v: int) -> int:
        if v != SCHEMA_VERSION:
            raise ValueError(f"unknown schema version {v}; this autocompress reads version {SCHEMA_VERSION}")
        return v

    @field_validator("entries", "anchors")
    @classmethod
    def _keys_are_signatures(cls, v: dict[str, Any]) -> dict[str, Any]:
        for key in v:
            try:
                LayerSignature.parse(key)
            except SignatureError as exc:
                raise ValueError(str(exc)) from None
        return v

    # -- pricing ----------------------------------------------------------------------
    def precision_for(self, w_bits: int, a_bits: int) -> str:
        if self.accelerator is not None:
            return self.accelerator.precision_for(w_bits, a_bits)
        for rule in self.precision_rules:
            if w_bits <= rule.max_w_bits and a_bits <= rule.max_a_bits:
                return rule.precision
        return "fp32"

    def calibration_for(self, model: str | None = None, input_shape: Sequence[int] | None = None) -> Calibration:
        """The model's own calibration at this input shape, else at any shape, else the pooled one.

        Per shape because fixed costs (per-layer overhead, the int8 entry)
        weigh differently against the layer sums at another resolution.
        """
        for key in model_keys(model, input_shape):
            if key in self.model_calibrations:
                return self.model_calibrations[key]
        return self.calibration

    def graph_ops_for(self, model: str | None = None, input_shape: Sequence[int] | None = None) -> GraphOps | None:
        """The model's operations between layers at this input shape, else at any shape; None: not measured."""
        for key in model_keys(model, input_shape):
            if key in self.graph_ops:
                return self.graph_ops[key]
        return None

    def context_ratios(self, model: str | None = None, input_shape: Sequence[int] | None = None,
                       models: Sequence[str] | None = None) -> dict[str, float]:
        """Precision -> the model's in-graph/table factor over that of ``models`` (calibration keys; default: the
        models its calibration was fitted on).

        1.0: its layers run in its graph as the calibration's models' do in theirs, so the calibration carries
        over. Far from 1 (a model whose weights do not stay in cache, say), its prediction is off by about as
        much. Empty where either side was not measured.
        """
        ops = self.graph_ops_for(model, input_shape)
        if ops is None or not ops.layers_ms:
            return {}
        models = self.calibration_for(model, input_shape).models if models is None else models
        fitted = [self.graph_ops[k] for k in models if k in self.graph_ops and self.graph_ops[k].layers_ms]
        out = {}
        for precision in ops.layers_ms:
            factors = [g.layer_factor(precision) for g in fitted if precision in g.layers_ms]
            if factors:
                out[precision] = ops.layer_factor(precision) / float(np.mean(factors))
        return out

    def quant_context(self, model: str | None, input_shape: Sequence[int] | None, models: Sequence[str]) -> float:
        """What a calibration fitted on ``models`` multiplies this model's quantized layer sums by: its int8
        layers' in-graph/table factor over theirs (:meth:`context_ratios`; 1.0 where either was not measured).

        A whole int8 graph skips most of the quantize/dequantize and layout steps each isolated int8 layer pays,
        and how much depends on the architecture: ResNet-20's int8 layers run at 0.68x their table time in its
        graph, MobileNetV2's at 0.53x, a VGG-like model's at 0.84x. A calibration fitted on the first two priced
        the third's all-int8 candidates 20-25% low. Scaled by the ratio, held-out models came out 56% -> 75%
        within +-10% on one run's timings. The float sums are left alone: a model whose float weights leave the
        cache runs its whole float graph at 1.4-1.9x its table, but its pruned candidates do not (scaled, they
        came out 45% over).
        """
        return self.context_ratios(model, input_shape, models).get(QUANT_CONTEXT, 1.0)

    # -- files ----------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Atomic write, so an interrupted save never leaves half a profile."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        data = self.model_dump(mode="json")
        if self.accelerator is None:  # profiles without one keep the layout they always had
            del data["accelerator"]
        if self.predictor is None:  # profiles without one keep the layout they always had
            del data["predictor"]
        if not self.graph_ops:  # profiles without any keep the layout they always had
            del data["graph_ops"]
        if self.imported is None:  # profiles of other kinds keep the layout they always had
            del data["imported"]
        else:  # thousands of entries: leave out the fields a source does not have (None is their default)
            data["imported"] = self.imported.model_dump(mode="json", exclude_none=True)
        return write_json(data, path)

    @classmethod
    def load(cls, path: str | Path) -> HardwareProfile:
        return cls.from_data(read_json(path, what="profile", error=ProfileError), str(path))

    @classmethod
    def from_data(cls, data: Any, source: str = "<profile>") -> HardwareProfile:
        if not isinstance(data, dict):
            raise ProfileError(f"{source}: expected a JSON object at the top level")
        if data.get("schema_version", SCHEMA_VERSION) != SCHEMA_VERSION:
            raise ProfileError(f"{source}: field schema_version: unknown schema version {data['schema_version']!r}; "
                               f"this autocompress reads version {SCHEMA_VERSION}")
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise ProfileError(f"{source}: {validation_problems(exc)}") from None


def this_machine(name: str = "") -> DeviceInfo:
    """Describe the CPU this process runs on."""
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return DeviceInfo(name=name or platform.node() or "this machine", cpu=cpu, cores=os.cpu_count(),
                      os=platform.platform())


def shipped_profiles_dir() -> Path:
    folder = shipped_dir("hw_profiles")
    if folder is None:
        raise ProfileError("no hw_profiles/ folder found beside the autocompress package")
    return folder


def find_profile(path_or_name: str | Path) -> HardwareProfile:
    """Load a profile by path, or by name from the shipped ``hw_profiles/``."""
    path = Path(path_or_name)
    if not path.suffix and not path_exists(path):
        path = shipped_profiles_dir() / f"{path_or_name}.json"
        if not path_exists(path):
            names = sorted(p.stem for p in shipped_profiles_dir().glob("*.json"))
            raise ProfileError(f"unknown hardware profile {str(path_or_name)!r}; shipped profiles: {names}, "
                               "or give a JSON path")
    return HardwareProfile.load(path)
