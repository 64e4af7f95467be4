"""The space seen as a sequence of decisions, one per compressible unit: what AMC, HAQ and NetAdapt walk.

A step owns some columns of the space's encoding (a unit's keep ratio, bits
and rank, or the global scaling). Each column's offered choices lie on its
*ladder* (``Column.ladder``), from most to least compressed, so a number in
[0, 1] picks a choice and "one rung down" means "a little more compression".
Everything here works on encoded rows (``SearchSpace.encoding``), so pricing
thousands of partial decisions is one vectorized call.

Budgets are guaranteed by construction with *completions*: uniform corners
(every remaining unit at its smallest keep, one bit-width, smallest or full
rank) and the cheapest rows coordinate descent finds for each budget. A
choice for the current step is admissible when some completion of the
remaining steps still meets every budget. If the first step has an
admissible choice, every later step does too (the completion that admitted
the previous choice admits its own value for this step), so an episode that
only takes admissible choices always ends feasible — AMC's
resource-constrained action bound, for several budgets and a joint space.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from autocompress.hardware import CostModel
from autocompress.search.budget import Budget, BudgetError, feasible
from autocompress.space import DIMENSIONS, Encoding, SearchSpace

#: dimensions a layerwise strategy decides by default (sparsity only pays off on sparse kernels)
DEFAULT_DIMS = ("keep", "w_bits", "a_bits", "rank")


@dataclass(frozen=True)
class Step:
    """One decision: a unit (or the global scaling) and the columns it sets, in ``dims`` order."""

    name: str  # unit name, or "scaling"
    dims: tuple[str, ...]  # decided dimensions, a subset of the strategy's dims (positions kept)
    columns: tuple[int, ...]  # encoding column of each decided dimension
    ladders: tuple[np.ndarray, ...]  # per column: choice indices, most compressed first
    slots: tuple[int, ...]  # action component of each decided dimension

    def combos(self) -> tuple[np.ndarray, np.ndarray]:
        """Every combination of this step's choices: (n, columns) choice indices and ladder positions."""
        rungs = np.array(list(itertools.product(*(range(len(lad)) for lad in self.ladders))), dtype=np.intp)
        rungs = rungs.reshape(-1, len(self.columns))
        indices = np.stack([lad[rungs[:, i]] for i, lad in enumerate(self.ladders)], axis=1)
        positions = rungs / np.array([max(len(lad) - 1, 1) for lad in self.ladders], dtype=float)
        return indices, positions


