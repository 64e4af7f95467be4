"""The durable record of a search: an Optuna study plus what rebuilds every trial.

Each trial stores its Candidate (JSON), predicted costs, whether it met the
budgets, and — for trained trials — accuracy, fidelity and timing, as Optuna
user attributes, so optuna-dashboard shows it and any trial can be rebuilt
into the exact model it scored. Trained trials are COMPLETE with their
objective values; a proposal the cost model filtered (over budget, never
trained) is PRUNED with the user attribute ``filtered``, and so is a proposal
of a candidate already trained in the study, with ``duplicate_of`` (the trial
that holds its result), so the dashboard's values and Pareto plot hold
distinct trained models only. An evaluation that raised or diverged is FAIL
with ``fail_reason``; a FAIL trial without one was a claim whose worker died
(retried once, ``retry_of``). The study's own attributes hold the resolved
search configuration. Storage: a local journal file by default (processes of
one machine, under its lock file), or an Optuna database URL (many machines,
with heartbeats).
"""

from __future__ import annotations

import json
import logging
import os
import socket
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend, JournalFileSymlinkLock
from optuna.trial import FrozenTrial, TrialState

from autocompress.space import Candidate

log = logging.getLogger(__name__)
#: user attribute of a proposal the cost model filtered: why it was never trained
FILTERED = "filtered"
#: user attribute of a proposal of an already trained candidate: the number of the trial that holds its result
DUPLICATE_OF = "duplicate_of"
#: user attribute of a RUNNING trial whose worker is training its candidate (see ``search.claims``)
CLAIMED = "claimed"
#: user attribute of a failed trial: why (a failed claim without one was failed because its worker died)
FAIL_REASON = "fail_reason"
#: user attribute of a trial that retries a claim whose worker died: the failed trial's number
RETRY_OF = "retry_of"
#: user attribute of a claim not trained because earlier claims filled the study's total first (told FAIL)
SURPLUS = "surplus"


def worker_id() -> str:
    """This process as a study's trials name their worker (read when used: a forked worker has its own)."""
    return f"{socket.gethostname()}:{os.getpid()}"


def is_filtered(trial: FrozenTrial) -> bool:
    """A proposal the cost model filtered: told PRUNED, never trained."""
    return trial.state == TrialState.PRUNED and FILTERED in trial.user_attrs


class StudyError(ValueError):
    """A study that cannot be opened, or that does not match the search asking for it."""


@dataclass(frozen=True)
class TrialRecord:
    """What strategies and the exporter see of one finished trial (a read-only view)."""

    number: int
    candidate: Candidate
    costs: dict[str, float]
    feasible: bool
    evaluated: bool
    accuracy: float | None
    fidelity: str | None
    seconds: float | None
    duplicate_of: int | None = None  # a repeat of this trained trial, not trained again
    failed: str | None = None  # why its evaluation failed (it raised, or the fine-tune diverged)

    @classmethod
    def from_trial(cls, trial: FrozenTrial) -> TrialRecord:
        attrs = trial.user_attrs
        return cls(
            number=trial.number,
            candidate=Candidate.from_json(attrs["candidate"]),
            costs=dict(attrs.get("costs", {})),
            feasible=bool(attrs.get("feasible", False)),
            evaluated=bool(attrs.get("evaluated", False)),
            accuracy=attrs.get("accuracy"),
            fidelity=attrs.get("fidelity"),
            seconds=attrs.get("seconds"),
            duplicate_of=attrs.get(DUPLICATE_OF),
            failed=attrs.get(FAIL_REASON),
        )


@dataclass
class ProposalCounts:
    """How a study's proposals fared: how many the cost model priced for each new feasible candidate.

    Counted from the study's records, so a resumed search counts every earlier
    run too. A repeat of an already trained candidate is a duplicate, not a new
    feasible one: a sampler that repeats itself finds nothing and its ratio shows it.
    """

    priced: int = 0  # every proposal (the cost model prices each one)
    feasible: int = 0  # new candidates within the budgets, each trained once
    filtered: int = 0  # over budget, never trained
    duplicates: int = 0  # candidates already trained, given the earlier result
    failed: int = 0  # evaluations that raised or diverged, recorded with their reason

    @classmethod
    def of(cls, history: Sequence[TrialRecord]) -> ProposalCounts:
        counts = cls()
        for record in history:
            counts.add(record)
        return counts

    def add(self, record: TrialRecord) -> None:
        self.priced += 1
        if record.failed is not None:
            self.failed += 1
        elif record.duplicate_of is not None:
            self.duplicates += 1
        elif record.feasible:
            self.feasible += 1
        elif not record.evaluated:  # an over-budget step a strategy trains (NetAdapt) is neither
            self.filtered += 1

    @property
    def priced_per_feasible(self) -> float | None:
        return self.priced / self.feasible if self.feasible else None

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "priced_per_feasible": self.priced_per_feasible}

    def summary(self) -> str:
        ratio = self.priced_per_feasible
        per = "none feasible" if ratio is None else f"{ratio:.1f} priced per feasible"
        failed = f", {self.failed} failed" if self.failed else ""
        return (f"{self.priced} proposals priced, {self.feasible} feasible ({per}), {self.filtered} over budget, "
                f"{self.duplicates} duplicate(s) not trained again{failed}")


