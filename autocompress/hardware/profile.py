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
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from autocompress.files import read_json, validation_problems, write_json
from autocompress.hardware.signature import LayerSignature, SignatureError
from autocompress.shipped import shipped_dir

SCHEMA_VERSION = 1
NonNegative = Annotated[float, Field(ge=0.0, allow_inf_nan=False)]
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
#: what a calibration may weigh: the sums, and whether any layer runs on quantized kernels
CALIBRATION_FEATURES = (*SUMMED_FEATURES, "any_quant")


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
    """CALIBRATION_FEATURES from the SUMMED_FEATURES of one candidate or (as arrays) of many."""
    return {**{name: summed[name] for name in SUMMED_FEATURES},
            "any_quant": (np.asarray(summed["layers_quant"]) > 0).astype(float)}


class Calibration(_Strict):
    """From the sum of isolated layer timings to whole-model latency.

    latency = sum(coefficients[f] * feature f) + offset_ms, features in CALIBRATION_FEATURES.
    Isolated layers each pay the runtime's per-call overhead and the layout and
    (de)quantize conversions that a whole graph pays once or fuses away (layer
    terms come out negative); activation terms price what the table does not
    hold (adds, activations, pooling, conversions between float and int8 parts).
    ``any_quant`` (1 when any layer is quantized) is the fixed cost of a model
    with an int8 part: without it, fitted on ONNX Runtime validations, float
    models came out 1-4% over and int8-containing ones under.
    """

    coefficients: dict[str, float] = {"sum_float_ms": 1.0, "sum_quant_ms": 1.0}
    offset_ms: float = 0.0
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

    peak_macs_per_s: dict[str, Annotated[float, Field(gt=0)]]
    bandwidth_bytes_per_s: Annotated[float, Field(gt=0)]
    layer_overhead_ms: NonNegative = 0.0


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
    bit-width pairs), not as layer signatures: the cost model does not price
    them yet.
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
    roofline: Roofline | None = None  # analytic profiles price any signature from this instead of a table
    calibration: Calibration = Calibration()  # fitted on all validated models together
    #: fitted on one model's candidates, by calibration_key (model@input shape); a bare model name (older
    #: profiles) serves that model at any input shape
    model_calibrations: dict[str, Calibration] = {}
    energy: EnergySpec = EnergySpec()
    validation: list[ValidationResult] = []
    provenance: Provenance
    imported: ImportedTable | None = None  # kind "imported": the published table it was read from

    @model_validator(mode="after")
    def _table_needs_imported_kind(self) -> HardwareProfile:
        if self.imported is not None and self.kind != "imported":
            raise ValueError(f"an imported table belongs to a profile of kind 'imported', not {self.kind!r}")
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

    # -- files ----------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Atomic write, so an interrupted save never leaves half a profile."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        data = self.model_dump(mode="json")
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
    if not path.exists() and not path.suffix:
        path = shipped_profiles_dir() / f"{path_or_name}.json"
        if not path.exists():
            names = sorted(p.stem for p in shipped_profiles_dir().glob("*.json"))
            raise ProfileError(f"unknown hardware profile {str(path_or_name)!r}; shipped profiles: {names}, "
                               "or give a JSON path")
    return HardwareProfile.load(path)