class Layerwise:
    """Decision steps, ladders and budget-respecting completions of one space on one cost model."""

    def __init__(self, costs: CostModel, budgets: Sequence[Budget], dims: Sequence[str] = DEFAULT_DIMS):
        unknown = set(dims) - set(DIMENSIONS)
        if unknown:
            raise ValueError(f"dims: unknown dimension(s) {sorted(unknown)}")
        self.costs = costs
        self.space: SearchSpace = costs.space
        self.encoding: Encoding = costs.space.encoding
        self.budgets = list(budgets)
        self.dims = tuple(dims)
        self.identity_row = self.encoding.encode([self.space.identity()])[0]
        self.reference_metrics = self.budget_metrics(self.identity_row[None, :])[0]  # the uncompressed model
        self.steps: list[Step] = []
        columns = self.encoding.columns
        decided = [(i, columns[i].dim) for i in self.encoding.scaling_columns if len(columns[i].ladder) > 1]
        if decided:  # global scaling is decided first: it sets every unit's shapes
            self.steps.append(Step("scaling", tuple(d for _, d in decided), tuple(i for i, _ in decided),
                                   tuple(columns[i].ladder for i, _ in decided), tuple(range(len(decided)))))
        for unit, choices in self.space.choices.items():
            picked = [(self.encoding.column(unit, d), d) for d in self.dims if len(choices.get(d, ())) > 1]
            if picked:
                self.steps.append(Step(unit, tuple(d for _, d in picked), tuple(i for i, _ in picked),
                                       tuple(columns[i].ladder for i, _ in picked),
                                       tuple(self.dims.index(d) for _, d in picked)))
        self.action_dim = max(len(self.dims), max((len(s.dims) for s in self.steps if s.name == "scaling"),
                                                  default=0))
        self.completions = self._completions()

    # -- ladders ----------------------------------------------------------------------------
    @staticmethod
    def rung(ladder: np.ndarray, action: float) -> int:
        """The ladder choice a number in [0, 1] picks (0: most compressed, 1: least)."""
        return int(ladder[int(round(float(np.clip(action, 0.0, 1.0)) * (len(ladder) - 1)))])

    @staticmethod
    def position(ladder: np.ndarray, choice: int) -> float:
        """The inverse of ``rung``: where a choice sits on its ladder, in [0, 1]."""
        where = np.flatnonzero(ladder == choice)
        at = int(where[0]) if len(where) else int(np.argmin(np.abs(ladder - choice)))
        return at / (len(ladder) - 1) if len(ladder) > 1 else 1.0

    def step_action(self, row: np.ndarray, t: int) -> np.ndarray:
        """(action_dim,) ladder positions step ``t`` of an encoded candidate took (unused slots at 1.0)."""
        out = np.ones(self.action_dim)
        step = self.steps[t]
        for slot, col, ladder in zip(step.slots, step.columns, step.ladders, strict=True):
            out[slot] = self.position(ladder, int(row[col]))
        return out

    def actions_of(self, row: np.ndarray) -> np.ndarray:
        """(steps, action_dim) ladder positions an encoded candidate took, step by step."""
        return np.array([self.step_action(row, t) for t in range(len(self.steps))]).reshape(-1, self.action_dim)

    # -- completions --------------------------------------------------------------------------
    def _completions(self) -> np.ndarray:
        """(K, columns) corner rows: every step at a uniform extreme (only decided columns differ)."""
        rows = []
        for w, a, low_rank in itertools.product(self._decided_values("w_bits"), self._decided_values("a_bits"),
                                                (True, False)):
            row = self.identity_row.copy()
            for step in self.steps:
                for dim, col, ladder in zip(step.dims, step.columns, step.ladders, strict=True):
                    values = np.array([self.encoding.columns[col].values[i] for i in ladder], dtype=float)
                    want = {"w_bits": w, "a_bits": a}.get(dim)
                    if want is not None:
                        row[col] = ladder[int(np.argmin(np.abs(values - want)))]
                    elif dim == "rank" and not low_rank:
                        row[col] = ladder[-1]
                    else:
                        row[col] = ladder[0]  # keep, sparsity, scaling, low rank: most compressed
            rows.append(row)
        corners = np.array(rows, dtype=np.intp)
        # uniform corners are rarely the cheapest point (an int8 layer between float ones pays conversions, a
        # low-rank pair can cost more than the layer it replaces): add the cheapest rows coordinate descent finds
        objectives = [lambda p, b=b: b.values(p) / b.limit for b in self.budgets]
        if len(self.budgets) > 1:
            objectives.append(lambda p: np.max([b.values(p) / b.limit for b in self.budgets], axis=0))
        found = [self._descend(corners, objective) for objective in objectives]
        return np.unique(np.vstack([corners, *found]) if found else corners, axis=0)

    def _decided_values(self, dim: str) -> list[float | None]:
        """Every value any step can pick for ``dim`` ([None] when no step decides it)."""
        return sorted({self.encoding.columns[c].values[i] for s in self.steps
                       for d, c, lad in zip(s.dims, s.columns, s.ladders, strict=True) if d == dim
                       for i in lad}) or [None]

    def _descend(self, starts: np.ndarray, objective, sweeps: int = 2) -> np.ndarray:
        """Coordinate descent over the steps from the best start: the cheapest row it reaches."""
        row = starts[int(np.argmin(objective(self.costs.predict_batch(starts))))].copy()
        for _ in range(sweeps):
            for step in self.steps:
                combos, _ = step.combos()
                rows = np.repeat(row[None, :], len(combos), axis=0)
                rows[:, list(step.columns)] = combos
                row = rows[int(np.argmin(objective(self.costs.predict_batch(rows))))]
        return row[None, :]

    def admissible(self, prefix: np.ndarray, t: int, combos: np.ndarray) -> np.ndarray:
        """Which choice combinations of step ``t`` leave a feasible completion after ``prefix``.

        ``prefix`` is a row whose steps before ``t`` are decided; the columns of
        step ``t`` and later are taken from ``combos`` and the completions.
        """
        step = self.steps[t]
        later = [c for s in self.steps[t + 1:] for c in s.columns]
        k = len(self.completions)
        rows = np.repeat(prefix[None, :], len(combos) * k, axis=0)
        rows[:, later] = np.tile(self.completions[:, later], (len(combos), 1))
        rows[:, list(step.columns)] = np.repeat(combos, k, axis=0)
        ok = feasible(self.budgets, self.costs.predict_batch(rows)).reshape(len(combos), k)
        return ok.any(axis=1)

    def check_start(self) -> None:
        """Fail clearly when not even the corners of the space meet the budgets."""
        if not self.steps:
            raise BudgetError("the space has no decisions to make (every layer has a single choice)")
        combos, _ = self.steps[0].combos()
        if not self.admissible(self.identity_row, 0, combos).any():
            predicted = self.costs.predict_batch(self.completions)
            cheapest = "; ".join(f"{b}: cheapest corner {b.values(predicted).min():.4g}" for b in self.budgets)
            raise BudgetError(f"no compressed corner of the space meets the budget(s) ({cheapest}); "
                              "a layer-by-layer strategy cannot guarantee a feasible result")

    def clip(self, prefix: np.ndarray, t: int, wanted: np.ndarray) -> np.ndarray:
        """The admissible choices of step ``t`` nearest (on the ladders) to the wanted action."""
        step = self.steps[t]
        combos, positions = step.combos()
        ok = self.admissible(prefix, t, combos)
        if not ok.any():  # only reachable when the first step was not checked
            raise BudgetError(f"step {step.name}: no choice leaves a feasible completion")
        target = np.array([wanted[s] for s in step.slots])
        distance = np.abs(positions - target).sum(axis=1) + np.where(ok, 0.0, np.inf)
        # ties go to the less compressed choice (larger ladder positions)
        best = np.lexsort((-positions.sum(axis=1), distance))[0]
        return combos[best]

    # -- rows -------------------------------------------------------------------------------------
    def prefix_rows(self, row: np.ndarray) -> np.ndarray:
        """(steps + 1, columns): row t has steps before t decided as in ``row``, the rest at identity."""
        out = np.repeat(self.identity_row[None, :], len(self.steps) + 1, axis=0)
        for t, step in enumerate(self.steps):
            out[t + 1:, list(step.columns)] = row[list(step.columns)]
        return out

    def budget_metrics(self, rows: np.ndarray) -> np.ndarray:
        """(N, budgets) each row's cost in each budget's metric."""
        predicted = self.costs.predict_batch(np.asarray(rows))
        return np.stack([b.values(predicted) for b in self.budgets], axis=1) if self.budgets \
            else np.zeros((len(rows), 0))

    def budget_fractions(self, rows: np.ndarray) -> np.ndarray:
        """(N, budgets) each row's cost in each budget's metric, as a fraction of the reference's."""
        return self.budget_metrics(rows) / self.reference_metrics
