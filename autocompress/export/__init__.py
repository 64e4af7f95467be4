"""Exporter: a study's Pareto set -> fine-tuned weights + plans, ONNX (fp32 / int8), re-measured latency,
manifest, plots.

The manifest and ``rebuild`` are light and imported here (a process that only
rebuilds members loads no data, trains nothing and draws no plot); the exporter,
budgets and plots are imported on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from autocompress.export.manifest import (
    MANIFEST_NAME,
    ArtifactAccuracy,
    BudgetCheck,
    ExportedMember,
    ExportError,
    Manifest,
    Preprocessing,
    load_manifest,
    write_manifest,
)
from autocompress.export.rebuild import rebuild

_HOMES = {
    "DEFAULT_NOISE_PCT": "budgets", "budget_rows": "budgets", "noise_band": "budgets",
    "export_front": "exporter",
    "plot_front": "plots", "plot_policy": "plots", "plot_screening": "plots",
    "screen_front": "screen",
}
__all__ = [
    "DEFAULT_NOISE_PCT", "MANIFEST_NAME", "ArtifactAccuracy", "BudgetCheck", "ExportError", "ExportedMember",
    "Manifest", "Preprocessing", "budget_rows", "export_front", "load_manifest", "noise_band", "plot_front",
    "plot_policy", "plot_screening", "rebuild", "screen_front", "write_manifest",
]


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)
