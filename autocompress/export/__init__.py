"""Exporter: a study's Pareto set -> fine-tuned weights, ONNX (fp32 / int8), re-measured latency, manifest, plots."""

from autocompress.export.exporter import (
    MANIFEST_NAME,
    ExportedMember,
    ExportError,
    budget_rows,
    export_front,
    load_manifest,
    noise_band,
    rebuild,
    write_manifest,
)
from autocompress.export.plots import plot_front, plot_policy

__all__ = [
    "MANIFEST_NAME", "ExportError", "ExportedMember", "budget_rows", "export_front", "load_manifest", "noise_band",
    "plot_front", "plot_policy", "rebuild", "write_manifest",
]
