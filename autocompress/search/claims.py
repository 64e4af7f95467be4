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
stopped) is failed by whoever notices, and its candidate is retried once. A
trial still undecided after PATIENCE_S (its worker died between asking and
claiming, where no heartbeat tells) is failed too.
"""

from __future__ import annotations

import logging
import threading
import time
import warnings
from dataclasses import dataclass, field

import optuna
from optuna.trial import FrozenTrial, TrialState

from autocompress.search.study import CLAIMED, FAIL_REASON, RETRY_OF, fail_stale_trials, fail_trial
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
    def read(cls, study: optuna.Study, trials: list[FrozenTrial] | None = None) -> StudyState:
        """``trials``: the study's, where the caller has read them already."""
        state = cls()
        retried: set[int] = set()
        failed: list[FrozenTrial] = []
        for trial in study.get_trials(deepcopy=False) if trials is None else trials:
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
        log.warning("trial %d stayed undecided for %.0f s (worker %r, gone?): failed, so no claim waits for it "
                    "again", n, patience_s, state.undecided[n])
        fail_trial(study, n)
    earlier = {n: c for n, c in state.in_flight.items() if n < number}
    for n, other in sorted(earlier.items()):
        if other == candidate:
            return Verdict("duplicate", n, state.evaluated, len(earlier))
    if candidate in state.trained:
        return Verdict("duplicate", state.trained[candidate], state.evaluated, len(earlier))
    if state.evaluated + len(earlier) >= total:
        return Verdict("surplus", None, state.evaluated, len(earlier))
    return Verdict("train", None, state.evaluated, len(earlier))


class Heartbeat:
    """Heartbeats for every RUNNING trial of this process, from its ``ask`` to its ``tell``, where the storage
    keeps them (a database storage opened with a heartbeat interval); elsewhere it does nothing.

    Optuna fails a trial whose heartbeat is older than the storage's grace period
    (``fail_dead_claims``); a trial that never beat is never failed that way, so
    beating starts at ``ask``, not at training.
    """

    def __init__(self, study: optuna.Study):
        self._storage = study._storage  # Optuna's heartbeat API is on the storage, which a Study keeps private
        self.interval = (self._storage.get_heartbeat_interval() if hasattr(self._storage, "record_heartbeat")
                         else None)
        self._trials: dict[int, int] = {}  # trial number -> storage id
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if self.interval:
            self._thread = threading.Thread(target=self._run, name="autocompress-heartbeat", daemon=True)
            self._thread.start()

    def track(self, trial: optuna.Trial) -> None:
        if self.interval:
            with self._lock:
                self._trials[trial.number] = trial._trial_id
            self._beat({trial.number: trial._trial_id})

    def untrack(self, trial: optuna.Trial) -> None:
        with self._lock:
            self._trials.pop(trial.number, None)

    def _beat(self, trials: dict[int, int]) -> None:
        for number, trial_id in trials.items():
            try:
                self._storage.record_heartbeat(trial_id)
            except Exception as exc:  # a busy database: the next beat tries again, well within the grace period
                log.warning("heartbeat of trial %d not recorded: %s", number, exc)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            with self._lock:
                trials = dict(self._trials)
            self._beat(trials)

    def __getstate__(self) -> dict:
        """A copy (Ray Tune pickles its searcher into its experiment state) holds no thread and does not beat."""
        return {**self.__dict__, "interval": None, "_lock": None, "_stop": None, "_thread": None}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, _lock=threading.Lock(), _stop=threading.Event())

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
