"""Calibration data for int8 files: a few real training images at the model's input resolution.

Shared by the export's members and the candidates its screening times, so an
int8 file is quantized the same way whichever step built it.
"""

from __future__ import annotations

import torch

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
