"""The search loop: propose, price, filter by budget, look up, claim, evaluate, record.

``SearchLoop`` drives an Optuna study with ask/tell. Every proposed candidate
is priced by the cost model first, and its budget violations are the trial's
Optuna constraints. One that breaks a budget is told PRUNED and marked
filtered: it costs no training and holds no objective values, while its
violations still teach the constrained samplers. A candidate the study has
already trained, or another worker is training, is not trained again (see
``_tell_duplicate`` and ``search.claims``). The rest are claimed, then
materialized and scored by the evaluator (a short distillation fine-tune by
default), here (``run_search``) or on a Ray worker. The study holds everything,
so killing the process and running the same search again continues to the
requested number of trials, and any number of processes may share the study.
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import optuna
from optuna.exceptions import UpdateFinishedTrialError
from torch import nn

from autocompress.compress import materialize
from autocompress.hardware import CostModel
from autocompress.search.budget import Budget, BudgetError, check_reachable, feasible
from autocompress.search.claims import Heartbeat, StudyState, fail_dead_claims, resolve
from autocompress.search.strategies import Strategy, enqueue_params, suggest_candidate
from autocompress.search.study import (
    CLAIMED,
    DUPLICATE_OF,
    FAIL_REASON,
    FILTERED,
    RETRY_OF,
    SURPLUS,
    ProposalCounts,
    TrialRecord,
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
    max_failures: int = 5  # stop after this many failed evaluations in a row (a broken set-up, not a candidate)

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
    options = [k for k in space.choice_values("keep") if k != 1.0]
    keeps = list(dict.fromkeys(min(options, key=lambda k: abs(k - want)) for want in (0.75, 0.5, 0.25))) \
        if options else [1.0]
    out: list[Candidate] = []
    for scaling in space.uniform_scalings():
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
    warm_start: Sequence[Candidate] = (),
) -> list[TrialRecord]:
    """Evaluate candidates of ``costs.space`` until the study holds ``run.n_trials`` evaluated ones (or time runs
    out), in this process; other processes may work on the same study at the same time (``search.claims``).

    Returns the feasible Pareto front (accuracy against ``run.objective_costs``). After ``run.max_filtered``
    over-budget proposals (BudgetError) or ``run.max_duplicates`` repeats of trained candidates (SearchStalled)
    since the last trained one, the sampler is given up on; the study keeps every trial. An evaluation that
    raises or diverges is recorded as failed with its reason and the search goes on, up to
    ``run.max_failures`` in a row (EvaluationsFailing). ``warm_start`` candidates are proposed first (see
    ``warm_start_candidates``).
    """
    with quiet_optuna(), SearchLoop(run, study, costs, strategy, warm_start) as loop:
        while (claim := loop.claim()) is not None:
            try:
                accuracy, details, seconds = train_candidate(base_model, claim.candidate, costs.space, evaluate)
            except Exception as exc:  # a failing evaluation is recorded; it never ends the search by itself
                loop.fail(claim, f"{type(exc).__name__}: {exc}")
                continue
            record = loop.finish(claim, accuracy, details, seconds)
            if record is not None and on_trial is not None:
                on_trial(loop.progress, record)
        log.info("study %s: %d trained, %s", study.study_name, loop.progress.evaluated,
                 loop.progress.proposals.summary())
        return pareto_front(records(study), loop.objective_costs)


class EvaluationsFailing(BudgetError):
    """Every recent evaluation failed (raised or diverged): something is wrong beyond one candidate."""


def train_candidate(base_model: nn.Module, candidate: Candidate, space: SearchSpace,
                    evaluate: Evaluate) -> tuple[float, dict[str, Any], float]:
    """Materialize and evaluate a candidate: (accuracy, details, seconds); where a worker trains a claim."""
    started = time.perf_counter()
    model = materialize(base_model, candidate, space)
    details: dict[str, Any] = {"build_s": time.perf_counter() - started}
    accuracy, more = evaluate(model, candidate)
    return float(accuracy), {**more, **details}, time.perf_counter() - started


@dataclass
class Claim:
    """A candidate this worker claimed in the study, to train; its trial stays RUNNING until told."""

    trial: optuna.Trial
    candidate: Candidate
    costs: dict[str, float]
    feasible: bool
    retry_of: int | None = None

    @property
    def number(self) -> int:
        return self.trial.number


#: how often a worker with nothing to claim (the rest of the total is in flight elsewhere) looks again
POLL_S = 0.5


class SearchLoop:
    """One worker's side of a search: propose, price, filter, look up and claim; then record what training gave.

    ``claim`` returns the next candidate to train, ``finish`` and ``fail`` tell its
    trial. Training happens in between, in this process (``run_search``) or on a
    remote worker (the Ray backend), so proposing and recording stay in one place.
    The history is re-read from the study at every claim, so other workers' trials
    count: towards the total, for duplicates, and in what the strategy learns from.
    """

    def __init__(self, run: SearchRun, study: optuna.Study, costs: CostModel, strategy: Strategy | None = None,
                 warm_start: Sequence[Candidate] = ()):
        self.run, self.study, self.costs, self.strategy = run, study, costs, strategy
        self.warm_start = list(warm_start)  # proposed first, each unless the study already holds it
        self.space = costs.space
        self.budgets = list(run.budgets)
        self.objective_costs = list(run.objective_costs)
        self.progress = Progress(target=run.n_trials)
        self.history: list[TrialRecord] = []
        self.exhausted = False  # the strategy has nothing more to propose
        self._deadline = None if run.timeout_s is None else time.perf_counter() + run.timeout_s
        self._filtered_in_a_row = self._duplicates_in_a_row = self._failures_in_a_row = 0
        self.heartbeat = Heartbeat(study)
        self._sync()

    def __enter__(self) -> SearchLoop:
        return self

    def __exit__(self, *exc: object) -> None:
        self.heartbeat.close()

    def _sync(self) -> StudyState:
        """Re-read the study: dead workers' claims failed, everyone's trials in the history and the counts."""
        fail_dead_claims(self.study)
        trials = self.study.get_trials(deepcopy=False)
        self.history = records(self.study, trials)
        state = StudyState.read(self.study, trials)
        self.progress.evaluated = state.evaluated
        self.progress.proposals = ProposalCounts.of(self.history)
        _refresh(self.progress, self.history, self.objective_costs)
        return state

    @property
    def timed_out(self) -> bool:
        return self._deadline is not None and time.perf_counter() >= self._deadline

    @property
    def finished(self) -> bool:
        """Nothing more to claim, ever: the study holds its total, time is up or the strategy is done."""
        return self.exhausted or self.timed_out or self.progress.evaluated >= self.run.n_trials

    def claim(self, *, wait: bool = True) -> Claim | None:
        """The next candidate to train, claimed; None when ``finished``. While the rest of the total is in
        flight on other workers, wait (one of them may die and leave its candidate to retry), or without
        ``wait`` return None at once."""
        while True:
            state = self._sync()
            if self.finished:
                return None
            if state.evaluated + len(state.in_flight) >= self.run.n_trials:
                if not wait:
                    return None
                time.sleep(POLL_S)
                continue
            claim = self._claim_next(state)
            if claim is not None or self.exhausted:
                return claim
            # the total filled up while claiming (another worker's claim came first): look again

    def _claim_next(self, state: StudyState) -> Claim | None:
        retry = state.retryable[0] if state.retryable else None
        trained = dict(state.trained)
        failed = {t.candidate: t.number for t in self.history if t.failed is not None}
        seen = {t.candidate for t in self.history} | set(state.in_flight.values())
        while True:
            warm = next((c for c in self.warm_start if c not in seen), None)
            if retry is not None:
                proposal = retry[1]
            elif warm is not None:
                proposal = warm
            elif self.strategy is not None:
                proposal = self.strategy.propose(self.history)
                if proposal is None:
                    log.info("strategy %s has nothing more to propose", self.strategy.name)
                    self.exhausted = True
                    return None
            else:
                proposal = None  # the study's sampler proposes
            trial, candidate = self._ask(proposal)
            seen.add(candidate)
            retry_of = None
            if retry is not None and candidate == retry[1]:
                retry_of, retry = retry[0], None
                trial.set_user_attr(RETRY_OF, retry_of)
                log.info("trial %d retries trial %d, whose worker died while training it", trial.number, retry_of)
            tick = time.perf_counter()
            cost_values, ok = _price(trial, candidate, self.costs, self.budgets)
            self.progress.scoring_s += time.perf_counter() - tick
            if not ok and not (self.strategy is not None and self.strategy.evaluates_over_budget):
                self._tell_filtered(trial, candidate, cost_values, "over budget")
                continue
            if candidate in failed:
                self._tell_filtered(trial, candidate, cost_values, f"failed before (trial {failed[candidate]})")
                continue
            if candidate in trained:
                self._duplicate(trial, candidate, cost_values, ok, trained[candidate])
                continue
            trial.set_user_attr(CLAIMED, True)
            verdict = resolve(self.study, trial.number, candidate, self.run.n_trials)
            if verdict.outcome == "duplicate":
                self._duplicate(trial, candidate, cost_values, ok, verdict.earlier)
                continue
            if verdict.outcome == "surplus":  # not a failed evaluation: left out of the records
                with self._told(trial):
                    trial.set_user_attr(CLAIMED, False)
                    trial.set_user_attr(SURPLUS, f"not trained: the study reached {self.run.n_trials} trials "
                                                 "trained or in flight while it was claimed")
                    self.study.tell(trial, state=optuna.trial.TrialState.FAIL)
                return None
            self._filtered_in_a_row = self._duplicates_in_a_row = 0
            return Claim(trial, candidate, cost_values, ok, retry_of)

    def _ask(self, proposal: Candidate | None) -> tuple[optuna.Trial, Candidate]:
        """A new trial of the study holding ``proposal`` (or what the study's sampler suggests).

        A proposal is fixed through Optuna's PartialFixedSampler on this process's
        study object, not enqueued: another worker asking the shared study would pop
        an enqueued trial and train this worker's proposal as its own.
        """
        sampler = self.study.sampler
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # PartialFixedSampler
            # a database storage's heartbeat, which Optuna expects from study.optimize; this loop beats for a claim
            warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")
            if proposal is not None:
                self.study.sampler = optuna.samplers.PartialFixedSampler(enqueue_params(proposal, self.space),
                                                                         sampler)
            try:
                trial = self.study.ask()
                self.heartbeat.track(trial)
                trial.set_user_attr("worker", worker_id())
                return trial, suggest_candidate(trial, self.space)
            finally:
                self.study.sampler = sampler

    @contextmanager
    def _told(self, trial: optuna.Trial) -> Iterator[None]:
        """Around telling a trial: it stops beating; if another worker failed it meanwhile (a missed heartbeat, a
        claim undecided too long), the telling is dropped with a warning, and a trained result is lost, not
        recorded twice (its candidate is retried)."""
        try:
            yield
        except UpdateFinishedTrialError:
            log.warning("trial %d was failed by another worker before this one told it; what it held is dropped",
                        trial.number)
        finally:
            self.heartbeat.untrack(trial)

    def _tell_filtered(self, trial: optuna.Trial, candidate: Candidate, cost_values: dict[str, float],
                       why: str) -> None:
        with self._told(trial):
            trial.set_user_attr("evaluated", False)
            trial.set_user_attr(FILTERED, why)
            self.study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        self._add(TrialRecord(trial.number, candidate, cost_values, False, False, None, None, None))
        self._filtered_in_a_row += 1
        if self._filtered_in_a_row >= self.run.max_filtered:
            raise BudgetError(f"the last {self._filtered_in_a_row} proposals all broke the budget(s) "
                              f"{', '.join(map(str, self.budgets))}; the space has few feasible points "
                              f"({self.progress.proposals.summary()})")

    def _duplicate(self, trial: optuna.Trial, candidate: Candidate, cost_values: dict[str, float], ok: bool,
                   original: int) -> None:
        with self._told(trial):
            self._add(_tell_duplicate(self.study, trial, candidate, cost_values, ok, original))
        self._duplicates_in_a_row += 1
        if self._duplicates_in_a_row >= self.run.max_duplicates:
            distinct = len({t.candidate for t in self.history if t.evaluated})
            raise SearchStalled(f"the last {self._duplicates_in_a_row} proposals within the budget(s) repeated "
                                f"candidates already trained; {distinct} distinct candidate(s) trained, "
                                f"{self.run.n_trials} asked for: the sampler has "
                                f"converged or the space has few feasible points left "
                                f"({self.progress.proposals.summary()})")

    def _add(self, record: TrialRecord) -> None:
        """A finished proposal joins the history the strategy reads and the counters the search prints."""
        self.history.append(record)
        self.progress.proposals.add(record)

    def finish(self, claim: Claim, accuracy: float, details: dict[str, Any], seconds: float) -> TrialRecord | None:
        """Record a trained claim (None: its accuracy was not a number, so it is recorded as failed)."""
        if not math.isfinite(accuracy):
            self.fail(claim, f"the evaluation returned accuracy {accuracy}")
            return None
        trial, fidelity = claim.trial, details.get("fidelity", "proxy")
        build_s = float(details.get("build_s", 0.0))
        self.progress.building_s += build_s
        self.progress.evaluating_s += seconds - build_s
        told = False
        with self._told(trial):
            trial.set_user_attr("evaluated", True)
            trial.set_user_attr("accuracy", float(accuracy))
            trial.set_user_attr("fidelity", fidelity)
            trial.set_user_attr("seconds", seconds)
            for key, value in details.items():
                if key not in ("fidelity", "build_s") and isinstance(value, int | float | str):
                    trial.set_user_attr(f"eval_{key}", value)
            self.study.tell(trial, self.run.values(accuracy, claim.costs))
            told = True
        if not told:
            return None
        record = TrialRecord(trial.number, claim.candidate, claim.costs, claim.feasible, True, float(accuracy),
                             fidelity, seconds)
        self._add(record)
        self._failures_in_a_row = 0
        self.progress.evaluated += 1
        self.progress.evaluated_this_run += 1
        _refresh(self.progress, self.history, self.objective_costs)
        log.info("trial %d: accuracy %.4f, %s, %.1f s", record.number, record.accuracy,
                 ", ".join(f"{k} {claim.costs[k]:.4g}" for k in self.objective_costs), record.seconds)
        return record

    def fail(self, claim: Claim, reason: str) -> None:
        """Record a claim whose evaluation failed (raised, diverged, not a number): FAIL with its reason, never
        retried; after ``run.max_failures`` in a row the search stops (EvaluationsFailing)."""
        with self._told(claim.trial):
            claim.trial.set_user_attr("evaluated", False)
            claim.trial.set_user_attr(FAIL_REASON, reason)
            self.study.tell(claim.trial, state=optuna.trial.TrialState.FAIL)
            self._add(TrialRecord(claim.number, claim.candidate, claim.costs, claim.feasible, False, None, None, None,
                                  failed=reason))
        log.warning("trial %d failed: %s", claim.number, reason)
        self._failures_in_a_row += 1
        if self._failures_in_a_row >= self.run.max_failures:
            raise EvaluationsFailing(f"the last {self._failures_in_a_row} evaluations failed, the last with: "
                                     f"{reason}; every trial is kept in the study")


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
