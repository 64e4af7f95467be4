"""Many workers on one study, for real: processes sharing a journal, --workers, a local Ray runtime, killed workers,
failing evaluations, heartbeats on a database, and a journal read while it is being written."""

import copy
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter

import optuna
import pytest
from optuna.trial import TrialState

from autocompress.files import replace_atomically
from autocompress.search import SearchRun, load_study, parse_budgets, records, run_search
from autocompress.search.claims import StudyState, fail_dead_claims
from autocompress.search.engine import EvaluationsFailing, create_study
from autocompress.search.strategies import make_sampler
from autocompress.search.study import (
    CLAIMED,
    FAIL_REASON,
    RETRY_OF,
    ProposalCounts,
    journal_lock,
    open_storage,
)
from autocompress.train import Evaluator, FineTuneDiverged, FitConfig
from tests.helpers import lenet_priced
from tests.test_search import _config, lenet_profile  # noqa: F401  (a fixture, used by name)

STUDY = "lenet5-mnist5k-latency<=0.6x"


@pytest.fixture(scope="module")
def cache(tmp_path_factory, lenet_profile):  # noqa: F811
    """The LeNet-5 reference trained once, so that workers started together do not each train it."""
    from autocompress.search import prepare

    root = tmp_path_factory.mktemp("workers")
    prepare(_config(root, lenet_profile, cache_dir=str(root / "cache")), progress=False)
    return str(root / "cache")


def _search_args(out, profile, cache, trials, *extra):
    return [sys.executable, "-m", "autocompress.cli", "search", "--model", "lenet5", "--data", "mnist5k",
            "--profile", profile, "--budget", "latency<=0.6x", "--trials", str(trials), "--base-epochs", "2",
            "--proxy-epochs", "1", "--strategy", "tpe", "--out", str(out), "--cache-dir", cache, "--quiet",
            "--seed", "3", *extra]


def _env():
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def _check_total(storage, trials):
    """N trained trials, each candidate once, nothing left running; the trials' workers."""
    study = load_study(storage, STUDY)
    trained = [t for t in study.trials if t.state == TrialState.COMPLETE and t.user_attrs.get("evaluated")]
    assert len(trained) == trials
    assert len({t.user_attrs["candidate"] for t in trained}) == trials  # no candidate trained twice
    assert not [t for t in study.trials if t.state == TrialState.RUNNING]
    assert len({t.number for t in study.trials}) == len(study.trials)
    assert ProposalCounts.of(records(study)).failed == 0  # a claim that lost the race is no failed evaluation
    return study, Counter(t.user_attrs["worker"] for t in trained)


def _check_export(run, study):
    """``autocompress export`` of the shared study: the front's members, rebuilt and re-measured."""
    out = run.parent / f"{run.name}-export"
    done = subprocess.run([sys.executable, "-m", "autocompress.cli", "export", str(run), "--out", str(out),
                           "--final-epochs", "0.1", "--quiet"], capture_output=True, text=True, timeout=600,
                          env=_env())
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    manifest = json.loads((out / "manifest.json").read_text())
    front = json.loads((run / "front.json").read_text())["front"]
    assert sorted(m["trial"] for m in manifest["members"]) == sorted(t["trial"] for t in front)
    for member in manifest["members"]:
        assert member["candidate"] == json.loads(study.trials[member["trial"]].user_attrs["candidate"])


def test_writers_of_one_file_at_once_each_rename_a_whole_file(tmp_path):
    """Two workers caching the same file: one has written its whole file when the other writes and renames
    its own. With one temporary name for both, the second writer took the first's file away and the first's
    rename failed; each must rename its own, the later rename's whole file staying."""
    target = tmp_path / "base-model.pt"

    def slow_writer(tmp):
        tmp.write_text("first, whole")
        replace_atomically(target, lambda other: other.write_text("second"))  # between this write and its rename
        assert target.read_text() == "second"

    replace_atomically(target, slow_writer)
    assert target.read_text() == "first, whole" and [p.name for p in tmp_path.iterdir()] == [target.name]

    def failing_writer(tmp):
        tmp.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        replace_atomically(target, failing_writer)
    assert target.read_text() == "first, whole" and [p.name for p in tmp_path.iterdir()] == [target.name]


def test_two_processes_on_one_journal_train_the_total_once(tmp_path, lenet_profile, cache):  # noqa: F811
    run = tmp_path / "run"
    args = _search_args(run, lenet_profile, cache, 8, "--no-export")
    procs = [subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=_env()) for _ in range(2)]
    for proc in procs:
        out = proc.communicate(timeout=600)[0].decode()
        assert proc.returncode == 0, out[-3000:]
    _, workers = _check_total(run / "study.journal", 8)
    assert len(workers) == 2  # both processes trained


def test_local_workers_share_the_study_and_export_it_as_a_local_run(tmp_path, lenet_profile, cache):  # noqa: F811
    run = tmp_path / "run"
    done = subprocess.run(_search_args(run, lenet_profile, cache, 8, "--workers", "2", "--no-export"),
                          capture_output=True, text=True, timeout=600, env=_env())
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    study, workers = _check_total(run / "study.journal", 8)
    assert len(workers) == 2 and (run / "worker-1.log").exists()
    _check_export(run, study)


