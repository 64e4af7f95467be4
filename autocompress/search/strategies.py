"""Strategies: what proposes the next candidate, registered by name.

The search loop speaks ask/tell with an Optuna study. Every strategy is one
entry of ``STRATEGIES``, built the same way: by name, with keyword options
validated against its options class (the keys of ``strategy_options``).
An entry gives the sampler the study asks and, for a strategy of our own
(random search under the budget, a reinforcement-learning agent, the NetAdapt
loop), a proposer built on the cost model whose candidates are enqueued into
the same study; so storage, resume, export and the dashboard do not care which
strategy ran. Proposers see a read-only history (``TrialRecord``s), never the
study itself, and keep no state that a resume could not rebuild from it.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Container, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Protocol, runtime_checkable

import optuna
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial, TrialState
from pydantic import TypeAdapter, ValidationError

from autocompress.hardware import CostModel
from autocompress.search.budget import Budget
from autocompress.search.ddpg import DDPGConfig, DDPGStrategy
from autocompress.search.evolution import EvolutionConfig, PredictorEvolution
from autocompress.search.netadapt import NetAdaptConfig, NetAdaptStrategy
from autocompress.search.random_search import FeasibleRandomSearch
from autocompress.search.sensitivity import Sensitivity
from autocompress.search.study import TrialRecord, is_filtered
from autocompress.space import Candidate, SearchSpace


@runtime_checkable
class Strategy(Protocol):
    """A proposer of candidates that learns from finished trials."""

    name: str
    #: True for a strategy whose path runs through over-budget models (NetAdapt): the engine then fine-tunes
    #: its proposals even when they break a budget (they never enter the front)
    evaluates_over_budget: bool

    def propose(self, history: Sequence[TrialRecord]) -> Candidate | None:
        """The next candidate to try, or None when the strategy is finished."""


@dataclass(frozen=True)
class StrategyContext:
    """What a proposer is built from: the space priced by the cost model, the resolved budgets, the seed."""

    costs: CostModel
    budgets: tuple[Budget, ...]
    seed: int
    reference_accuracy: float | None = None  # the uncompressed model's validation accuracy
    sensitivity: Sensitivity | None = None  # per-column accuracy drops, for a strategy that asks for them
    pareto: bool = True  # the search trades accuracy against costs (else: max accuracy under the budgets)
    objective_costs: tuple[str, ...] = ()  # the costs a Pareto search trades accuracy against


@dataclass(frozen=True)
class NoOptions:
    """A strategy without options."""


@dataclass(frozen=True)
class TPEOptions:
    n_startup_trials: int = 8
    multivariate: bool = True


@dataclass(frozen=True)
class NSGA2Options:
    population_size: int = 16


@dataclass(frozen=True)
class QMCOptions:
    qmc_type: str = "sobol"
    scramble: bool = True


@dataclass(frozen=True)
class RegisteredStrategy:
    """One strategy: its options class, the sampler its study asks and, on the cost model, its proposer."""

    name: str
    options: type  # a dataclass; its fields are the valid ``strategy_options`` keys
    sampler: Callable[[Any, int], optuna.samplers.BaseSampler]  # (options, seed) -> the study's sampler
    build: Callable[[Any, StrategyContext], Strategy] | None = None  # None: the sampler proposes by itself
    #: values per column its sensitivity table scores (from the parsed options), or None: it needs no table
    sensitivity_values: Callable[[Any], int] | None = None

    def parse(self, options: Mapping[str, Any] | None) -> Any:
        """``options`` as an instance of the options class; errors name ``strategy_options.<key>``."""
        options = dict(options or {})
        known = [f.name for f in dataclasses.fields(self.options)]
        unknown = sorted(set(options) - set(known))
        if unknown:
            expected = f"expected some of {known}" if known else "it takes none"
            raise ValueError(f"strategy_options.{unknown[0]}: not an option of strategy {self.name!r}; {expected}")
        try:
            return TypeAdapter(self.options).validate_python(options)
        except ValidationError as exc:
            first = exc.errors()[0]
            loc = [str(part) for part in first["loc"]]
            reason = str(first["ctx"]["error"]) if "error" in first.get("ctx", {}) else first["msg"]
            named, _, rest = reason.partition(": ")
            if not loc and named in known:  # a check of the options class that names its field
                loc, reason = [named], rest
            raise ValueError(f"{'.'.join(['strategy_options', *loc])}: {reason} (strategy {self.name!r})") from None


_REGISTRY: dict[str, RegisteredStrategy] = {}
#: every registered strategy, by name (read-only; add one with ``register_strategy``)
STRATEGIES: Mapping[str, RegisteredStrategy] = MappingProxyType(_REGISTRY)


def _carrier(options: Any, seed: int) -> optuna.samplers.BaseSampler:
    """The sampler of a proposer's study: it only carries the enqueued values (nothing left to sample)."""
    return optuna.samplers.RandomSampler(seed=seed)


