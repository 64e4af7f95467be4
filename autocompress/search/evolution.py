"""Predictor-guided evolution under the budget: every proposal is feasible and the most promising one.

What a CPU hour buys is a few dozen fine-tunes, while the cost model prices
tens of thousands of candidates a second. So, as in Once-for-All's search,
the evolution runs on the cost model and an accuracy predictor, and only its
best unseen candidate is trained:

1. **Anchors** first: for each kind of uniform compression the space offers
   (channel keep alone, keep at 8 bits, keep at each smaller compound scaling,
   and lower weight widths or sparsity where they fit a wider model than those),
   the largest uniform candidate that meets the budgets. They are the usual
   baselines, so the front starts where a practitioner would, and they teach
   the predictor how each kind of compression fares after fine-tuning.
2. Then each proposal fits an ``AccuracyPredictor`` (the sensitivity table's
   additive prior, corrected by the trained trials) and evolves a population
   (tournament parents, uniform crossover, one-step mutations along each
   column's ladder) whose children are **repaired** into the budget: an
   over-budget child steps random columns one notch towards compression until
   the cost model says it fits. The budget holds by construction, so the study
   prices about one proposal per feasible one.
3. For a Pareto search the proposals cycle through latency targets (the
   budget, and tighter fractions of it), so the front spreads along the cost
   axis instead of piling up at the budget.
4. Before the best is picked, every candidate is **filled**: the repair's
   greedy steps in reverse, each choice that still fits the (scaled) budget
   moved one notch up, the least accuracy-costly per share of the budget
   first, until no single move fits. Crossover and repair leave candidates
   anywhere under the budget, and a predictor fitted on a few dozen noisy
   fine-tunes cannot tell a candidate that leaves a few percent of the budget
   unspent from one that spends it on a wider layer.
5. Then every candidate is **relaxed**: each choice moves
   up its ladder (more channels, bits or rank, fewer zeros) as far as the cost
   model says it costs nothing the search limits or trades against. On a CPU,
   weights below 8 bits run on the int8 kernels and zeros in a dense kernel
   cost what non-zeros cost; without this the latency-budget members on
   CIFAR-10 carried 4- and 6-bit weights and 25% sparsity that bought no
   latency and only cost accuracy, which a proxy too noisy to see 0.1 points
   could not weed out. On a profile where low bits pay (an accelerator), or
   when size or energy is budgeted, they stay.

Nothing is kept between proposals: the next one is a function of the history
and the seed (the random stream is seeded by the history's length), so a
resumed search proposes what the first one would have.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from autocompress.hardware import CostModel
from autocompress.search.budget import Budget, BudgetError
from autocompress.search.predictor import AccuracyPredictor
from autocompress.search.sensitivity import Sensitivity
from autocompress.search.study import TrialRecord
from autocompress.space import Candidate

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvolutionConfig:
    anchors: bool = True  # propose the largest uniform candidates that meet the budgets first
    population: int = 32
    generations: int = 10
    mutation_prob: float = 0.1  # per column, in children
    repair_steps: int = 30  # greedy notches towards the budget before a child is blended into a uniform one
    targets: tuple[float, ...] = (1.0, 0.85, 0.7)  # budget fractions cycled through (Pareto objective)
    top_k: int = 3  # the proposal is drawn among the best unseen candidates by predicted accuracy
    sensitivity_values: int = 2  # values scored per column by the sensitivity analysis
    relax: bool = True  # undo choices that buy none of the costs the search limits or trades against
    fill: bool = True  # spend a candidate's slack under its target on the choices that cost the least accuracy

    def __post_init__(self) -> None:
        checks = [
            ("population", self.population >= 4, ">= 4"),
            ("generations", self.generations >= 0, ">= 0"),
            ("mutation_prob", 0 <= self.mutation_prob <= 1, "in [0, 1]"),
            ("repair_steps", self.repair_steps >= 1, ">= 1"),
            ("targets", len(self.targets) >= 1 and all(0 < t <= 1 for t in self.targets), "fractions in (0, 1]"),
            ("top_k", self.top_k >= 1, ">= 1"),
            ("sensitivity_values", self.sensitivity_values >= 1, ">= 1"),
        ]
        for name, ok, expected in checks:
            if not ok:
                raise ValueError(f"{name}: expected {expected}, got {getattr(self, name)!r}")


class PredictorEvolution:
    """The ``evolution`` strategy: see the module docstring."""

    name = "evolution"
    evaluates_over_budget = False

    def __init__(self, costs: CostModel, budgets: Sequence[Budget], sensitivity: Sensitivity, *,
                 config: EvolutionConfig | None = None, seed: int = 0, pareto: bool = True,
                 objective_costs: Sequence[str] = ()):
        self.costs = costs
        self.space = costs.space
        self.encoding = costs.space.encoding
        self.budgets = list(budgets)
        self.sensitivity = sensitivity
        self.config = config or EvolutionConfig()
        self.seed = seed
        self.targets = self.config.targets if pareto else (1.0,)
        self._ladders = [np.asarray(c.ladder) for c in self.encoding.columns]  # most compressed first
        # each value's place on its column's ladder; a value off it (an identity the space does not offer) past the end
        self._rungs = [np.full(len(c.values), len(ladder)) for c, ladder in zip(self.encoding.columns, self._ladders,
                                                                                 strict=True)]
        for rung, ladder in zip(self._rungs, self._ladders, strict=True):
            rung[ladder] = np.arange(len(ladder))
        self._down = self._down_table()
        self._up = self._up_table()
        self._drops = np.zeros(self._down.shape)  # the sensitivity table padded to (columns, values)
        for j, drops in enumerate(sensitivity.drops):
            self._drops[j, :len(drops)] = drops
        self._fallbacks: dict[float, np.ndarray | None] = {}
        self._anchors = self._uniform_anchors() if self.config.anchors else []
        # what relaxing must not make worse: the arrays the budgets read, and the costs a Pareto search trades
        self._priced = sorted({b.cost for b in self.budgets} | set(objective_costs if pareto else ()))
        # ... and, where latency is priced, what neither relaxing nor filling may add: float<->int8 switches between
        # neighbouring units (see _relax)
        self._guard_switches = "latency_ms" in self._priced
        self._guarded = [*self._priced, "boundaries"] if self._guard_switches else self._priced

    # -- feasibility ----------------------------------------------------------------------------
    def _excess(self, rows: np.ndarray, target: float = 1.0) -> np.ndarray:
        """How far each row is over the budgets scaled by ``target`` (summed relative excess; 0 when it fits)."""
        return self._over(self.costs.predict_batch(rows), target)

    def _over(self, predicted: dict[str, np.ndarray], target: float) -> np.ndarray:
        """``_excess`` of rows the cost model has already priced."""
        excess = np.zeros(len(predicted["latency_ms"]))
        for budget in self.budgets:
            excess += np.maximum(budget.violation(predicted) - (target - 1.0), 0.0)
        return excess

    def _fits(self, rows: np.ndarray, target: float = 1.0) -> np.ndarray:
        return self._excess(rows, target) <= 0

    def _repair(self, rows: np.ndarray, rng: np.random.Generator, target: float) -> np.ndarray:
        """Over-budget rows brought into the budget (scaled by ``target``); rows with no way in are dropped.

        First greedily: each step prices every one-notch-down neighbour of every
        over-budget row at once and takes, per row, one of the three with the most
        budget recovered per point of accuracy the sensitivity table says it costs
        (NetAdapt's choice, made on the tables instead of by fine-tuning). A single
        notch does not always pay on real kernels (one int8 layer among float ones
        adds conversions), so rows the greedy steps leave over budget are then
        blended, a growing share of their columns at a time, into the best uniform
        candidate that fits: at worst they become it.
        """
        rows = rows.copy()
        n_cols = rows.shape[1]
        cols = np.arange(n_cols)
        for _ in range(self.config.repair_steps):
            excess = self._excess(rows, target)
            over = np.flatnonzero(excess > 0)
            if not len(over):
                return rows
            current = rows[over]
            down, stepped, neighbours = self._one_notch(current, self._down)
            gained = excess[over][:, None] - self._excess(neighbours, target).reshape(-1, n_cols)
            cost = np.maximum(self._drops[cols, stepped] - self._drops[cols, current], 0.0)
            merit = np.where((down >= 0) & (gained > 1e-12), gained / (cost + 1e-4), -np.inf)
            moves = [(i, j) for i, j in enumerate(self._pick(merit, rng)) if j is not None]
            for i, j in moves:
                rows[over[i], j] = down[i, j]
            if not moves:
                break
        over = np.flatnonzero(self._excess(rows, target) > 0)
        anchor = self._fallback(target)
        if len(over) and anchor is not None:
            for share in (0.25, 0.5, 0.75, 1.0):
                rows[over] = np.where(rng.random((len(over), n_cols)) < share, anchor, rows[over])
                over = over[self._excess(rows[over], target) > 0]
                if not len(over):
                    break
        return rows[self._fits(rows, target)]

    def _fill(self, rows: np.ndarray, rng: np.random.Generator, target: float) -> np.ndarray:
        """Rows grown back up to the budget scaled by ``target``: the repair's greedy steps, reversed.

        Repair and crossover leave rows anywhere under the budget, and the
        predictor cannot tell a candidate that leaves 3% of the latency unspent
        from one that spends it on a wider layer. Each step prices every
        one-notch-up neighbour of every row at once and takes, per row, one of
        the three that still fit with the most accuracy the sensitivity table
        gives back per share of the budget spent (a move that spends nothing
        first). A row stops when no neighbour fits, so every row leaves here
        either at its ceiling or with no single move left that fits. Where
        latency is priced, a move that adds a float<->int8 switch between
        neighbouring units does not fit (see ``_relax``).
        """
        if not self.config.fill or not self.budgets or not len(rows):
            return rows
        rows = rows.copy()
        n_cols = rows.shape[1]
        cols = np.arange(n_cols)
        growing = np.arange(len(rows))
        for _ in range(self.config.repair_steps):
            current = rows[growing]
            up, stepped, neighbours = self._one_notch(current, self._up)
            now, after = self.costs.predict_batch(current), self.costs.predict_batch(neighbours)
            fits = (self._over(after, target) <= 0).reshape(-1, n_cols)
            if self._guard_switches:
                fits &= after["boundaries"].reshape(-1, n_cols) <= now["boundaries"][:, None]
            spent = (self._usage(after).reshape(-1, n_cols) - self._usage(now)[:, None]).clip(min=0.0)
            gained = np.maximum(self._drops[cols, current] - self._drops[cols, stepped], 0.0)
            merit = np.where((up >= 0) & fits, (gained + 1e-4) / (spent + 1e-6), -np.inf)
            moves = [(i, j) for i, j in enumerate(self._pick(merit, rng)) if j is not None]
            for i, j in moves:
                rows[growing[i], j] = up[i, j]
            if not moves:
                break
            growing = growing[[i for i, _ in moves]]
        return rows

    @staticmethod
    def _one_notch(current: np.ndarray, table: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every one-notch neighbour of each row along ``table`` (``_down`` or ``_up``): each column's next value
        (k, C; -1: none), the values stepped to (the current one where none), and the (k * C, C) neighbour rows."""
        cols = np.arange(current.shape[1])
        step = table[cols, current]
        stepped = np.where(step >= 0, step, current)
        neighbours = np.repeat(current[:, None, :], len(cols), axis=1)
        neighbours[:, cols, cols] = stepped
        return step, stepped, neighbours.reshape(-1, len(cols))

    @staticmethod
    def _pick(merit: np.ndarray, rng: np.random.Generator) -> list[int | None]:
        """Per row, one of its three columns of highest finite merit, at random; None where it has none."""
        picks: list[int | None] = []
        for row_merit in merit:
            best = np.argsort(-row_merit)[:3]
            best = best[np.isfinite(row_merit[best])]
            picks.append(int(best[rng.integers(len(best))]) if len(best) else None)
        return picks

    def _usage(self, predicted: dict[str, np.ndarray]) -> np.ndarray:
        """How much of the budgets each priced row uses (summed fractions of their limits)."""
        return np.sum([budget.violation(predicted) + 1.0 for budget in self.budgets], axis=0)

    def _relax(self, rows: np.ndarray) -> np.ndarray:
        """Each row with every column moved as far up its ladder (towards the identity) as costs nothing.

        Column by column, the loosest value first: a row takes it when none of
        the priced costs (``_priced``) rises and, where latency is priced, it
        adds no float<->int8 switch between neighbouring units. Costs never
        rise, so a row that fit the budget still fits. Nothing to price (no
        budget, no cost objective): nothing is free, rows stay as they are.

        Why the switches: a float layer between int8 ones converts its input
        and output, which no per-layer table sees and a calibration prices only
        on average, so a cost model may say a float 1x1 shortcut costs what its
        int8 twin costs, and it does not. On CIFAR-10 at 0.35x, the export
        timed members whose shortcuts had relaxed to float 22% over their
        prediction, and an all-int8 member in the same process 5% over.
        """
        if not self.config.relax or not self._priced or not len(rows):
            return rows
        rows = rows.copy()
        now = self._price(rows)
        for j, ladder in enumerate(self._ladders):
            if len(ladder) < 2:
                continue
            at = self._rungs[j][rows[:, j]]  # a value off the ladder stays where it is
            for k in range(len(ladder) - 1, 0, -1):  # the loosest first
                movable = np.flatnonzero(at < k)
                if not len(movable):
                    continue
                trial = rows[movable].copy()
                trial[:, j] = ladder[k]
                priced = self._price(trial)
                ok = np.all(priced <= now[movable] * (1 + 1e-9), axis=1)
                free = movable[ok]
                rows[free, j] = ladder[k]
                now[free] = priced[ok]
                at[free] = k
        return rows

    def _price(self, rows: np.ndarray) -> np.ndarray:
        """(rows, priced costs and float<->int8 switches) on the cost model."""
        predicted = self.costs.predict_batch(rows)
        return np.stack([np.asarray(predicted[name], dtype=float) for name in self._guarded], axis=1)

    def _fallback(self, target: float) -> np.ndarray | None:
        """The uniform candidate that fits the budget scaled by ``target`` with the best prior accuracy."""
        if target not in self._fallbacks:
            anchors = self._uniform_anchors(target)
            rows = self.encoding.encode(anchors) if anchors else None
            self._fallbacks[target] = None if rows is None else rows[np.argmax(self.sensitivity.prior(rows))]
        return self._fallbacks[target]

    def _up_table(self) -> np.ndarray:
        """(columns, values): the value index one notch towards the identity, -1 at the top of the ladder or off it."""
        table = np.full(self._down.shape, -1, dtype=np.intp)
        for j, ladder in enumerate(self._ladders):
            table[j, ladder[:-1]] = ladder[1:]
        return table

    def _down_table(self) -> np.ndarray:
        """(columns, values): the value index one notch towards compression, -1 at the most compressed; an
        identity the space does not offer steps to the least compressed offered value."""
        columns = self.encoding.columns
        table = np.full((len(columns), max(len(c.values) for c in columns)), -1, dtype=np.intp)
        for j, ladder in enumerate(self._ladders):
            for value in range(len(columns[j].values)):
                where = np.flatnonzero(ladder == value)
                if not len(where):
                    table[j, value] = ladder[-1] if ladder[-1] != value else -1
                elif where[0] > 0:
                    table[j, value] = ladder[where[0] - 1]
        return table

    # -- anchors --------------------------------------------------------------------------------
    def _uniform_anchors(self, target: float = 1.0) -> list[Candidate]:
        """Largest uniform candidate of each kind that fits the budgets scaled by ``target``.

        A kind is a scaling (a phi, or a depth, width and resolution) and a storage level, the same in every
        layer: float, 8-bit, then each lower weight width (8-bit activations) and each sparsity, least compressed
        first. Float and 8-bit always join; a lower level joins only when it fits a larger keep than every kind
        before it of its scaling. So under a size budget the uniform 4-bit and sparse models are trained first, and
        under a CPU's latency budget, where 4-bit weights run on the int8 kernels and zeros are not skipped, they are
        not.
        """
        keeps = self.space.choice_values("keep")[::-1] or [1.0]
        w_bits = self.space.choice_values("w_bits")
        a8 = 8 if 8 in self.space.choice_values("a_bits") else None
        levels = [{"w_bits": 32, "a_bits": 32, "sparsity": 0.0}]
        if 8 in w_bits:
            levels.append({"w_bits": 8, "a_bits": 8, "sparsity": 0.0})
        always = len(levels)
        lower = [{"w_bits": w, "a_bits": a8 or w, "sparsity": s} for w in w_bits if w <= 8
                 for s in self.space.choice_values("sparsity") or [0.0] if w < 8 or s > 0]
        levels += sorted(lower, key=lambda v: (-(v["w_bits"] * (1 - v["sparsity"]) + (v["sparsity"] > 0)),
                                               v["sparsity"]))
        anchors: list[Candidate] = []
        for scaling in self.space.uniform_scalings():
            widest = len(keeps)  # index into keeps (widest first) of the widest kind of this scaling so far
            for i, level in enumerate(levels):
                family = [self.space.uniform(keep=k, **scaling, **level) for k in keeps]
                ok = np.flatnonzero(self._fits(self.encoding.encode(family), target))
                if not len(ok) or (i >= always and ok[0] >= widest):
                    continue
                widest = min(widest, ok[0])
                if family[ok[0]] not in anchors:
                    anchors.append(family[ok[0]])
        return anchors

    # -- proposing ------------------------------------------------------------------------------
    def propose(self, history: Sequence[TrialRecord]) -> Candidate:
        seen = {t.candidate for t in history}
        for anchor in self._anchors:
            if anchor not in seen:
                return anchor
        rng = np.random.default_rng([self.seed, len(history)])
        trained = [t for t in history if t.evaluated and t.accuracy is not None]
        rows = self.encoding.encode([t.candidate for t in trained]) if trained else np.empty((0, len(self.encoding)),
                                                                                           dtype=np.intp)
        predictor = AccuracyPredictor.fit(self.sensitivity, rows, [t.accuracy for t in trained])
        target = self.targets[len(trained) % len(self.targets)]
        pool = self._evolve(predictor, rows, rng, target)
        if not pool and target < 1.0:  # a tighter target than the space's uniform candidates reach
            target, pool = 1.0, self._evolve(predictor, rows, rng, 1.0)
        seen_rows = {tuple(r) for r in self.encoding.encode(list(seen))} if seen else set()
        # filled and relaxed rows first; once every one of them is seen (a small space), the rows as evolved
        relaxed = list(np.unique(self._relax(self._fill(np.stack(pool), rng, target)), axis=0)) if pool else []
        fresh = ([r for r in relaxed if tuple(r) not in seen_rows]
                 or [r for r in pool if tuple(r) not in seen_rows])
        if not fresh:
            raise BudgetError(f"evolution: no unseen candidate meets {', '.join(map(str, self.budgets))} "
                              f"after {len(history)} proposals")
        scores = predictor.predict(np.stack(fresh))
        best = np.argsort(-scores)[: self.config.top_k]
        pick = best[rng.integers(len(best))]
        log.debug("evolution: target %.2f of the budget, predicted accuracy %.4f (fitted on %d trials)", target,
                  scores[pick], predictor.fitted_on)
        return self.encoding.decode(fresh[pick])

    def _evolve(self, predictor: AccuracyPredictor, trained_rows: np.ndarray, rng: np.random.Generator,
                target: float) -> list[np.ndarray]:
        """A population evolved on predicted accuracy under the (scaled) budget; returned best first."""
        size = self.config.population
        seeds = [trained_rows] if len(trained_rows) else []
        if self._anchors:
            seeds.append(self.encoding.encode(self._anchors))
        if not seeds:  # no anchors (switched off) and nothing trained: start from the uncompressed model
            seeds.append(self.encoding.encode([self.space.identity()]))
        parents = np.vstack(seeds)
        spread = self._mutate(parents[rng.integers(len(parents), size=size * 2)], rng, prob=0.3)
        population = self._repair(np.vstack([parents, spread]), rng, target)
        if not len(population):
            return []
        population = self._select(predictor, population, size)
        for _ in range(self.config.generations):
            children = self._children(population, rng)
            children = self._repair(children, rng, target)
            population = self._select(predictor, np.vstack([population, children]), size)
        return list(population)

    def _children(self, population: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Tournament parents, uniform crossover per column, one-notch mutations along the ladders."""
        n, width = population.shape
        pick = lambda: np.minimum(rng.integers(n, size=n), rng.integers(n, size=n))  # noqa: E731 (best-first)
        a, b = population[pick()], population[pick()]
        children = np.where(rng.random((n, width)) < 0.5, a, b)
        return self._mutate(children, rng, prob=self.config.mutation_prob)

    def _mutate(self, rows: np.ndarray, rng: np.random.Generator, *, prob: float) -> np.ndarray:
        """Each column, with probability ``prob``, moved one notch up or down its ladder."""
        rows = rows.copy()
        for i, j in zip(*np.nonzero(rng.random(rows.shape) < prob), strict=True):
            ladder = self._ladders[j]
            if len(ladder) < 2:
                continue
            where = np.flatnonzero(ladder == rows[i, j])
            k = where[0] if len(where) else len(ladder) - 1
            rows[i, j] = ladder[int(np.clip(k + rng.choice((-1, 1)), 0, len(ladder) - 1))]
        return rows

    def _select(self, predictor: AccuracyPredictor, rows: np.ndarray, size: int) -> np.ndarray:
        """The ``size`` distinct rows with the best predicted accuracy, best first."""
        rows = np.unique(rows, axis=0)
        order = np.argsort(-predictor.predict(rows), kind="stable")
        return rows[order[:size]]