#: database URL schemes opened as Optuna RDB storages (SQLAlchemy dialects, with or without a ``+driver``)
RDB_SCHEMES = ("sqlite", "postgresql", "mysql")
#: a database storage records a training trial's heartbeat this often; one silent for GRACE_S is a dead worker's
HEARTBEAT_S = 30
GRACE_S = 120
#: seconds after which a journal's lock file counts as left by a killed writer
LOCK_GRACE_S = 5


def open_storage(storage: str | Path, *, read_only: bool = False) -> optuna.storages.BaseStorage:
    """A journal file path (the default; processes of one machine) or a database URL (``sqlite:///...`` for one
    machine, ``postgresql://...`` or ``mysql://...`` for many), opened with heartbeats."""
    text = str(storage)
    if is_url(text):
        try:
            if text.partition(":")[0].partition("+")[0] in RDB_SCHEMES:  # workers on many machines: heartbeats
                return optuna.storages.RDBStorage(text, heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S)
            return optuna.storages.get_storage(text)
        except Exception as exc:
            raise StudyError(f"cannot open study storage {text!r}: {exc}") from exc
    path = Path(text)
    if read_only and not path.is_file():  # a reader (an export) makes no folder and no empty journal
        raise StudyError(f"{path}: no such study file (a run directory holds study.journal)")
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        _check_journal(path, repair=not read_only)
    try:
        return JournalStorage(RepairingJournalFileBackend(str(path), lock_obj=journal_lock(path)))
    except Exception as exc:  # a torn or foreign file: say which, never overwrite it
        raise StudyError(f"{path}: not a readable Optuna journal (corrupted or not a study file): {exc}") from exc


def _check_journal(path: Path, *, repair: bool = True) -> None:
    """Refuse a file that is not an Optuna journal; cut a last record torn by a killed writer.

    A torn tail (bytes after the last newline) is what SIGKILL during a write leaves;
    Optuna's readers skip it, and its next append would land on it. A writer appends
    under the journal's lock file, so a tail seen without the lock may be a record
    another process is still writing: the tail is cut only under that lock (the
    one Optuna's writers take; a lock left by a killed writer is broken after
    Optuna's grace period). Its bytes are kept beside the journal; every complete
    record stays.
    """
    data = path.read_bytes()
    for number, line in enumerate(data.split(b"\n")[:-1], start=1):
        try:
            json.loads(line)
        except (ValueError, RecursionError):  # RecursionError: nested deeper than json reads
            raise StudyError(f"{path}: line {number} is not an Optuna journal record (corrupted or not a "
                             "study file); it was left as it is") from None
    if repair and data and not data.endswith(b"\n"):  # a reader leaves it be: Optuna's readers skip it
        _cut_torn_tail(path)


def journal_lock(path: Path) -> JournalFileSymlinkLock:
    """The journal's lock file, Optuna's, broken after LOCK_GRACE_S: a writer holds it for one append
    (milliseconds), so an older one was left by a killed writer (Optuna's default waits 30 s)."""
    return JournalFileSymlinkLock(str(path), grace_period=LOCK_GRACE_S)


def _cut_torn_tail(path: Path) -> None:
    lock = journal_lock(path)
    lock.acquire()
    try:
        _cut_locked(path)
    finally:
        lock.release()


def _cut_locked(path: Path) -> None:
    """Cut bytes after the last newline; the caller holds the journal's lock, so no writer is mid-record."""
    data = path.read_bytes()
    tail = data[data.rfind(b"\n") + 1:]
    if not tail:
        return  # it was a write in progress, now complete
    backup = path.with_name(path.name + ".torn")
    backup.write_bytes(tail)
    with path.open("r+b") as fh:
        fh.truncate(len(data) - len(tail))
    log.warning("%s: removed a torn last record (an interrupted write); its bytes are in %s", path, backup)


