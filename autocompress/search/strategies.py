"""Strategies: what proposes the next candidate.

The search loop speaks ask/tell with an Optuna study. Optuna's samplers (TPE
with constraints, NSGA-II with constraints, random, QMC) are strategies as
they are; a strategy of our own (a reinforcement-learning agent, the NetAdapt
loop) implements ``Strategy.propose`` and its candidates are enqueued into the
same study, so storage, resume, export and the dashboard do not care which
strategy ran. Strategies see a read-only history (``TrialRecord``s), never the
study itself, and keep no state that a resume could not rebuild from it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

import optuna

from autocompress.search.study import TrialRecord
from autocompress.space import Candidate, SearchSpace


@runtime_checkable
class Strategy(Protocol):
    """A proposer of candidates that learns from finished trials."""

    name: str

    def propose(self, history: Sequence[TrialRecord]) -> Candidate | None:
        """The next candidate to try, or None when the strategy is finished."""


# Budget violations reach the constrained samplers (TPE, NSGA-II) through Trial.set_constraint.
SAMPLERS: dict[str, Callable[[int, int], optuna.samplers.BaseSampler]] = {
    "tpe": lambda seed, n_obj: optuna.samplers.TPESampler(seed=seed, multivariate=True, n_startup_trials=8),
    "nsga2": lambda seed, n_obj: optuna.samplers.NSGAIISampler(seed=seed, population_size=16),
    "random": lambda seed, n_obj: optuna.samplers.RandomSampler(seed=seed),
    "qmc": lambda seed, n_obj: optuna.samplers.QMCSampler(seed=seed, scramble=True, warn_independent_sampling=False),
}


def make_sampler(strategy: str, *, seed: int, n_objectives: int) -> optuna.samplers.BaseSampler:
    if strategy not in SAMPLERS:
        raise ValueError(f"unknown strategy {strategy!r}; expected one of {sorted(SAMPLERS)}")
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
