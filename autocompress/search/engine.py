"""The search loop: propose, price, filter by budget, look up, evaluate, record.

``run_search`` drives an Optuna study with ask/tell. Every proposed candidate
is priced by the cost model first, and its budget violations are the trial's
Optuna constraints. One that breaks a budget is told PRUNED and marked
filtered: it costs no training and holds no objective values, while its
violations still teach the constrained samplers. A candidate the study has
already trained is not trained again (see ``_tell_duplicate``). The rest are
materialized and scored by the evaluator (a short distillation fine-tune by
default). The study holds everything, so killing the process and running the
same search again continues to the requested number of trials.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import optuna
from torch import nn

from autocompress.compress import materialize
from autocompress.hardware import CostModel
from autocompress.search.budget import Budget, BudgetError, check_reachable, feasible
from autocompress.search.strategies import Strategy, enqueue_params, suggest_candidate
from autocompress.search.study import (
    DUPLICATE_OF,
    FILTERED,
    ProposalCounts,
    TrialRecord,
    fail_stale_trials,
    records,
    worker_id,
)
from autocompress.space import Candidate, SearchSpace

log = logging.getLogger(__name__)

#: cost objectives a Pareto search can trade accuracy against (cost-model array names)
COST_OBJECTIVES = ("latency_ms", "energy_mj", "size_bytes", "macs", "bitops")
OBJECTIVES = ("pareto", "constrained")

Evaluate = Callable[[nn.Module, Candidate], tuple[float, dict[str, Any]]]


def check_objective(objective: str, objective_costs: Sequence[str]) -> None:
    """The objective and the costs it trades accuracy against, checked by name (errors name the field)."""
    if objective not in OBJECTIVES:
        raise ValueError(f"objective: expected one of {list(OBJECTIVES)}, got {objective!r}")
    for name in objective_costs:
        if name not in COST_OBJECTIVES:
            raise ValueError(f"objective_costs: unknown cost {name!r}; expected some of {list(COST_OBJECTIVES)}")


@dataclass(frozen=True)
class SearchRun:
    """The loop's settings: what is optimized, under which budgets, for how long."""

    budgets: tuple[Budget, ...] = ()
    objective: str = "constrained"  # "constrained" (max accuracy) or "pareto" (accuracy against costs)
    objective_costs: tuple[str, ...] = ("latency_ms",)  # the costs a "pareto" search trades accuracy against
    n_trials: int = 20  # evaluated trials in the study, counting those of earlier runs
    timeout_s: float | None = None
    max_filtered: int = 2000  # give up after this many over-budget proposals since the last trained one
    max_duplicates: int = 200  # give up after this many repeats of trained candidates since the last new one

    def __post_init__(self) -> None:
        object.__setattr__(self, "budgets", tuple(self.budgets))
        object.__setattr__(self, "objective_costs", tuple(self.objective_costs))
        check_objective(self.objective, self.objective_costs)

    @property
    def metric_names(self) -> list[str]:
        """The study's objectives, as the dashboard names them."""
        return ["accuracy"] if self.objective == "constrained" else ["accuracy", *self.objective_costs]

    @property
    def directions(self) -> list[str]:
        return ["maximize"] + ["minimize"] * (len(self.metric_names) - 1)

    def values(self, accuracy: float, costs: dict[str, float]) -> list[float]:
        """A trained trial's objective values, in ``metric_names`` order."""
        return [accuracy, *(costs[c] for c in self.metric_names[1:])]


@contextmanager
def quiet_optuna() -> Iterator[None]:
    """Optuna's per-trial INFO lines (thousands of filtered proposals) hidden for a while, then restored."""
    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(max(level, optuna.logging.WARNING))
    try:
        yield
    finally:
        optuna.logging.set_verbosity(level)


class SearchStalled(BudgetError):
    """The sampler keeps proposing candidates the study has already trained: nothing new within the budgets."""