def register_strategy(name: str, *, options: type = NoOptions,
                      sampler: Callable[[Any, int], optuna.samplers.BaseSampler] | None = None,
                      build: Callable[[Any, StrategyContext], Strategy] | None = None,
                      sensitivity_values: Callable[[Any], int] | None = None) -> RegisteredStrategy:
    """Add a strategy: an Optuna ``sampler`` factory, or a proposer ``build``er on the cost model (which may
    ask for a per-layer sensitivity table, scored at ``sensitivity_values(options)`` values per column)."""
    if (sampler is None) == (build is None):
        raise ValueError(f"strategy {name!r}: give either a sampler factory or a proposer builder")
    if name in _REGISTRY:
        raise ValueError(f"strategy {name!r} is already registered")
    entry = RegisteredStrategy(name, options, sampler or _carrier, build, sensitivity_values)
    _REGISTRY[name] = entry
    return entry


#: the strategy a search uses unless told otherwise, chosen by the benchmarks (experiments/results/strategies.md and
#: the CIFAR-10 table): every proposal meets the budget, and it found the most accurate feasible models
DEFAULT_STRATEGY = "evolution"


def strategy_names() -> list[str]:
    return sorted(_REGISTRY)


def registered(name: str) -> RegisteredStrategy:
    if name not in _REGISTRY:
        raise ValueError(f"strategy: unknown {name!r}; expected one of {strategy_names()}")
    return _REGISTRY[name]


def check_strategy(name: str, options: Mapping[str, Any] | None = None) -> Any:
    """Validate a strategy name and its options without building anything; returns the parsed options."""
    return registered(name).parse(options)


def make_sampler(name: str, *, seed: int, options: Mapping[str, Any] | None = None) -> optuna.samplers.BaseSampler:
    """The Optuna sampler a study of strategy ``name`` asks."""
    entry = registered(name)
    return entry.sampler(entry.parse(options), seed)


def make_strategy(name: str, costs: CostModel, budgets: Sequence[Budget], *, seed: int,
                  reference_accuracy: float | None = None, sensitivity: Sensitivity | None = None,
                  pareto: bool = True, objective_costs: Sequence[str] = (),
                  options: Mapping[str, Any] | None = None) -> Strategy | None:
    """The proposer of strategy ``name`` on the cost model, or None when its Optuna sampler proposes."""
    entry = registered(name)
    parsed = entry.parse(options)
    if entry.build is None:
        return None
    if entry.sensitivity_values is not None and sensitivity is None:
        raise ValueError(f"strategy {name!r} needs a sensitivity table (search.sensitivity.compute_sensitivity)")
    return entry.build(parsed, StrategyContext(costs, tuple(budgets), seed, reference_accuracy, sensitivity, pareto,
                                               tuple(objective_costs)))


