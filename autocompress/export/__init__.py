"""Exporter: a study's Pareto set -> fine-tuned weights + plans, ONNX (fp32 / int8), re-measured latency,
manifest, plots."""

from autocompress.export.budgets import DEFAULT_NOISE_PCT, budget_rows, noise_band
from autocompress.export.exporter import export_front
from autocompress.export.manifest import (
    MANIFEST_NAME,
    BudgetCheck,
    ExportedMember,
    ExportError,
    Manifest,
    load_manifest,
    write_manifest,
)
from autocompress.export.plots import plot_front, plot_policy
from autocompress.export.rebuild import rebuild

__all__ = [
    "DEFAULT_NOISE_PCT", "MANIFEST_NAME", "BudgetCheck", "ExportError", "ExportedMember", "Manifest", "budget_rows",
    "export_front", "load_manifest", "noise_band", "plot_front", "plot_policy", "rebuild", "write_manifest",
]