@dataclass
class Progress:
    """What a progress bar shows; updated after every trial."""

    target: int
    evaluated: int = 0
    proposals: ProposalCounts = field(default_factory=ProposalCounts)  # the study's, earlier runs included
    best_accuracy: float | None = None
    front_size: int = 0
    started: float = field(default_factory=time.perf_counter)
    evaluated_this_run: int = 0
    scoring_s: float = 0.0  # cost-model pricing and budget checks, this run
    building_s: float = 0.0  # materialize, this run
    evaluating_s: float = 0.0  # fine-tuning and accuracy, this run

    @property
    def eta_s(self) -> float | None:
        if not self.evaluated_this_run:
            return None
        per_trial = (time.perf_counter() - self.started) / self.evaluated_this_run
        return per_trial * max(0, self.target - self.evaluated)


def pareto_front(trials: Sequence[TrialRecord], costs: Sequence[str]) -> list[TrialRecord]:
    """Feasible, evaluated trials no other one beats on accuracy and every cost at once."""
    pool = [t for t in trials if t.feasible and t.evaluated and t.accuracy is not None]
    front = []
    for t in pool:
        dominated = any(
            o.accuracy >= t.accuracy and all(o.costs[c] <= t.costs[c] for c in costs)
            and (o.accuracy > t.accuracy or any(o.costs[c] < t.costs[c] for c in costs))
            for o in pool
        )
        if not dominated:
            front.append(t)
    return sorted(front, key=lambda t: t.costs[costs[0]] if costs else -t.accuracy)


def reachability_probe(costs: CostModel, space: SearchSpace, budgets: list[Budget], seed: int) -> None:
    """Fail early, with the cheapest reachable cost, when no candidate can meet the budgets.

    "Most compressed" is not always cheapest on real kernels (int8 conversions,
    channel padding), so uniform corners at every bit-width and rank extreme
    are priced beside the warm-start points and many random candidates.
    """
    bits = sorted({b for dims in space.choices.values() for b in dims.get("w_bits", ())})
    corners = [space.uniform(keep=0.0, rank=rank, w_bits=b, a_bits=b, sparsity=0.99, phi=-99, depth=0.0,
                             width=0.0, resolution=0.0) for b in bits for rank in (0.0, 1.0)]
    encoded = np.vstack([space.encoding.encode(corners + warm_start_candidates(space)),
                         space.encoding.random(20_000, rng=seed)])
    check_reachable(budgets, costs.predict_batch(encoded))


def warm_start_candidates(space: SearchSpace) -> list[Candidate]:
    """Uniform candidates (one keep ratio, one precision, one scaling everywhere): sane first points.

    A sampler's first generation is random, and random points of a joint space
    mix every kind of compression at once; these give it (and the Pareto front)
    well-behaved anchors across compression levels. Over-budget ones are
    filtered like any other proposal and cost no training.
    """
    options = sorted({k for dims in space.choices.values() for k in dims.get("keep", ())} - {1.0})
    keeps = list(dict.fromkeys(min(options, key=lambda k: abs(k - want)) for want in (0.75, 0.5, 0.25))) \
        if options else [1.0]
    scalings = [{"phi": phi} for phi in sorted(space.scaling_choices.get("phi", (0.0,)), reverse=True)] or [{}]
    out: list[Candidate] = []
    for scaling in scalings:
        for bits in (8, 32):
            for keep in keeps:
                candidate = space.uniform(keep=keep, w_bits=bits, a_bits=bits, **scaling)
                if candidate not in out:
                    out.append(candidate)
    return out


def run_search(
    run: SearchRun,
    *,
    study: optuna.Study,
    costs: CostModel,
    base_model: nn.Module,
    evaluate: Evaluate,
    strategy: Strategy | None = None,
    on_trial: Callable[[Progress, TrialRecord], None] | None = None,
) -> list[TrialRecord]:
    """Evaluate candidates of ``costs.space`` until ``run.n_trials`` are evaluated in the study (or time runs out).

    Returns the feasible Pareto front (accuracy against ``run.objective_costs``). After ``run.max_filtered``
    over-budget proposals (BudgetError) or ``run.max_duplicates`` repeats of trained candidates (SearchStalled)
    since the last trained one, the sampler is given up on; the study keeps every trial.
    """
    with quiet_optuna():
        return _loop(run, study, costs, base_model, evaluate, strategy, on_trial)


