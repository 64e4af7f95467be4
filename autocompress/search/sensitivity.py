"""Per-layer sensitivity: how much accuracy one compression decision costs on its own.

Each column of the space's encoding (one unit's keep ratio, bit-width, rank or
sparsity, or one scaling key) is set to a few of its values with everything
else left uncompressed; the model is BN-recalibrated and scored without any
fine-tuning. That is cheap (a forward pass over a few batches per point) and
it is what AMC and NetAdapt read first: a layer whose pruning costs 20 points
is not one to prune. Values not scored are interpolated along the column, in
value, between the identity (no drop) and the scored ones.

The table prices a candidate's *prior* accuracy additively (the reference's
accuracy minus the drops of its decisions); ``predictor.AccuracyPredictor``
corrects that prior with the trials a search has trained. A table is plain JSON
(stored on the study, so a resumed search reuses it instead of scoring again).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from torch import nn

from autocompress.compress import materialize
from autocompress.progress import progress_bar
from autocompress.space import Candidate, SearchSpace
from autocompress.space.candidate import IDENTITY, IDENTITY_SCALING
from autocompress.space.encoding import SCALING

log = logging.getLogger(__name__)

#: (model, candidate) -> top-1 accuracy in [0, 1], no fine-tuning
Score = Callable[[nn.Module, Candidate], float]


@dataclass(frozen=True)
class Sensitivity:
    """Accuracy drop of every encodable value of every column, alone, against the reference's score."""

    reference_accuracy: float  # the uncompressed model's score under the same evaluation
    drops: tuple[np.ndarray, ...]  # per encoding column, one drop per encodable value (identity: 0)
    scored: int  # how many single-decision models were scored (the rest interpolated)
    seconds: float

    def features(self, rows: np.ndarray) -> np.ndarray:
        """(N, columns) drops of each row's value in each column: the predictor's inputs."""
        rows = np.atleast_2d(rows)
        return np.stack([d[rows[:, j]] for j, d in enumerate(self.drops)], axis=1)

    def prior(self, rows: np.ndarray) -> np.ndarray:
        """Additive prior accuracy of encoded rows: the reference's score minus the sum of their drops."""
        return self.reference_accuracy - self.features(rows).sum(axis=1)

    def to_dict(self) -> dict[str, Any]:
        return {"reference_accuracy": self.reference_accuracy, "drops": [d.round(5).tolist() for d in self.drops],
                "scored": self.scored, "seconds": round(self.seconds, 2)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], space: SearchSpace) -> Sensitivity:
        """A stored table, checked against the space's encoding (a table of another space is refused)."""
        columns = space.encoding.columns
        drops = tuple(np.asarray(d, dtype=float) for d in data["drops"])
        if len(drops) != len(columns) or any(len(d) != len(c.values) for d, c in zip(drops, columns, strict=True)):
            raise ValueError("sensitivity: the stored table does not match this space's encoding "
                             f"({len(drops)} columns stored, {len(columns)} expected)")
        return cls(float(data["reference_accuracy"]), drops, int(data.get("scored", 0)),
                   float(data.get("seconds", 0.0)))


def _identity(column) -> float:
    """The value of ``column`` that leaves the model as it is."""
    return IDENTITY_SCALING[column.dim] if column.owner == SCALING else IDENTITY[column.dim]


def _values_to_score(column_values: tuple[float, ...], offered: np.ndarray, identity: float,
                     per_column: int) -> list[int]:
    """Indices of up to ``per_column`` offered values spread from the most compressed to the least."""
    picks = [int(i) for i in offered if column_values[int(i)] != identity]
    if len(picks) <= per_column:
        return picks
    order = sorted(picks, key=lambda i: abs(column_values[i] - identity), reverse=True)  # most compressed first
    spread = np.linspace(0, len(order) - 1, per_column).round().astype(int)
    return sorted({order[k] for k in spread})


def _interpolate(values: tuple[float, ...], identity: float, scored: dict[int, float]) -> np.ndarray:
    """A drop for every value: scored ones as measured, the rest linear in value between scored neighbours
    and the identity (0 drop); beyond the last scored value the nearest one's drop is kept."""
    known_x = [identity] + [values[i] for i in scored]
    known_y = [0.0] + list(scored.values())
    order = np.argsort(known_x)
    x, y = np.asarray(known_x, dtype=float)[order], np.asarray(known_y, dtype=float)[order]
    return np.interp(np.asarray(values, dtype=float), x, y)


def compute_sensitivity(base_model: nn.Module, space: SearchSpace, score: Score, *, per_column: int = 2,
                        progress: bool = True) -> Sensitivity:
    """Score every column of the space at up to ``per_column`` values, one decision at a time.

    ``score`` must not fine-tune (BN recalibration is expected): this is the
    cheap signal, about ``columns x per_column`` forward passes over a few batches.
    """
    if per_column < 1:
        raise ValueError(f"per_column must be >= 1, got {per_column}")
    t0 = time.perf_counter()
    encoding = space.encoding
    identity_row = encoding.encode([space.identity()])[0]
    reference = float(score(materialize(base_model, space.identity(), space), space.identity()))
    jobs = []
    for j, column in enumerate(encoding.columns):
        for index in _values_to_score(column.values, column.offered, _identity(column), per_column):
            jobs.append((j, index))
    measured: dict[int, dict[int, float]] = {}
    bar = progress_bar(total=len(jobs), desc="sensitivity", enabled=progress)
    try:
        for j, index in jobs:
            row = identity_row.copy()
            row[j] = index
            candidate = encoding.decode(row)
            accuracy = float(score(materialize(base_model, candidate, space), candidate))
            measured.setdefault(j, {})[index] = max(0.0, reference - accuracy)
            bar.update(1)
    finally:
        bar.close()
    drops = []
    for j, column in enumerate(encoding.columns):
        drops.append(_interpolate(column.values, _identity(column), measured.get(j, {})))
    table = Sensitivity(reference, tuple(drops), len(jobs), time.perf_counter() - t0)
    worst = sorted(((float(d.max()), encoding.columns[j]) for j, d in enumerate(drops)), key=lambda p: -p[0])[:3]
    log.info("sensitivity: %d single-decision models scored in %.0f s (reference %.4f); most sensitive: %s",
             len(jobs), table.seconds, reference, ", ".join(f"{c.owner}.{c.dim} -{d:.3f}" for d, c in worst))
    return table
