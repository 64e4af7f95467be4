"""Claims: how any number of workers share one study without training a candidate twice or past the total.

A worker that means to train a candidate first claims it: its trial, still
RUNNING, gets the user attribute ``claimed``. The storage numbers trials in one
order, and that order is the claims' priority, as in Lamport's bakery lock:
after claiming, a worker waits until every lower-numbered RUNNING trial has
claimed or finished, then yields to an earlier claim of the same candidate, and
trains only while the study's trained trials plus the earlier claims in flight
are fewer than the total asked for. It needs no lock beyond the storage's own,
so it holds for a journal file shared by the processes of one machine and for a
database shared by many.

A claim whose worker died (its process is gone, or on a database its heartbeat
stopped) is failed by whoever notices, and its candidate is retried once.
"""

from __future__ import annotations

import logging
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import optuna
from optuna.trial import FrozenTrial, TrialState

from autocompress.search.study import CLAIMED, FAIL_REASON, RETRY_OF, fail_stale_trials
from autocompress.space import Candidate

log = logging.getLogger(__name__)

#: how long a claim waits for a lower-numbered trial to decide before it stops waiting for that one
PATIENCE_S = 120.0


@dataclass
class StudyState:
    """The study as the claims see it, read once."""

    trained: dict[Candidate, int] = field(default_factory=dict)  # each trained candidate's first trial
    evaluated: int = 0  # COMPLETE trained trials
    in_flight: dict[int, Candidate] = field(default_factory=dict)  # claimed RUNNING trials
    undecided: dict[int, str] = field(default_factory=dict)  # RUNNING, not claimed yet: number -> worker
    retryable: list[tuple[int, Candidate]] = field(default_factory=list)  # died while training, not retried

    @classmethod
    def read(cls, study: optuna.Study) -> StudyState:
        state = cls()
        retried: set[int] = set()
        failed: list[FrozenTrial] = []
        for trial in study.get_trials(deepcopy=False):
            attrs = trial.user_attrs
            if RETRY_OF in attrs:
                retried.add(int(attrs[RETRY_OF]))
            if trial.state == TrialState.COMPLETE and attrs.get("evaluated"):
                state.evaluated += 1
                state.trained.setdefault(Candidate.from_json(attrs["candidate"]), trial.number)
            elif trial.state == TrialState.RUNNING:
                if attrs.get(CLAIMED):
                    state.in_flight[trial.number] = Candidate.from_json(attrs["candidate"])
                else:
                    state.undecided[trial.number] = attrs.get("worker", "")
            elif trial.state == TrialState.FAIL and attrs.get(CLAIMED) and FAIL_REASON not in attrs:
                failed.append(trial)
        for trial in failed:
            candidate = Candidate.from_json(trial.user_attrs["candidate"])
            if trial.number not in retried and RETRY_OF not in trial.user_attrs and candidate not in state.trained:
                state.retryable.append((trial.number, candidate))
        return state


def fail_dead_claims(study: optuna.Study) -> int:
    """Fail the trials of workers that are gone: local ones by process id, others by Optuna's heartbeat."""
    with warnings.catch_warnings():  # experimental since Optuna 2.9, unchanged since
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)  # a database storage with a heartbeat; else it does nothing
    return fail_stale_trials(study)


@dataclass(frozen=True)
class Verdict:
    """What a claim came to: ``train``, ``duplicate`` (of ``earlier``, in flight) or ``surplus``."""

    outcome: str
    earlier: int | None = None
    evaluated: int = 0
    in_flight: int = 0


def resolve(study: optuna.Study, number: int, candidate: Candidate, total: int, *,
            poll_s: float = 0.05, patience_s: float = PATIENCE_S) -> Verdict:
    """Decide the claim of trial ``number`` (already marked claimed) against every earlier one."""
    first_seen: dict[int, float] = {}
    while True:
        state = StudyState.read(study)
        now = time.monotonic()
        waiting = [n for n in state.undecided if n < number
                   and now - first_seen.setdefault(n, now) < patience_s]
        if not waiting:
            break
        if any(now - first_seen[n] > 5 * poll_s for n in waiting):
            fail_dead_claims(study)  # a lower trial's worker may have died between asking and claiming
        time.sleep(poll_s)
    for n in sorted(set(first_seen) & set(state.undecided)):
        log.warning("trial %d stayed undecided for %.0f s (worker %s); deciding trial %d without it", n,
                    patience_s, state.undecided[n], number)
    earlier = {n: c for n, c in state.in_flight.items() if n < number}
    for n, other in sorted(earlier.items()):
        if other == candidate:
            return Verdict("duplicate", n, state.evaluated, len(earlier))
    if candidate in state.trained:
        return Verdict("duplicate", state.trained[candidate], state.evaluated, len(earlier))
    if state.evaluated + len(earlier) >= total:
        return Verdict("surplus", None, state.evaluated, len(earlier))
    return Verdict("train", None, state.evaluated, len(earlier))


@contextmanager
def heartbeat(study: optuna.Study, trial: optuna.Trial) -> Iterator[None]:
    """While a claim trains, record its heartbeat where the storage keeps them (a database storage opened with
    a heartbeat interval), so another worker can tell a dead worker's claim from a long fine-tune."""
    storage = study._storage  # Optuna's heartbeat API is on the storage, which a Study does not expose publicly
    interval = storage.get_heartbeat_interval() if hasattr(storage, "record_heartbeat") else None
    if not interval:
        yield
        return
    stop = threading.Event()

    def beat() -> None:
        while not stop.is_set():
            storage.record_heartbeat(trial._trial_id)
            stop.wait(interval)

    thread = threading.Thread(target=beat, name=f"heartbeat-{trial.number}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