def test_ray_workers_share_the_study_and_export_it_as_a_local_run(tmp_path, lenet_profile, cache):  # noqa: F811
    pytest.importorskip("ray.tune")
    run = tmp_path / "run"
    done = subprocess.run(_search_args(run, lenet_profile, cache, 6, "--backend", "ray", "--workers", "2",
                                       "--no-export"), capture_output=True, text=True, timeout=600, env=_env())
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    study, workers = _check_total(run / "study.journal", 6)
    assert len(workers) == 1  # the driver claims and records; Ray's workers train
    assert (run / "ray").is_dir()
    _check_export(run, study)


def _claimed_running(storage):
    try:
        study = load_study(storage, STUDY)
    except Exception:
        return None
    return next((t for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
                 if t.user_attrs.get(CLAIMED)), None)


def _state(storage, number: int) -> TrialState:
    return load_study(storage, STUDY).trials[number].state


def _check_trained_once(study, dead):
    """A dead worker's claim is trained once: by its retry, or by an earlier claim of the same candidate that
    it was killed while yielding to."""
    trained = [t for t in study.trials if t.state == TrialState.COMPLETE
               and t.user_attrs["candidate"] == dead.user_attrs["candidate"]]
    assert len(trained) == 1
    assert trained[0].user_attrs.get(RETRY_OF) == dead.number or trained[0].number < dead.number
    assert len([t for t in study.trials if t.user_attrs.get(RETRY_OF) == dead.number]) <= 1


def test_a_killed_workers_claim_is_failed_and_retried_once(tmp_path, lenet_profile, cache):  # noqa: F811
    run = tmp_path / "run"
    args = _search_args(run, lenet_profile, cache, 4, "--no-export")
    args[args.index("--proxy-epochs") + 1] = "6"  # a fine-tune long enough to be killed in
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
                            env=_env())
    deadline, claimed = time.time() + 300, None
    while time.time() < deadline and proc.poll() is None and claimed is None:
        claimed = _claimed_running(run / "study.journal")
        time.sleep(0.05)
    assert claimed is not None, proc.stdout.read().decode()[-2000:]
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()

    done = subprocess.run(args, capture_output=True, text=True, timeout=600, env=_env())
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    study, _ = _check_total(run / "study.journal", 4)
    dead = study.trials[claimed.number]
    assert dead.state == TrialState.FAIL and FAIL_REASON not in dead.user_attrs  # failed as a dead worker's
    _check_trained_once(study, claimed)


def test_a_killed_local_worker_leaves_its_claim_to_the_driver(tmp_path, lenet_profile, cache):  # noqa: F811
    run = tmp_path / "run"
    args = _search_args(run, lenet_profile, cache, 6, "--workers", "2", "--no-export")
    args[args.index("--proxy-epochs") + 1] = "6"
    driver = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=_env())
    deadline, victim, pid = time.time() + 300, None, None
    while time.time() < deadline and driver.poll() is None and victim is None:
        claimed = _claimed_running(run / "study.journal")
        pid = int(claimed.user_attrs["worker"].rpartition(":")[2]) if claimed is not None else None
        if pid not in (None, driver.pid):
            # frozen, the worker cannot finish its trial between this look and the kill: look again
            os.kill(pid, signal.SIGSTOP)
            if _state(run / "study.journal", claimed.number) == TrialState.RUNNING:
                victim = claimed
            else:
                os.kill(pid, signal.SIGCONT)
        time.sleep(0.05)
    assert victim is not None, driver.stdout.read().decode()[-2000:]
    os.kill(pid, signal.SIGKILL)
    out = driver.communicate(timeout=600)[0].decode()  # the driver finishes the study; it does not hang
    assert driver.returncode == 0, out[-3000:]
    study, _ = _check_total(run / "study.journal", 6)
    assert study.trials[victim.number].state == TrialState.FAIL
    _check_trained_once(study, victim)


def test_a_reader_opening_the_journal_mid_write_cuts_nothing(tmp_path):
    path = tmp_path / "study.journal"
    optuna.create_study(study_name="s", storage=open_storage(path)).ask()
    complete = path.read_bytes()
    scratch = tmp_path / "scratch.journal"  # the record Optuna appends for a user attribute
    scratch.write_bytes(complete)
    storage = open_storage(scratch)
    storage.set_trial_user_attr(0, "k", "v")
    record = scratch.read_bytes()[len(complete):]
    lock = journal_lock(path)
    lock.acquire()  # a writer, half-way through appending a record
    with path.open("ab") as fh:
        fh.write(record[:20])
    opened = threading.Event()
    reader = threading.Thread(target=lambda: (open_storage(path), opened.set()))
    reader.start()
    time.sleep(0.5)
    assert not opened.is_set()  # it waits for the writer instead of cutting its record
    with path.open("ab") as fh:
        fh.write(record[20:])
    lock.release()
    reader.join(timeout=60)
    assert opened.is_set()
    assert path.read_bytes() == complete + record and not (tmp_path / "study.journal.torn").exists()
    assert optuna.load_study(study_name="s", storage=open_storage(path)).trials[0].user_attrs == {"k": "v"}