def _loop(run: SearchRun, study: optuna.Study, costs: CostModel, base_model: nn.Module, evaluate: Evaluate,
          strategy: Strategy | None, on_trial: Callable[[Progress, TrialRecord], None] | None) -> list[TrialRecord]:
    space, budgets, objective_costs = costs.space, list(run.budgets), list(run.objective_costs)
    fail_stale_trials(study)
    history = records(study)
    trained: dict[Candidate, int] = {}  # each trained candidate's first trial
    for t in history:
        if t.evaluated:
            trained.setdefault(t.candidate, t.number)
    progress = Progress(target=run.n_trials, evaluated=sum(t.evaluated for t in history),
                        proposals=ProposalCounts.of(history))
    _refresh(progress, history, objective_costs)
    deadline = None if run.timeout_s is None else time.perf_counter() + run.timeout_s
    filtered_in_a_row = duplicates_in_a_row = 0  # since the last trained trial
    while progress.evaluated < run.n_trials and (deadline is None or time.perf_counter() < deadline):
        if strategy is not None:
            proposal = strategy.propose(history)
            if proposal is None:
                log.info("strategy %s has nothing more to propose", strategy.name)
                break
            study.enqueue_trial(enqueue_params(proposal, space), skip_if_exists=False)
        trial = study.ask()
        trial.set_user_attr("worker", worker_id())
        candidate = suggest_candidate(trial, space)
        tick = time.perf_counter()
        cost_values, ok = _price(trial, candidate, costs, budgets)
        progress.scoring_s += time.perf_counter() - tick
        if not ok and not (strategy is not None and strategy.evaluates_over_budget):
            trial.set_user_attr("evaluated", False)
            trial.set_user_attr(FILTERED, "over budget")
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            _add(history, progress, TrialRecord(trial.number, candidate, cost_values, False, False, None, None, None))
            filtered_in_a_row += 1
            if filtered_in_a_row >= run.max_filtered:
                raise BudgetError(f"the last {filtered_in_a_row} proposals all broke the budget(s) "
                                  f"{', '.join(map(str, budgets))}; the space has few feasible points "
                                  f"({progress.proposals.summary()})")
            continue
        if candidate in trained:
            _add(history, progress, _tell_duplicate(study, trial, candidate, cost_values, ok, trained[candidate]))
            duplicates_in_a_row += 1
            if duplicates_in_a_row >= run.max_duplicates:
                raise SearchStalled(f"the last {duplicates_in_a_row} proposals within the budget(s) repeated "
                                    f"candidates already trained; {len(trained)} distinct candidate(s) trained, "
                                    f"{run.n_trials} asked for: the sampler has converged or the space has few "
                                    f"feasible points left ({progress.proposals.summary()})")
            continue
        filtered_in_a_row = duplicates_in_a_row = 0
        record = _train(trial, candidate, cost_values, ok, space, base_model, evaluate, progress)
        study.tell(trial, run.values(record.accuracy, cost_values))
        _add(history, progress, record)
        trained[candidate] = record.number
        progress.evaluated += 1
        progress.evaluated_this_run += 1
        _refresh(progress, history, objective_costs)
        log.info("trial %d: accuracy %.4f, %s, %.1f s", record.number, record.accuracy,
                 ", ".join(f"{k} {cost_values[k]:.4g}" for k in objective_costs), record.seconds)
        if on_trial is not None:
            on_trial(progress, record)
    log.info("study %s: %d trained, %s", study.study_name, progress.evaluated, progress.proposals.summary())
    return pareto_front(records(study), objective_costs)


