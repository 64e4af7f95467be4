"""``manifest.json`` of an export, as a pydantic model with a schema version.

The manifest is what plots, the CLI, the README's figures and the experiments
read, so it is validated when written and when loaded: a file from another
version, cut short or edited by hand fails with the file and field named.
Cost-model predictions and measurements stay open mappings (``predicted``,
``measured``): runtimes and meters add their own keys.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict

from autocompress.files import read_json, validate_versioned, write_json

MANIFEST_FORMAT = "autocompress-export/2"
MANIFEST_NAME = "manifest.json"


class ExportError(ValueError):
    """A trial that cannot be exported (unknown, not evaluated, over budget), a member directory that
    cannot be rebuilt, or a manifest that cannot be read."""


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BudgetCheck(_Record):
    """One budget checked on the cost model's prediction and, where measurable, on the measurement."""

    text: str
    metric: str
    relative: float | None
    limit: float
    predicted: float
    met_predicted: bool
    measured: float | None = None
    measured_limit: float | None = None
    met_measured: bool | None = None  # None: not measurable here (say why in ``note``)
    # latency timed in several passes: the verdict on each pass's own figure, how firm ``met_measured`` is
    met_in_passes: list[bool] | None = None
    noise_band_pct: float | None = None
    note: str = ""
    energy_method: str | None = None  # energy budgets: where the figure comes from


class Resize(_Record):
    """The resize the data pipeline applies to a raw image before normalizing it
    (``torch.nn.functional.interpolate`` on the float32 pixel values, 0..255, not rounded back to uint8)."""

    from_hw: list[int]  # the raw image's [height, width]
    to_hw: list[int]  # the model's input [height, width]
    mode: str  # interpolate's ``mode``
    align_corners: bool
    antialias: bool  # True when shrinking, as the pipeline does
    function: str = "torch.nn.functional.interpolate"


class Preprocessing(_Record):
    """How to feed an exported ONNX file: a raw image through the steps the training pipeline applied.

    Written beside each member and the reference in the manifest, and into the
    ONNX files' ``metadata_props`` under ``autocompress.preprocessing``. Latency
    was measured on the ONNX graph alone: the resize and the normalization run
    outside it (``latency_includes_resize`` false).
    """

    input_name: str
    shape: list[int]  # [1, C, H, W]: NCHW, batch 1 (the file's static input)
    layout: Literal["NCHW"] = "NCHW"
    dtype: Literal["float32"] = "float32"
    raw: str  # what a raw image is: uint8 pixels, channels and their order
    raw_shape: list[int]  # [C, H, W] of a raw image (the data's native size)
    value_range: list[float]  # pixels are scaled to this range (pixel / 255) before the mean/std
    mean: list[float]  # per channel, in value_range units
    std: list[float]  # per channel, in value_range units
    resize: Resize | None  # None: the model takes the raw size
    steps: list[str]  # the whole recipe, in order, as the training pipeline runs it
    latency_includes_resize: bool = False  # measured latency: the ONNX graph only, no resize, no normalization


class ArtifactAccuracy(_Record):
    """Test top-1 of the PyTorch model and of each ONNX file written from it, on the same test images.

    ``torch``: the model as it was scored (eval mode, fake quantization as
    trained), after the final fine-tune. ``onnx_fp32`` / ``onnx_int8``: the
    files run in ONNX Runtime on this machine's CPU (int8 kernels differ between
    CPUs: see ``measured_on``); ``onnx_int8`` is None when no int8 file was written.
    The fp32 file is the float model (fake quantization stripped, weights kept
    as quantized), so for a member with quantized activations it differs from
    ``torch`` by their rounding; the int8 file is the one that quantizes.
    """

    images: int  # how many test images, the same for every figure here
    subset: str  # the whole test split, or a seeded subset of it
    torch: float
    onnx_fp32: float
    onnx_int8: float | None = None
    fp32_max_abs_logit_diff: float  # ONNX fp32 against the float PyTorch model, on the first images
    int8_quantization: dict[str, Any] | None = None  # the int8 file's quantizer settings (chosen for this CPU)
    note: str = ""  # says so when the int8 file loses more than a point against fp32


class ExportedMember(_Record):
    """One exported model: a row of the manifest."""

    trial: int
    candidate: dict[str, Any]
    accuracy_proxy: float  # the search's proxy score (short fine-tune, subset)
    accuracy_val: float  # after the final fine-tune
    accuracy_test: float
    predicted: dict[str, Any]  # cost model: latency_ms, energy_mj, size_bytes, macs, bitops + energy_method
    measured: dict[str, Any]  # re-measured latency (+ spread), energy, counted size / MACs / BitOps
    budgets: list[BudgetCheck]
    files: dict[str, str]  # relative to the export directory
    dir: str  # the member's directory, relative to the export directory
    input_shape: list[int]
    fine_tune: dict[str, Any] = {}
    note: str = ""  # one line: all budgets met on measurement, or what missed
    # None in manifests written before these were recorded
    artifact_accuracy: ArtifactAccuracy | None = None
    preprocessing: Preprocessing | None = None


