"""Random search under the budget: uniform over the candidates that meet every budget.

Random points of a joint space almost never meet a tight budget (ResNet-20
at 3x32x32 under ``latency<=0.7x``: about one in 300; under 0.6x none of
200,000), and a sampler that proposes them fills the study with filtered
trials. This strategy rejection-samples
through the cost model instead, in batches priced at once, so every proposal
it makes is feasible, and each is uniform over the feasible part of the space:
the "random search under the same constraint" baseline of AMC and NetAdapt.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from autocompress.hardware import CostModel
from autocompress.search.budget import Budget, BudgetError, feasible
from autocompress.search.study import TrialRecord
from autocompress.space import Candidate


class FeasibleRandomSearch:
    name = "random"
    evaluates_over_budget = False

    def __init__(self, costs: CostModel, budgets: Sequence[Budget], *, seed: int = 0, batch: int = 20_000,
                 max_draws: int = 2_000_000):
        self.costs = costs
        self.budgets = list(budgets)
        self.seed = seed
        self.batch = batch
        self.max_draws = max_draws

    def propose(self, history: Sequence[TrialRecord]) -> Candidate:
        rng = np.random.default_rng([self.seed, len(history)])  # the same history gives the same proposal
        drawn = 0
        while drawn < self.max_draws:
            rows = self.costs.space.encoding.random(self.batch, rng=rng)
            ok = np.flatnonzero(feasible(self.budgets, self.costs.predict_batch(rows)))
            if len(ok):
                return self.costs.space.encoding.decode(rows[ok[0]])
            drawn += self.batch
        raise BudgetError(f"random search: none of {drawn:,} uniform draws of the space meets "
                          f"{', '.join(map(str, self.budgets))}; try a strategy that walks towards the budget "
                          "(ddpg, netadapt) or a looser budget")