def _price(trial: optuna.Trial, candidate: Candidate, costs: CostModel,
           budgets: Sequence[Budget]) -> tuple[dict[str, float], bool]:
    """Predicted costs and whether every budget holds, stored on the trial (violations as its constraints)."""
    predicted = costs.predict_batch(costs.space.encoding.encode([candidate]))
    cost_values = {k: float(predicted[k][0]) for k in COST_OBJECTIVES}
    ok = bool(feasible(list(budgets), predicted)[0])
    trial.set_user_attr("candidate", candidate.to_json())
    trial.set_user_attr("costs", cost_values)
    for budget in budgets:
        trial.set_constraint(budget.text, float(budget.violation(predicted)[0]))
    trial.set_user_attr("feasible", ok)
    return cost_values, ok


def _tell_duplicate(study: optuna.Study, trial: optuna.Trial, candidate: Candidate, cost_values: dict[str, float],
                    ok: bool, original: int) -> TrialRecord:
    """A candidate the study already trained: told PRUNED with ``duplicate_of``, its result left where it is.

    Why PRUNED and not COMPLETE with the original's values: COMPLETE trials stay
    the distinct trained candidates, so the dashboard's Pareto plot, ``best_trials``,
    the front and ``n_trials`` each count a model once. Samplers still learn:
    TPE files a pruned trial among the worse ones, which steers it off the
    point it keeps repeating while the original keeps its place among the
    good ones; NSGA-II does not see it (it is not a filtered proposal), so a
    generation fills with distinct individuals and the original stays in the
    population; a proposer reads it in its history (a longer history reseeds the
    random ones) and finds the result on the original trial. The constraints
    were set like any proposal's.
    """
    trial.set_user_attr("evaluated", False)
    trial.set_user_attr(DUPLICATE_OF, original)
    study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    log.debug("trial %d repeats trial %d: not trained again", trial.number, original)
    return TrialRecord(trial.number, candidate, cost_values, ok, False, None, None, None, duplicate_of=original)


def _train(trial: optuna.Trial, candidate: Candidate, cost_values: dict[str, float], ok: bool, space: SearchSpace,
           base_model: nn.Module, evaluate: Evaluate, progress: Progress) -> TrialRecord:
    """Materialize and evaluate a candidate; its result is stored on the trial (which the caller tells)."""
    started = time.perf_counter()
    model = materialize(base_model, candidate, space)
    built = time.perf_counter()
    accuracy, details = evaluate(model, candidate)
    seconds = time.perf_counter() - started
    progress.building_s += built - started
    progress.evaluating_s += seconds - (built - started)
    trial.set_user_attr("evaluated", True)
    trial.set_user_attr("accuracy", float(accuracy))
    trial.set_user_attr("fidelity", details.get("fidelity", "proxy"))
    trial.set_user_attr("seconds", seconds)
    for key, value in details.items():
        if key not in ("fidelity",) and isinstance(value, int | float | str):
            trial.set_user_attr(f"eval_{key}", value)
    return TrialRecord(trial.number, candidate, cost_values, ok, True, float(accuracy),
                       details.get("fidelity", "proxy"), seconds)


def _add(history: list[TrialRecord], progress: Progress, record: TrialRecord) -> None:
    """A finished proposal joins the history the strategy reads and the counters the search prints."""
    history.append(record)
    progress.proposals.add(record)


def _refresh(progress: Progress, history: Sequence[TrialRecord], objective_costs: Sequence[str]) -> None:
    feasible_acc = [t.accuracy for t in history if t.feasible and t.evaluated and t.accuracy is not None]
    progress.best_accuracy = max(feasible_acc) if feasible_acc else None
    progress.front_size = len(pareto_front(history, list(objective_costs)))


def create_study(storage: optuna.storages.BaseStorage, name: str, run: SearchRun,
                 sampler: optuna.samplers.BaseSampler) -> optuna.Study:
    """Create (or open, to resume) the study of a search, its objectives named for the dashboard."""
    with quiet_optuna():
        study = optuna.create_study(study_name=name, storage=storage, directions=run.directions, sampler=sampler,
                                    load_if_exists=True)
    with warnings.catch_warnings():  # experimental since Optuna 3.2, and what the dashboard reads
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(run.metric_names)
    return study