class StudyInfo(_Record):
    name: str
    storage: str
    trials: int
    evaluated: int
    filtered: int
    selected: Literal["pareto", "given"]
    objective_costs: list[str]


class ProfileInfo(_Record):
    name: str
    kind: str
    runtime: str
    threads: int
    batch_size: int
    device: dict[str, Any]
    energy_method: str
    energy_notes: str = ""


class TimingInfo(_Record):
    """How the members and the reference were timed, and the noise band a latency budget allows."""

    runtime: str
    threads: int
    rounds: int
    reps: int
    sessions: int
    passes: int = 1  # runs of fresh sessions, one after another (manifests before passes were one run)
    seed: int
    measured: bool
    note: str
    noise_band_pct: float
    noise_band_source: str
    device_note: str = ""
    speed_ratio: float | None = None  # this machine / the profile's device, where the machine check says they differ


class ScreenedTrial(_Record):
    """One trained trial timed as built (no fine-tune) beside the reference, before the export chose its members."""

    trial: int
    accuracy_proxy: float
    predicted_vs_reference: float  # the cost model's latency over its reference's
    measured_vs_reference: float  # the median ratio to the reference timed interleaved with it
    met_measured: bool  # every latency budget's limit met on the measurement (the other budgets as priced)
    chosen: bool  # on the measured front: fine-tuned and exported


class ScreeningInfo(_Record):
    """How the export chose its members on latency measured here (:mod:`autocompress.export.screen`)."""

    screened: bool  # False: the members are the front as priced, ``note`` says why
    note: str
    priced_front: list[int]  # the study's feasible Pareto front on the cost model's prices
    chosen: list[int]
    trials: list[ScreenedTrial] = []
    timing: str = ""  # how the candidates were timed
    slack: float | None = None  # trials priced up to this fraction over a latency budget were timed too
    limits_vs_reference: list[float] = []  # each latency budget's limit, as a fraction of the reference


class ReferenceInfo(_Record):
    """The uncompressed model, measured beside the members."""

    accuracy_val: float | None
    accuracy_test: float
    accuracy_val_same_fine_tune: float  # given the members' final fine-tune too: like compared with like
    accuracy_test_same_fine_tune: float
    predicted: dict[str, Any]
    measured: dict[str, Any]
    files: dict[str, str]
    input_shape: list[int]
    artifact_accuracy: ArtifactAccuracy | None = None  # None in manifests written before it was recorded
    preprocessing: Preprocessing | None = None


class FineTuneInfo(_Record):
    epochs: float
    lr: float
    seed: int
    distillation: str
    fidelity: str


class Manifest(_Record):
    """Everything an export wrote and measured; ``format`` is the schema version."""

    format: Literal["autocompress-export/2"] = MANIFEST_FORMAT
    date: str
    study: StudyInfo
    config: dict[str, Any]
    base_model: dict[str, Any]
    profile: ProfileInfo
    energy_method: str
    measured_on: dict[str, Any]
    timing: TimingInfo
    budgets: list[str]
    reference: ReferenceInfo
    final_fine_tune: FineTuneInfo
    members: list[ExportedMember]
    all_budgets_met_measured: bool
    versions: dict[str, str]
    plots: dict[str, str] = {}  # name -> PNG, relative to the export directory
    screening: ScreeningInfo | None = None  # None: the trials were named, or the manifest predates screening

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def plain(value: Any) -> Any:
    """``value`` as JSON data (numpy numbers, paths and other objects as JSON values or strings)."""
    return json.loads(json.dumps(value, default=_json_default))


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    return str(value)


def write_manifest(manifest: Manifest, path: str | Path) -> Path:
    """Atomic write (an interrupted write never leaves half a manifest)."""
    return write_json(manifest.to_dict(), path)


def load_manifest(path: str | Path) -> Manifest:
    """A manifest written by :func:`~autocompress.export.export_front` (the file, or the export directory)."""
    path = Path(path)
    if path.is_dir():
        path = path / MANIFEST_NAME
    data = read_json(path, what="manifest", error=ExportError)
    return validate_versioned(data, Manifest, source=str(path), key="format", expected=MANIFEST_FORMAT,
                              error=ExportError, hint="not an export manifest, or written by another autocompress "
                                                      "version: export again")
