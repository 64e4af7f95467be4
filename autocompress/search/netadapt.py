"""NetAdapt (Yang et al. 2018): tighten the budget step by step, one layer at a time, and keep every step.

Start from the uncompressed model. Each iteration sets, for every budget's
metric, the target ``current - dR`` (never below the budget's limit; a budget
already met must not get worse), with ``dR`` a fraction of the reference cost
that decays from one iteration to the next. For every unit and every decided
dimension (keep, bits, rank; and the global scaling) it proposes the least
compression of that one dimension that meets all the targets — found from the
cost model, not by measuring. Every proposal is short-term fine-tuned (the
search's evaluator), the best is kept (highest accuracy, or least accuracy
lost per resource saved), and the loop repeats until every budget holds.
Each iteration's model is a member of the family the search returns; the
feasible ones are exported, and the export's fine-tune is NetAdapt's
long-term fine-tune.

Differences from the paper: a proposal is rebuilt from the trained reference
model rather than from the previous iteration's fine-tuned weights, so any
trial can be rebuilt exactly from the study; and when an iteration has more
proposals than ``max_proposals``, the smallest changes (fewest rungs moved,
then cheapest) are fine-tuned.

Like every strategy here it keeps no state: the iterations are replayed from
the history (which proposal each evaluated trial was), so a resumed search
goes on where it stopped.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from autocompress.hardware import CostModel
from autocompress.search.budget import Budget, feasible
from autocompress.search.layerwise import DEFAULT_DIMS, Layerwise
from autocompress.search.study import TrialRecord
from autocompress.space import Candidate

log = logging.getLogger(__name__)


@dataclass
class NetAdaptConfig:
    dims: tuple[str, ...] = DEFAULT_DIMS
    step: float = 0.1  # first iteration's dR, as a fraction of the reference cost of each budget's metric
    decay: float = 0.9  # dR shrinks by this factor every iteration
    min_step: float = 0.005  # an iteration whose targets no single change meets halves dR down to this
    max_proposals: int = 8  # proposals fine-tuned per iteration
    select: str = "accuracy"  # or "efficiency": accuracy lost per resource saved

    def __post_init__(self) -> None:
        if self.select not in ("accuracy", "efficiency"):
            raise ValueError(f"select: expected 'accuracy' or 'efficiency', got {self.select!r}")
        if not (0 < self.step <= 1 and 0 < self.decay <= 1 and 0 < self.min_step <= self.step):
            raise ValueError("NetAdaptConfig: expected 0 < min_step <= step <= 1 and 0 < decay <= 1")
        if self.max_proposals < 1:
            raise ValueError("max_proposals: expected at least 1")


@dataclass(frozen=True)
class Iteration:
    """One NetAdapt iteration: where it started, its targets, its proposals and (once known) its pick."""

    index: int
    current: np.ndarray  # encoded candidate the iteration starts from
    targets: np.ndarray  # per budget, in the budget's metric
    proposals: list[np.ndarray]
    picked: TrialRecord | None


class NetAdaptStrategy:
    """NetAdapt as a search strategy; its proposals are evaluated even when they are still over budget."""

    name = "netadapt"
    evaluates_over_budget = True

    def __init__(self, costs: CostModel, budgets: Sequence[Budget], *, config: NetAdaptConfig | None = None,
                 reference_accuracy: float | None = None):
        if not budgets:
            raise ValueError("NetAdapt needs at least one budget to tighten towards")
        self.config = config or NetAdaptConfig()
        self.layerwise = Layerwise(costs, budgets, self.config.dims)
        self.budgets = list(budgets)
        self.reference_accuracy = reference_accuracy

    def _meets(self, row: np.ndarray) -> bool:
        return bool(feasible(self.budgets, self.layerwise.costs.predict_batch(row[None, :]))[0])

    # -- one iteration ----------------------------------------------------------------------------
    def proposals(self, current: np.ndarray, targets: np.ndarray) -> list[np.ndarray]:
        """Per unit and dimension, the least compression of that one dimension that meets every target."""
        lw = self.layerwise
        found: list[tuple[int, float, int, np.ndarray]] = []
        now = self.layerwise.budget_metrics(current[None, :])[0]
        for t, step in enumerate(lw.steps):
            for col, ladder in zip(step.columns, step.ladders, strict=True):
                where = np.flatnonzero(ladder == current[col])
                at = int(where[0]) if len(where) else len(ladder) - 1
                if at == 0:
                    continue
                rows = np.repeat(current[None, :], at, axis=0)
                rows[:, col] = ladder[:at][::-1]  # one rung down first, the most compressed last
                costs = self.layerwise.budget_metrics(rows)
                ok = np.flatnonzero((costs <= targets * (1 + 1e-9)).all(axis=1)
                                    & (costs < now * (1 - 1e-9)).any(axis=1))
                if len(ok):
                    first = int(ok[0])
                    found.append((first + 1, float(costs[first, 0]), t, rows[first]))
        found.sort(key=lambda f: (f[0], f[1], f[2]))
        return [row for *_, row in found[: self.config.max_proposals]]

    def _score(self, record: TrialRecord, current_accuracy: float | None, current_cost: np.ndarray) -> float:
        if self.config.select == "accuracy" or current_accuracy is None:
            return float(record.accuracy)
        after = np.array([b.values(record.costs) for b in self.budgets])
        saved = ((current_cost - after) / self.layerwise.reference_metrics).sum()
        return -(current_accuracy - float(record.accuracy)) / max(float(saved), 1e-12)

    # -- replay -------------------------------------------------------------------------------------
    def iterations(self, history: Sequence[TrialRecord]) -> tuple[list[Iteration], np.ndarray | None]:
        """Replay the loop against the history: finished iterations, and the next row to evaluate (or None)."""
        lw = self.layerwise
        trained = [r for r in history if r.evaluated and r.accuracy is not None]
        rows = lw.encoding.encode(r.candidate for r in trained)
        evaluated = {tuple(row): r for row, r in zip(rows, trained, strict=True)}
        current = lw.identity_row.copy()
        current_accuracy = self.reference_accuracy
        done: list[Iteration] = []
        if self._meets(current):  # nothing to tighten: the reference itself is the answer
            row = tuple(current)
            return done, (None if row in evaluated else current)
        index = 0
        while not self._meets(current):
            proposals, targets = self._iteration_proposals(current, index)
            if not proposals:
                log.warning("NetAdapt: no single change lowers the cost any further; stopping over budget")
                return done, None
            missing = [p for p in proposals if tuple(p) not in evaluated]
            if missing:
                done.append(Iteration(index, current, targets, proposals, None))
                return done, missing[0]
            records = [evaluated[tuple(p)] for p in proposals]
            cost = self.layerwise.budget_metrics(current[None, :])[0]
            best = max(range(len(records)), key=lambda i: (self._score(records[i], current_accuracy, cost), -i))
            done.append(Iteration(index, current, targets, proposals, records[best]))
            current, current_accuracy = proposals[best], float(records[best].accuracy)
            index += 1
        return done, None

    def _iteration_proposals(self, current: np.ndarray, index: int) -> tuple[list[np.ndarray], np.ndarray]:
        """Proposals at this iteration's targets; dR is halved while no single change can meet them."""
        cost = self.layerwise.budget_metrics(current[None, :])[0]
        limits = np.array([b.limit for b in self.budgets])
        step = self.config.step * self.config.decay ** index
        while True:
            targets = np.where(cost > limits, np.maximum(limits, cost - step * self.layerwise.reference_metrics), cost)
            proposals = self.proposals(current, targets)
            if proposals or step <= self.config.min_step:
                return proposals, targets
            step = max(step / 2, self.config.min_step)

    def family(self, history: Sequence[TrialRecord]) -> list[TrialRecord]:
        """The model each finished iteration kept, in order: NetAdapt's output."""
        return [it.picked for it in self.iterations(history)[0] if it.picked is not None]

    def propose(self, history: Sequence[TrialRecord]) -> Candidate | None:
        _, row = self.iterations(history)
        return None if row is None else self.layerwise.encoding.decode(row)