class RepairingJournalFileBackend(JournalFileBackend):
    """Optuna's journal file, whose writers cut a torn tail before appending.

    A worker killed mid-append leaves bytes without a newline while other workers
    go on; Optuna would append the next record onto them and make a line no reader
    can parse. Under the lock (where Optuna appends), such a tail can only be a dead
    writer's, so it is cut first (kept in ``<journal>.torn``). Readers skip an
    incomplete last line, so nothing they read moves.
    """

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        text = "\n".join(json.dumps(record, separators=(",", ":")) for record in logs) + "\n"
        self._lock.acquire()
        try:
            path = Path(self._file_path)
            with path.open("rb") as fh:
                fh.seek(0, os.SEEK_END)
                torn = fh.tell() > 0 and (fh.seek(-1, os.SEEK_END), fh.read(1))[1] != b"\n"
            if torn:
                _cut_locked(path)
            with path.open("ab") as fh:
                fh.write(text.encode("utf-8"))
                fh.flush()
                os.fsync(fh.fileno())
        finally:
            self._lock.release()


def load_study(storage: str | Path, name: str, *, read_only: bool = False) -> optuna.Study:
    try:
        return optuna.load_study(study_name=name, storage=open_storage(storage, read_only=read_only))
    except KeyError:
        raise StudyError(f"{storage}: no study named {name!r}") from None
    except StudyError:
        raise
    except Exception as exc:
        raise StudyError(f"{storage}: cannot read study {name!r}: {exc}") from exc


def study_names(storage: str | Path, *, read_only: bool = False) -> list[str]:
    opened = open_storage(storage, read_only=read_only)
    try:
        return [s.study_name for s in optuna.get_all_study_summaries(opened)]
    except Exception as exc:  # records Optuna replays but cannot summarize
        raise StudyError(f"{storage}: cannot read its studies (corrupted or not a study file): {exc}") from exc


def records(study: optuna.Study, trials: Sequence[FrozenTrial] | None = None) -> list[TrialRecord]:
    """Finished trials with a candidate (trained, filtered, duplicate, or failed with a reason), oldest first.

    A trial failed because its worker died is left out: its candidate is retried (``search.claims``).
    """
    done = study.get_trials(deepcopy=False) if trials is None else trials  # ``trials``: the study's, read already
    return [TrialRecord.from_trial(t) for t in done if "candidate" in t.user_attrs
            and t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
            and (t.state != TrialState.FAIL or FAIL_REASON in t.user_attrs)]


def fail_trial(study: optuna.Study, number: int) -> bool:
    """Tell trial ``number`` FAIL; False when another worker finished it first."""
    try:
        study.tell(number, state=TrialState.FAIL, skip_if_finished=True)
    except UpdateFinishedTrialError:
        return False
    return True


def is_url(storage: str | Path) -> bool:
    """Whether a storage is a database URL (else a journal file's path)."""
    return "://" in str(storage)


def fail_stale_trials(study: optuna.Study) -> int:
    """Trials left RUNNING by a local worker that no longer exists (killed) are marked FAIL.

    Optuna's own heartbeat (``optuna.storages.fail_stale_trials``) needs an RDB
    storage; the default journal file has none, so a trial names its worker
    (host and pid) and a dead local pid is what makes it stale.
    """
    host = worker_id().rpartition(":")[0]
    stale = 0
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = trial.user_attrs.get("worker", "")
        worker_host, _, pid = worker.rpartition(":")
        if worker_host == host and pid.isdigit() and not _alive(int(pid)):
            if not fail_trial(study, trial.number):  # another worker failed it first
                continue
            stale += 1
    if stale:
        log.info("marked %d trial(s) of a killed worker as failed", stale)
    return stale


def _alive(pid: int) -> bool:
    """A running process (a zombie, dead but not yet reaped by its parent, is not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc here: the signal said it exists
    return stat.rpartition(")")[2].split()[:1] != ["Z"]


def check_config(study: optuna.Study, config: dict[str, Any], keys: Sequence[str],
                 defaults: dict[str, Any] | None = None) -> None:
    """A resumed study must be the same search: same model, data, space, profile, budgets, seed.

    ``defaults``: what a key missing from an older study's stored config stood for.
    """
    stored = study.user_attrs.get("config")
    if stored is None:
        study.set_user_attr("config", json.loads(json.dumps(config, default=str)))
        return
    defaults = defaults or {}
    changed = [k for k in keys if json.dumps(stored.get(k, defaults.get(k)), default=str)
               != json.dumps(config.get(k), default=str)]
    if changed:
        details = "; ".join(f"{k}: study has {stored.get(k, defaults.get(k))!r}, now {config.get(k)!r}"
                            for k in changed)
        raise StudyError(f"study {study.study_name!r} was created for a different search ({details}); "
                         "use another --study name to start a new one")