class FilteredNSGAIISampler(optuna.samplers.NSGAIISampler):
    """NSGA-II whose generations also hold the proposals the cost model filtered.

    A filtered proposal is told PRUNED (never trained, it has no accuracy), but
    NSGA-II builds its populations and its search space from COMPLETE trials
    only: under a tight budget its random first generation would wait for
    ``population_size`` trained points, which random sampling almost never
    reaches. Here it sees them as complete trials with the worst objective
    values and their budget violations, so, by Deb's constrained domination,
    they rank behind every feasible trial in order of violation, and the
    population moves towards the budget as it did when they were complete.
    Like any Optuna sampler, one instance serves one study.
    """

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self._filtered_copies: dict[int, FrozenTrial] = {}  # filtered trials never change: copied once

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return super().infer_relative_search_space(_FilteredAsComplete(study, self._filtered_copies), trial)

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        return super().sample_relative(_FilteredAsComplete(study, self._filtered_copies), trial, search_space)


class _FilteredAsComplete:
    """The study as NSGA-II reads it: filtered trials appear COMPLETE, with the worst objective values."""

    def __init__(self, study: optuna.Study, copies: dict[int, FrozenTrial]):
        self._study = study
        self._copies = copies
        self._worst = [float("-inf") if d == optuna.study.StudyDirection.MAXIMIZE else float("inf")
                       for d in study.directions]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._study, name)

    def _get_trials(self, deepcopy: bool = True, states: Container[TrialState] | None = None,
                    use_cache: bool = False) -> list[FrozenTrial]:
        wants_complete = states is None or TrialState.COMPLETE in states
        fetch = None if states is None else (tuple(states) + (TrialState.PRUNED,) if wants_complete else states)
        out = []
        for trial in self._study._get_trials(deepcopy=deepcopy, states=fetch, use_cache=use_cache):
            if wants_complete and is_filtered(trial):
                trial = self._as_complete(trial, keep=not deepcopy)
            elif states is not None and trial.state not in states:
                continue
            out.append(trial)
        return out

    def _as_complete(self, trial: FrozenTrial, *, keep: bool) -> FrozenTrial:
        """A complete copy of a filtered trial; shared copies (``keep``) are made once per trial."""
        if keep and trial.number in self._copies:
            return self._copies[trial.number]
        view = copy.copy(trial)
        view.state, view.values = TrialState.COMPLETE, self._worst
        if keep:
            self._copies[trial.number] = view
        return view


register_strategy("tpe", options=TPEOptions, sampler=lambda o, seed: optuna.samplers.TPESampler(
    seed=seed, multivariate=o.multivariate, n_startup_trials=o.n_startup_trials))
register_strategy("nsga2", options=NSGA2Options,
                  sampler=lambda o, seed: FilteredNSGAIISampler(seed=seed, population_size=o.population_size))
register_strategy("qmc", options=QMCOptions, sampler=lambda o, seed: optuna.samplers.QMCSampler(
    seed=seed, qmc_type=o.qmc_type, scramble=o.scramble, warn_independent_sampling=False))
register_strategy("random", build=lambda o, ctx: FeasibleRandomSearch(ctx.costs, ctx.budgets, seed=ctx.seed))
register_strategy("evolution", options=EvolutionConfig,
                  build=lambda o, ctx: PredictorEvolution(ctx.costs, ctx.budgets, ctx.sensitivity, config=o,
                                                          seed=ctx.seed, pareto=ctx.pareto,
                                                          objective_costs=ctx.objective_costs),
                  sensitivity_values=lambda o: o.sensitivity_values)
register_strategy("ddpg", options=DDPGConfig,
                  build=lambda o, ctx: DDPGStrategy(ctx.costs, ctx.budgets, config=o, seed=ctx.seed))
register_strategy("netadapt", options=NetAdaptConfig, build=lambda o, ctx: NetAdaptStrategy(
    ctx.costs, ctx.budgets, config=o, reference_accuracy=ctx.reference_accuracy))


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
