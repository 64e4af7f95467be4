"""Strategies: what proposes the next candidate.

The search loop speaks ask/tell with an Optuna study. Optuna's samplers (TPE
with constraints, NSGA-II with constraints, QMC) are strategies as they are; a
strategy of our own (random search under the budget, a reinforcement-learning
agent, the NetAdapt loop) implements ``Strategy.propose`` and its candidates are enqueued into the
same study, so storage, resume, export and the dashboard do not care which
strategy ran. Strategies see a read-only history (``TrialRecord``s), never the
study itself, and keep no state that a resume could not rebuild from it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import optuna

from autocompress.hardware import CostModel
from autocompress.search.budget import Budget
from autocompress.search.study import TrialRecord
from autocompress.space import Candidate, SearchSpace


@runtime_checkable
class Strategy(Protocol):
    """A proposer of candidates that learns from finished trials."""

    name: str
    # A strategy whose path runs through over-budget models (NetAdapt) sets ``evaluates_over_budget = True``:
    # the engine then fine-tunes its proposals even when they break a budget (they never enter the front).

    def propose(self, history: Sequence[TrialRecord]) -> Candidate | None:
        """The next candidate to try, or None when the strategy is finished."""


# Budget violations reach the constrained samplers (TPE, NSGA-II) through Trial.set_constraint.
SAMPLERS: dict[str, Callable[[int, int], optuna.samplers.BaseSampler]] = {
    "tpe": lambda seed, n_obj: optuna.samplers.TPESampler(seed=seed, multivariate=True, n_startup_trials=8),
    "nsga2": lambda seed, n_obj: optuna.samplers.NSGAIISampler(seed=seed, population_size=16),
    "qmc": lambda seed, n_obj: optuna.samplers.QMCSampler(seed=seed, scramble=True, warn_independent_sampling=False),
}


#: strategies of our own, built from the search's cost model and budgets (their trials use Optuna's random
#: sampler only as the carrier of the enqueued values)
COST_MODEL_STRATEGIES = ("random", "ddpg", "netadapt")
STRATEGY_NAMES = (*sorted(SAMPLERS), *COST_MODEL_STRATEGIES)


def make_strategy(name: str, costs: CostModel, budgets: Sequence[Budget], *, seed: int,
                  reference_accuracy: float | None = None, options: Mapping[str, Any] | None = None) -> Strategy:
    """A strategy built on the cost model, by name; ``options`` are fields of its config class."""
    if name == "random":
        from autocompress.search.random_search import FeasibleRandomSearch

        if options:
            raise ValueError(f"strategy_options: random search takes none, got {sorted(options)}")
        return FeasibleRandomSearch(costs, budgets, seed=seed)
    if name == "ddpg":
        from autocompress.search.ddpg import DDPGConfig, DDPGStrategy

        return DDPGStrategy(costs, budgets, seed=seed, config=_config(DDPGConfig, options))
    if name == "netadapt":
        from autocompress.search.netadapt import NetAdaptConfig, NetAdaptStrategy

        return NetAdaptStrategy(costs, budgets, reference_accuracy=reference_accuracy,
                                config=_config(NetAdaptConfig, options))
    raise ValueError(f"unknown strategy {name!r}; expected one of {list(COST_MODEL_STRATEGIES)}")


def _config(cls: type, options: Mapping[str, Any] | None):
    options = dict(options or {})
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ValueError(f"strategy_options: unknown key(s) {unknown} for {cls.__name__}; expected some of "
                         f"{sorted(known)}")
    if "dims" in options:
        options["dims"] = tuple(options["dims"])
    return cls(**options)


def make_sampler(strategy: str, *, seed: int, n_objectives: int) -> optuna.samplers.BaseSampler:
    if strategy in COST_MODEL_STRATEGIES:
        return optuna.samplers.RandomSampler(seed=seed)
    if strategy not in SAMPLERS:
        raise ValueError(f"unknown strategy {strategy!r}; expected one of {list(STRATEGY_NAMES)}")
    return SAMPLERS[strategy](seed, n_objectives)


def suggest_candidate(trial: optuna.Trial, space: SearchSpace) -> Candidate:
    """Ask the trial's sampler for every dimension of the space (enqueued values come back as fixed)."""
    flat = {}
    for unit, dims in space.choices.items():
        for dim, options in dims.items():
            flat[f"{unit}:{dim}"] = trial.suggest_categorical(f"{unit}:{dim}", list(options))
    picked = {key: trial.suggest_categorical(f"scaling:{key}", list(options))
              for key, options in space.scaling_choices.items()}
    layers: dict[str, dict[str, float]] = {}
    for key, value in flat.items():
        unit, _, dim = key.rpartition(":")
        layers.setdefault(unit, {})[dim] = value
    return Candidate(layers, space.scaling_for(picked))


def enqueue_params(candidate: Candidate, space: SearchSpace) -> dict[str, float]:
    """The Optuna params that make ``suggest_candidate`` return ``candidate``."""
    params = {f"{u}:{d}": v for u, dims in candidate.layers.items() for d, v in dims.items()
              if u in space.choices and d in space.choices[u]}
    scaling = candidate.scaling
    for key in space.scaling_choices:
        params[f"scaling:{key}"] = scaling[key]
    return params
