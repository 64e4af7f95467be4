"""Calibration data for int8 files: a few real training images at the model's input resolution.

Shared by the export's members, the candidates its screening times and the
baselines, so an int8 file is quantized the same way whichever step built it.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from autocompress.runtime.onnx_export import export_onnx, int8_leaves
from autocompress.search.api import SearchSetup

#: calibration data for int8 export: this many real training batches of this size
CALIBRATION_BATCHES = 4
CALIBRATION_BATCH_SIZE = 16


def calibration_batches(setup: SearchSetup, resolution: int | None, seed: int) -> list[torch.Tensor]:
    """The first :data:`CALIBRATION_BATCHES` shuffled (seeded), unaugmented training batches."""
    loader = setup.data.loader("train", batch_size=CALIBRATION_BATCH_SIZE, shuffle=True, augment=False, seed=seed,
                               resolution=resolution)
    batches = []
    for x, _ in loader:
        batches.append(x)
        if len(batches) >= CALIBRATION_BATCHES:
            break
    return batches


def export_deployed(setup: SearchSetup, model: nn.Module, input_shape: tuple[int, ...], path: Path,
                    seed: int) -> Path:
    """``model``'s ONNX file as the export deploys it for timing: int8 QDQ (calibrated on
    :func:`calibration_batches`) where any layer is 8-bit and the profile runs int8, else float."""
    quantized = "int8" in setup.costs.profile.precisions and any(int8_leaves(model).values())
    native = setup.data.input_shape[1]
    calibration = calibration_batches(setup, None if input_shape[1] == native else input_shape[1],
                                      seed) if quantized else None
    return export_onnx(model, input_shape, path, int8=None if quantized else False, calibration=calibration)