def test_a_writer_appending_after_a_killed_writers_torn_record_cuts_it_first(tmp_path):
    path = tmp_path / "study.journal"
    storage = open_storage(path)
    study = optuna.create_study(study_name="s", storage=storage)
    study.ask()
    with path.open("ab") as fh:  # a writer killed half-way through its record (its lock already broken)
        fh.write(b'{"op_code": 8, "worker_id": "dead", "trial_i')
    storage.set_trial_user_attr(0, "k", "v")  # a live writer, with the journal open all along
    lines = path.read_bytes().split(b"\n")
    assert lines[-1] == b"" and all(json.loads(line) for line in lines[:-1])
    assert (tmp_path / "study.journal.torn").read_bytes() == b'{"op_code": 8, "worker_id": "dead", "trial_i'
    assert optuna.load_study(study_name="s", storage=open_storage(path)).trials[0].user_attrs == {"k": "v"}


def test_ray_records_a_failing_evaluation_and_goes_on(tmp_path, lenet_profile, cache):  # noqa: F811
    pytest.importorskip("ray.tune")
    from autocompress.search import search

    config = _config(tmp_path, lenet_profile, cache_dir=cache, backend="ray", workers=2, n_trials=3,
                     proxy_lr=1e12, proxy_epochs=1.0)  # every fine-tune diverges
    with pytest.raises(EvaluationsFailing, match="FineTuneDiverged"):
        search(config, progress=False)
    study = load_study(config.storage_path, config.study_name)
    failed = study.get_trials(states=(TrialState.FAIL,))
    assert len(failed) >= 5 and all("FineTuneDiverged" in t.user_attrs[FAIL_REASON] for t in failed)
    assert not study.get_trials(states=(TrialState.RUNNING,))


@pytest.fixture(scope="module")
def lenet():
    return lenet_priced()


def _run(lenet, n_trials, **kw):
    model, costs = lenet
    run = SearchRun(budgets=parse_budgets(["latency<=0.7x"], costs.reference().to_dict()), n_trials=n_trials, **kw)
    study = create_study(optuna.storages.InMemoryStorage(), "s", run, make_sampler("random", seed=0))
    return model, costs, run, study


def test_a_diverging_fine_tune_is_recorded_failed_and_the_search_goes_on(lenet, mnist5k):
    model, costs, run, study = _run(lenet, 3)
    exploding = Evaluator(teacher=model, data=mnist5k, fit=FitConfig(epochs=1, lr=1e12, seed=0),
                          train_limit=512, eval_limit=100)
    calls = []

    def evaluate(built, candidate):
        calls.append(candidate)
        if len(calls) <= 2:
            return exploding(built).accuracy, {}
        return 0.5, {}

    with pytest.raises(FineTuneDiverged, match="loss became nan"):  # the real fine-tune diverges
        exploding(copy.deepcopy(model))
    run_search(run, study=study, costs=costs, base_model=model, evaluate=evaluate)
    failed = study.get_trials(states=(TrialState.FAIL,))
    assert len(failed) == 2 and all("FineTuneDiverged" in t.user_attrs[FAIL_REASON] for t in failed)
    assert len(study.get_trials(states=(TrialState.COMPLETE,))) == 3
    counts = ProposalCounts.of(records(study))
    assert counts.failed == 2 and counts.feasible == 3


def test_every_evaluation_failing_stops_with_a_clear_error(lenet):
    model, costs, run, study = _run(lenet, 5, max_failures=3)

    def evaluate(built, candidate):
        raise RuntimeError("the data loader lost its files")

    with pytest.raises(EvaluationsFailing, match="the last 3 evaluations failed.*lost its files"):
        run_search(run, study=study, costs=costs, base_model=model, evaluate=evaluate)
    assert len(study.get_trials(states=(TrialState.FAIL,))) == 3


def test_a_database_claim_whose_heartbeat_stopped_is_failed_and_offered_for_retry(tmp_path, lenet):
    _, costs = lenet
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'study.db'}", heartbeat_interval=1,
                                         grace_period=2)
    study = optuna.create_study(study_name="s", storage=storage)
    trial = study.ask()
    candidate = costs.space.uniform(keep=0.5)
    trial.set_user_attr("candidate", candidate.to_json())
    trial.set_user_attr("worker", "another-host:1")  # not a local process: only its heartbeat tells
    trial.set_user_attr(CLAIMED, True)
    storage.record_heartbeat(trial._trial_id)
    assert StudyState.read(study).in_flight == {0: candidate}
    time.sleep(3)  # the worker stopped beating
    fail_dead_claims(study)
    state = StudyState.read(study)
    assert study.trials[0].state == TrialState.FAIL and state.retryable == [(0, candidate)]
