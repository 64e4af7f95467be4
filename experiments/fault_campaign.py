"""Kill a search at random moments, resume it, and count what was lost or duplicated.

A search promises that killing it and running the same command again continues
to the requested number of trials, with nothing lost and nothing trained twice
(``autocompress/search/study.py``, ``engine.py``). This campaign tests that
promise on a small real search (LeNet-5 on ``mnist5k``, ``latency<=0.5x``):

1. A reference model is trained once and shared by every run (``--weights``),
   with one cache directory for the whole campaign, so no run retrains it.
2. One clean run (no kill) gives the answer: its exported front
   (``export/manifest.json``: members' candidates and accuracies) and the
   sequence of trained candidates. ``--controls`` more clean runs show how
   repeatable a run is without any kill.
3. Each of ``--runs`` runs starts the same search in a fresh directory (its own
   session and process group) and SIGKILLs it at a moment drawn from a seeded
   generator, aimed at one phase, in turn:

   - ``finetune``: while a proposal is being fine-tuned (the journal has just
     recorded the k-th feasible proposal; the kill comes within the clean run's
     fine-tune time);
   - ``journal``: inside a burst of journal writes: 0-3 ms after the journal
     reaches its m-th record, or (every other draw) the moment after that
     when Optuna's journal lock file is next seen held;
   - ``export``: after ``export/`` appears, before the clean run's export time;
   - ``worker``: one of the driver's worker processes, not the driver, while a
     proposal is fine-tuned; only when ``autocompress search`` has
     ``--workers`` (these runs then use it, and compare with a clean run that
     used it too).

   A driver kill takes the whole process group. What the study held at the
   kill is read from a copy of the journal (the run's own file is left as the
   kill left it, for the resume to repair). Then the same command runs again
   to completion.
4. After the resume the study is opened and counted: trials requested,
   evaluated (COMPLETE with ``evaluated``), failed, duplicated (one candidate
   trained in two COMPLETE trials), lost (requested minus distinct trained),
   trial numbers seen twice (in the study, and in ``search.log``'s
   ``trial N: accuracy`` lines), and the exported front is compared with the
   clean run's: the same candidates, and the same proxy / val / test
   accuracies within ``--tolerance`` (the evaluation is seeded). Any
   difference is written out as it is, never loosened.

Writes ``<out>/report.json`` (every run: plan, kill, state at the kill,
resume, counts, front comparison) and ``<out>/report.md`` (a table, totals,
anomalies, the command that reproduces it). Run directories go to ``--work``.

    flock /tmp/ac-cpu.lock python experiments/fault_campaign.py --runs 20 --seed 0 \\
        --out experiments/results/fault_campaign
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

PHASES = ("finetune", "journal", "export", "worker")
STUDY = "fault-campaign"  # given explicitly, so a run killed before front.json exists is still readable
#: Optuna journal op codes (optuna.storages.journal._storage.JournalOperation), named for the report
JOURNAL_OPS = {0: "create study", 1: "delete study", 2: "study user attr", 3: "study system attr",
               4: "create trial", 5: "trial param", 6: "trial state/values", 7: "intermediate value",
               8: "trial user attr", 9: "trial system attr", 10: "discard trials"}
TRAINED_LINE = re.compile(rb"autocompress\.search\.engine: trial (\d+): accuracy")
#: what the resume's output says about the repairs it made
RESUME_NOTES = {
    "repaired a torn journal record": "removed a torn last record",
    "waited for a stale journal lock (broken after its grace period, 5 s)": "Forcibly releasing the lock file",
    "marked a killed worker's trials failed": "trial(s) of a killed worker as failed",
}
HELPER_PROCESSES = ("resource_tracker", "semaphore_tracker", "forkserver")


@dataclass(frozen=True)
class Settings:
    """The search every run repeats: same flags, same seed."""

    model: str
    data: str
    budget: str
    trials: int
    seed: int
    proxy_epochs: float
    final_epochs: float
    max_train: int
    base_epochs: float


@dataclass(frozen=True)
class Plan:
    """Where one run's kill is aimed, drawn before the run starts (so timing cannot change the draw)."""

    phase: str
    at: int  # finetune / worker: the feasible proposal (0-based) whose fine-tune is hit; journal: the record count
    delay_s: float  # after the trigger
    pick: float  # worker: which worker, as a fraction of their sorted pids; journal: < 0.5 the record, else the lock


@dataclass
class Clean:
    """The reference answer and the timings the kill plans are scaled by."""

    name: str
    wall_s: float
    startup_s: float | None  # start to the first feasible proposal in the journal
    finetune_s: float  # median seconds of a trained trial
    export_s: float  # export/ appearing to the process's end
    journal_records: int
    front: dict[str, dict[str, Any]]
    trained: list[tuple[str, float]]  # (candidate JSON, proxy accuracy) in trial order
    counts: dict[str, Any] = field(default_factory=dict)


# -- processes -------------------------------------------------------------------------------------


def search_command(s: Settings, out: Path, weights: Path, cache: Path, workers: int | None) -> list[str]:
    cmd = [sys.executable, "-m", "autocompress.cli", "search", "--model", s.model, "--data", s.data,
           "--budget", s.budget, "--trials", str(s.trials), "--seed", str(s.seed), "--study", STUDY,
           "--out", str(out), "--weights", str(weights), "--base-epochs", str(s.base_epochs),
           "--proxy-epochs", str(s.proxy_epochs), "--final-epochs", str(s.final_epochs),
           "--max-train", str(s.max_train), "--cache-dir", str(cache), "--quiet"]
    return cmd + (["--workers", str(workers)] if workers else [])


def has_workers_flag() -> bool:
    """``--workers`` is new; read the installed CLI's help rather than assume it."""
    help_text = subprocess.run([sys.executable, "-m", "autocompress.cli", "search", "--help"],
                               capture_output=True, text=True, check=False).stdout
    return "--workers" in help_text


def proc_table() -> dict[int, tuple[int, int]]:
    """pid -> (parent pid, session id), from /proc (no psutil needed)."""
    table = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rpartition(")")[2].split()  # after "pid (comm)": state ppid pgrp session ...
        table[int(entry.name)] = (int(fields[1]), int(fields[3]))
    return table


def cmdline(pid: int) -> str:
    try:
        return (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def descendants(pid: int) -> list[int]:
    table = proc_table()
    found, frontier = [], [pid]
    while frontier:
        parent = frontier.pop()
        kids = [p for p, (ppid, _) in table.items() if ppid == parent]
        found += kids
        frontier += kids
    return sorted(found)


def workers_of(pid: int) -> list[int]:
    """The driver's worker processes: its descendants, less multiprocessing's helper processes."""
    return [p for p in descendants(pid) if not any(h in cmdline(p) for h in HELPER_PROCESSES)]


def process_state(pid: int) -> str:
    """/proc's one-letter state (Z: a zombie, dead but not yet reaped by its parent), or 'gone'."""
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return "gone"


def session_left(session: int) -> list[int]:
    return [p for p, (_, sid) in proc_table().items() if sid == session]


def kill_group(proc: subprocess.Popen) -> list[str]:
    """SIGKILL the search's whole process group (its session), reap it, and name anything that outlived it."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()
    deadline = time.monotonic() + 5
    while session_left(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    strays = session_left(proc.pid)
    for pid in strays:  # ours: same session; left behind would skew every later run
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return [f"{pid} {cmdline(pid)}" for pid in strays]


class JournalTail:
    """A growing Optuna journal, read incrementally: complete records and feasible proposals so far."""

    def __init__(self, path: Path):
        self.path = path
        self.offset = 0
        self.pending = b""
        self.records = 0
        self.feasible = 0

    def poll(self) -> None:
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            return
        if size <= self.offset:
            return
        with self.path.open("rb") as fh:
            fh.seek(self.offset)
            chunk = fh.read(size - self.offset)
        self.offset += len(chunk)
        *lines, self.pending = (self.pending + chunk).split(b"\n")
        for line in lines:
            self.records += 1
            if b'"feasible":true' in line and b'"op_code":8' in line:
                self.feasible += 1


def launch(cmd: list[str], run_dir: Path, label: str, cwd: Path) -> tuple[subprocess.Popen, float]:
    run_dir.mkdir(parents=True, exist_ok=True)
    with (run_dir / f"campaign-{label}.out").open("wb") as log:  # the child keeps its own descriptor
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=cwd)
    return proc, time.monotonic()


def run_to_end(cmd: list[str], run_dir: Path, label: str, cwd: Path, timeout_s: float) -> dict[str, Any]:
    """Run the search to completion (no kill), noting when its phases began."""
    proc, start = launch(cmd, run_dir, label, cwd)
    journal = JournalTail(run_dir / "study.journal")
    first_feasible = export_seen = None
    while proc.poll() is None:
        journal.poll()
        now = time.monotonic() - start
        if first_feasible is None and journal.feasible:
            first_feasible = now
        if export_seen is None and (run_dir / "export").exists():
            export_seen = now
        if now > timeout_s:
            kill_group(proc)
            break
        time.sleep(0.05)
    wall = time.monotonic() - start
    journal.poll()
    text = (run_dir / f"campaign-{label}.out").read_bytes().decode(errors="replace")
    return {"rc": proc.returncode, "wall_s": round(wall, 2), "timed_out": wall > timeout_s,
            "startup_s": first_feasible, "export_s": None if export_seen is None else wall - export_seen,
            "journal_records": journal.records,
            "notes": [note for note, marker in RESUME_NOTES.items() if marker in text],
            "error_tail": text.strip().splitlines()[-12:] if proc.returncode != 0 else []}


def run_and_kill(cmd: list[str], run_dir: Path, cwd: Path, plan: Plan, timeout_s: float,
                 hang_s: float) -> dict[str, Any]:
    """Start the search, wait for the plan's trigger, sleep its delay, SIGKILL the target."""
    proc, start = launch(cmd, run_dir, "kill", cwd)
    journal = JournalTail(run_dir / "study.journal")
    lock = run_dir / "study.journal.lock"
    poll_s = 0.0005 if plan.phase == "journal" else 0.01
    trigger = None
    while proc.poll() is None and time.monotonic() - start < timeout_s:
        journal.poll()
        if plan.phase in ("finetune", "worker") and journal.feasible > plan.at:
            trigger = f"feasible proposal #{plan.at} recorded in the journal"
        elif plan.phase == "journal" and journal.records >= plan.at and plan.pick < 0.5:
            trigger = f"journal reached {journal.records} records (aimed at {plan.at})"
        elif plan.phase == "journal" and journal.records >= plan.at and os.path.lexists(lock):
            trigger = f"journal lock held, after {journal.records} records (aimed at {plan.at})"
        elif plan.phase == "export" and (run_dir / "export").exists():
            trigger = "export/ appeared"
        if trigger:
            break
        time.sleep(poll_s)
    kill: dict[str, Any] = {"trigger": trigger, "trigger_s": round(time.monotonic() - start, 3)}
    if trigger is None:
        if proc.poll() is None:
            kill["strays"] = kill_group(proc)
            kill["missed"] = f"no trigger within {timeout_s:.0f} s; killed the group"
        else:
            kill["missed"] = f"the search ended (rc {proc.returncode}) before the trigger"
        kill["rc"] = proc.returncode
        return kill
    time.sleep(plan.delay_s)
    if plan.phase == "worker":
        return kill | _kill_worker(proc, start, plan, hang_s, run_dir)
    kill["landed"] = proc.poll() is None  # still running when the signal went out
    kill["kill_s"] = round(time.monotonic() - start, 3)
    kill["target"] = "driver process group"
    kill["strays"] = kill_group(proc)
    kill["rc"] = proc.returncode
    if not kill["landed"]:
        kill["missed"] = f"the search ended (rc {proc.returncode}) before the kill"
    return kill


def _kill_worker(proc: subprocess.Popen, start: float, plan: Plan, hang_s: float, run_dir: Path) -> dict[str, Any]:
    """SIGKILL one worker process, then see whether the driver finishes, fails or hangs without it."""
    deadline = time.monotonic() + 30
    workers = workers_of(proc.pid)
    while not workers and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
        workers = workers_of(proc.pid)
    if not workers:
        out = {"missed": "no worker process found", "strays": kill_group(proc) if proc.poll() is None else []}
        return out | {"rc": proc.returncode}
    victim = workers[min(int(plan.pick * len(workers)), len(workers) - 1)]
    out = {"kill_s": round(time.monotonic() - start, 3), "target": f"worker pid {victim}: {cmdline(victim)[:120]}",
           "workers_seen": len(workers), "landed": True}
    try:
        os.kill(victim, signal.SIGKILL)
    except ProcessLookupError:
        out["landed"] = False
        out["missed"] = "the worker exited before the kill"
    time.sleep(0.2)
    out["at_worker_kill"] = state_at_kill(run_dir, "at-worker-kill")
    try:
        proc.wait(timeout=hang_s)
        out["driver_after"] = f"exited with rc {proc.returncode}"
    except subprocess.TimeoutExpired:
        out["driver_after"] = (f"still running {hang_s:.0f} s after the worker was killed (the killed worker's "
                               f"process state: {process_state(victim)}); its group was killed")
        out["strays"] = kill_group(proc)
    out["rc"] = proc.returncode
    return out


# -- reading a run ---------------------------------------------------------------------------------


def candidate_key(value: str | dict[str, Any]) -> str:
    """The candidate's canonical JSON (the study stores JSON text, the manifest a mapping)."""
    from autocompress.space import Candidate

    return (Candidate.from_json(value) if isinstance(value, str) else Candidate.from_dict(value)).to_json()


def short(key: str) -> str:
    from autocompress.space import Candidate

    return Candidate.from_json(key).key


def state_at_kill(run_dir: Path, label: str = "at-kill") -> dict[str, Any]:
    """What the kill left: torn tail, stale lock, trial states, export progress (from a copy of the journal)."""
    from autocompress.search.study import StudyError, load_study

    journal = run_dir / "study.journal"
    out: dict[str, Any] = {"lock_left": os.path.lexists(run_dir / "study.journal.lock")}
    export = run_dir / "export"
    out["export"] = ("complete" if (export / "manifest.json").exists() else
                     f"started ({len(list(export.glob('trial-*')))} member dir(s))" if export.exists() else "not started")
    if not journal.exists():
        return out | {"journal": "none"}
    data = journal.read_bytes()
    (run_dir / f"study.journal.{label}").write_bytes(data)  # evidence: the bytes exactly as the kill left them
    head, _, tail = data.rpartition(b"\n")
    out["records"] = data.count(b"\n")
    out["torn_tail_bytes"] = len(tail) if tail.strip() else 0
    if out["torn_tail_bytes"]:
        out["torn_tail_start"] = tail[:80].decode(errors="replace")
    last = head.rpartition(b"\n")[2]
    if last:
        out["last_record"] = JOURNAL_OPS.get(json.loads(last).get("op_code"), "?")
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "study.journal"
        copy.write_bytes(data)  # opening repairs a torn tail: the copy's, not the run's
        try:
            study = load_study(copy, STUDY)
        except StudyError as exc:
            return out | {"study": str(exc)}
        trials = study.get_trials(deepcopy=False)
    out["states"] = dict(Counter(t.state.name for t in trials))
    out["running"] = [{"number": t.number, "priced": "candidate" in t.user_attrs,
                       "feasible": t.user_attrs.get("feasible"), "trained": t.user_attrs.get("evaluated"),
                       "claimed": t.user_attrs.get("claimed"), "worker": t.user_attrs.get("worker")}
                      for t in trials if t.state.name == "RUNNING"]
    return out


def where_it_hit(at_kill: dict[str, Any]) -> str:
    """A few words on what was under way at the kill."""
    parts = []
    for t in at_kill.get("running", []):
        if t["trained"]:
            parts.append(f"trial {t['number']} trained, not yet told")
        elif t["feasible"]:
            parts.append(f"trial {t['number']} in fine-tune")
        elif t["priced"]:
            parts.append(f"trial {t['number']} priced")
        else:
            parts.append(f"trial {t['number']} being suggested" if t["worker"] else
                         f"trial {t['number']} asked, no worker attr yet")
    waiting = at_kill.get("states", {}).get("WAITING")
    if waiting:
        parts.append(f"{waiting} enqueued")
    if at_kill.get("torn_tail_bytes"):
        parts.append(f"torn record ({at_kill['torn_tail_bytes']} B)")
    if at_kill.get("lock_left"):
        parts.append("lock left")
    if at_kill.get("export") not in (None, "not started"):
        parts.append(f"export {at_kill['export']}")
    if not parts:
        parts.append(f"between writes (last: {at_kill.get('last_record', '-')})")
    return "; ".join(parts)


def study_counts(run_dir: Path, trials: int) -> tuple[dict[str, Any], list[tuple[str, float]]]:
    """The resumed study, counted; and its trained candidates with their proxy accuracy, in trial order."""
    from autocompress.search.study import DUPLICATE_OF, StudyError, load_study

    name, storage = STUDY, run_dir / "study.journal"
    front_file = run_dir / "front.json"
    if front_file.exists():
        front = json.loads(front_file.read_text())
        name, storage = front.get("study", name), front.get("storage", storage)
    try:
        all_trials = load_study(storage, name).get_trials(deepcopy=False)
    except StudyError as exc:
        return {"error": str(exc)}, []
    states = Counter(t.state.name for t in all_trials)
    trained = sorted((t for t in all_trials if t.state.name == "COMPLETE" and t.user_attrs.get("evaluated")),
                     key=lambda t: t.number)
    by_candidate = Counter(candidate_key(t.user_attrs["candidate"]) for t in trained)
    numbers = Counter(t.number for t in all_trials)
    logged = Counter(int(m) for log in [run_dir / "search.log", *sorted(run_dir.glob("worker-*.log"))]
                     if log.exists() for m in TRAINED_LINE.findall(log.read_bytes()))
    counts = {
        "requested": trials,
        "evaluated": len(trained),
        "distinct_trained": len(by_candidate),
        "failed": states.get("FAIL", 0),
        "failed_after_training": sum(1 for t in all_trials if t.state.name == "FAIL" and t.user_attrs.get("evaluated")),
        "running_left": states.get("RUNNING", 0),
        "waiting_left": states.get("WAITING", 0),
        "pruned_filtered": sum(1 for t in all_trials if t.state.name == "PRUNED" and "filtered" in t.user_attrs),
        "pruned_repeats": sum(1 for t in all_trials if t.state.name == "PRUNED" and DUPLICATE_OF in t.user_attrs),
        "retries": sum(1 for t in all_trials if "retry_of" in t.user_attrs),  # a dead worker's claim, retried
        "failed_with_reason": sum(1 for t in all_trials if t.state.name == "FAIL" and "fail_reason" in t.user_attrs),
        "duplicated": sum(n - 1 for n in by_candidate.values() if n > 1),
        "lost": max(0, trials - len(by_candidate)),
        "extra": max(0, len(trained) - trials),
        "numbers_twice_in_study": sorted(n for n, c in numbers.items() if c > 1),
        "numbers_logged_twice": sorted(n for n, c in logged.items() if c > 1),
        "states": dict(states),
    }
    return counts, [(candidate_key(t.user_attrs["candidate"]), float(t.user_attrs["accuracy"])) for t in trained]


def exported_front(run_dir: Path) -> dict[str, dict[str, Any]] | None:
    """The manifest's members by candidate: trial number and the three accuracies."""
    manifest = run_dir / "export" / "manifest.json"
    if not manifest.exists():
        return None
    members = json.loads(manifest.read_text())["members"]
    return {candidate_key(m["candidate"]): {"trial": m["trial"], "accuracy_proxy": m["accuracy_proxy"],
                                            "accuracy_val": m["accuracy_val"], "accuracy_test": m["accuracy_test"]}
            for m in members}


def compare_fronts(clean: dict[str, dict[str, Any]], other: dict[str, dict[str, Any]] | None,
                   tolerance: float) -> dict[str, Any]:
    """Equal when the same candidates carry the same accuracies; trial numbers may move (a failed trial
    takes a number) and are listed, not judged."""
    if other is None:
        return {"equal": False, "why": "no export/manifest.json after the resume"}
    diff: dict[str, Any] = {}
    missing = [clean[k]["trial"] for k in clean if k not in other]
    extra = [other[k]["trial"] for k in other if k not in clean]
    if missing:
        diff["clean members missing (clean trial numbers)"] = missing
    if extra:
        diff["members not in the clean front (trial numbers)"] = extra
    accuracy = []
    for key in clean.keys() & other.keys():
        for name in ("accuracy_proxy", "accuracy_val", "accuracy_test"):
            a, b = clean[key][name], other[key][name]
            if abs(a - b) > tolerance:
                accuracy.append({"candidate": short(key), "clean_trial": clean[key]["trial"],
                                 "trial": other[key]["trial"], "field": name, "clean": a, "resumed": b})
    if accuracy:
        diff["accuracy"] = accuracy
    renumbered = {clean[k]["trial"]: other[k]["trial"] for k in clean.keys() & other.keys()
                  if clean[k]["trial"] != other[k]["trial"]}
    out: dict[str, Any] = {"equal": not diff, "members": len(other)}
    if diff:
        out["diff"] = diff
    if renumbered:
        out["renumbered (clean -> resumed)"] = renumbered
    return out


def compare_trained(clean: list[tuple[str, float]], other: list[tuple[str, float]],
                    tolerance: float) -> dict[str, Any]:
    """Every trained candidate with its proxy accuracy, against the clean run's: equal as a set (what a resume
    must keep), and whether in the same trial order (a serial search should; a retried claim moves one)."""
    mine, theirs = dict(clean), dict(other)
    out: dict[str, Any] = {"equal": True, "same_order": [k for k, _ in clean] == [k for k, _ in other]}
    missing = [short(k) for k in mine if k not in theirs]
    extra = [short(k) for k in theirs if k not in mine]
    accuracy = [{"candidate": short(k), "clean": mine[k], "resumed": theirs[k]} for k in mine
                if k in theirs and abs(mine[k] - theirs[k]) > tolerance]
    for name, value in (("clean candidates not trained", missing), ("trained, not in the clean run", extra),
                        ("proxy accuracy", accuracy)):
        if value:
            out["equal"] = False
            out[name] = value
    if not out["same_order"]:
        first = next((i for i, (a, b) in enumerate(zip(clean, other, strict=False)) if a[0] != b[0]),
                     min(len(clean), len(other)))
        out["order_parts_at"] = first
    return out


# -- the campaign ----------------------------------------------------------------------------------


def train_reference(s: Settings, work: Path, cache: Path) -> tuple[Path, dict[str, Any]]:
    """The reference model, trained once (or read from the campaign's cache) as ``prepare`` trains one."""
    import torch

    from autocompress.base_model import trained_base_model
    from autocompress.data import load_data
    from autocompress.search import SearchConfig
    from autocompress.train import FitConfig

    started = time.perf_counter()
    data = load_data(s.data, seed=s.seed, cache_dir=str(cache))
    fit = FitConfig(epochs=s.base_epochs, lr=SearchConfig.base_lr, warmup_steps=20, seed=s.seed, progress=False)
    model, info = trained_base_model(s.model, data, fit=fit, cache_dir=str(cache))
    path = work / "reference.pt"
    torch.save(model.state_dict(), path)
    return path, {"source": info["source"], "val_accuracy": info["val_accuracy"],
                  "seconds": round(time.perf_counter() - started, 1)}


def clean_run(name: str, cmd: list[str], run_dir: Path, cwd: Path, trials: int, timeout_s: float) -> Clean:
    shutil.rmtree(run_dir, ignore_errors=True)
    result = run_to_end(cmd, run_dir, "clean", cwd, timeout_s)
    if result["rc"] != 0:
        tail = "\n  ".join(result["error_tail"])
        raise SystemExit(f"fault_campaign: the clean run {run_dir} failed (rc {result['rc']}):\n  {tail}")
    counts, trained = study_counts(run_dir, trials)
    front = exported_front(run_dir)
    if front is None:
        raise SystemExit(f"fault_campaign: the clean run {run_dir} exported no front (no export/manifest.json)")
    from autocompress.search.study import load_study

    seconds = [t.user_attrs["seconds"] for t in load_study(run_dir / "study.journal", STUDY).get_trials(deepcopy=False)
               if t.user_attrs.get("evaluated") and t.user_attrs.get("seconds") is not None]
    return Clean(name=name, wall_s=result["wall_s"], startup_s=result["startup_s"],
                 finetune_s=statistics.median(seconds) if seconds else 0.5,
                 export_s=result["export_s"] or 1.0, journal_records=result["journal_records"], front=front,
                 trained=trained, counts=counts)


def summary(clean: Clean) -> dict[str, Any]:
    """The clean run for the report: candidates by their short digest."""
    out = asdict(clean)
    out["front"] = {short(k): v for k, v in clean.front.items()}
    out["trained"] = [[short(k), accuracy] for k, accuracy in clean.trained]
    return out


def draw_plan(phase: str, rng: random.Random, clean: Clean, trials: int) -> Plan:
    """The kill's aim, scaled by the clean run's timings."""
    if phase in ("finetune", "worker"):
        return Plan(phase, rng.randrange(trials), rng.uniform(0.0, 0.8) * clean.finetune_s, rng.random())
    if phase == "journal":  # pick < 0.5: 0-3 ms after the m-th record; else the moment the lock is next held
        at, pick = rng.randrange(1, max(2, clean.journal_records - 10)), rng.random()
        return Plan(phase, at, rng.uniform(0.0, 0.003) if pick < 0.5 else 0.0, pick)
    return Plan(phase, 0, rng.uniform(0.0, 0.95) * clean.export_s, 0.0)


def judge(run: dict[str, Any]) -> list[str]:
    """Everything about a run that a sound resume would not show."""
    issues = []
    kill, counts, resume = run["kill"], run.get("counts", {}), run["resume"]
    if kill.get("missed"):
        issues.append(f"kill missed: {kill['missed']}")
    if kill.get("strays"):
        issues.append(f"processes outlived the group kill: {kill['strays']}")
    if run["phase"] == "worker" and kill.get("driver_after", "exited with rc 0") != "exited with rc 0":
        issues.append(f"driver after the worker kill: {kill['driver_after']}")
    if resume["rc"] != 0:
        issues.append(f"resume exited with rc {resume['rc']}: {' | '.join(resume['error_tail'][-3:])}")
    if "error" in counts:
        issues.append(f"study unreadable after the resume: {counts['error']}")
    for key, words in (("lost", "lost"), ("duplicated", "duplicated"), ("extra", "trained beyond the request"),
                       ("running_left", "left RUNNING"), ("waiting_left", "left WAITING (enqueued, never asked)")):
        if counts.get(key):
            issues.append(f"{counts[key]} trial(s) {words}")
    if counts.get("pruned_repeats", 0) > run["clean_pruned_repeats"]:
        issues.append(f"{counts['pruned_repeats']} proposal(s) repeated a trained candidate (told PRUNED; the clean "
                      f"run had {run['clean_pruned_repeats']})")
    for key in ("numbers_twice_in_study", "numbers_logged_twice"):
        if counts.get(key):
            issues.append(f"{key.replace('_', ' ')}: {counts[key]}")
    if not run["front"]["equal"]:
        issues.append(f"front differs: {json.dumps(run['front'].get('diff') or run['front'].get('why'))}")
    if not run["trained"]["equal"]:
        issues.append(f"trained candidates differ: {json.dumps({k: v for k, v in run['trained'].items() if k != 'equal'})}")
    elif not run["trained"]["same_order"] and not run["workers"]:
        issues.append(f"same trained candidates, in another trial order (from position "
                      f"{run['trained']['order_parts_at']})")
    if any("stale journal lock" in note for note in resume["notes"]):
        issues.append(f"the resume waited for a stale journal lock left by the kill ({resume['wall_s']:.0f} s "
                      "against a clean run's time): a delay, nothing lost")
    return issues


def one_run(index: int, phase: str, args: argparse.Namespace, s: Settings, work: Path, weights: Path, cache: Path,
            clean: Clean, workers: int | None) -> dict[str, Any]:
    started = time.monotonic()
    rng = random.Random(f"{args.seed}:{index}")  # per run: run i draws the same plan whatever ran before it
    plan = draw_plan(phase, rng, clean, s.trials)
    run_dir = work / f"run-{index:02d}"
    shutil.rmtree(run_dir, ignore_errors=True)
    cmd = search_command(s, run_dir, weights, cache, workers)
    kill = run_and_kill(cmd, run_dir, work, plan, args.run_timeout_s, hang_s=max(60.0, 3 * clean.wall_s))
    at_kill = state_at_kill(run_dir)
    resume = run_to_end(cmd, run_dir, "resume", work, args.run_timeout_s)
    counts, trained = study_counts(run_dir, s.trials)
    run = {"run": index, "phase": phase, "plan": asdict(plan), "workers": workers, "dir": str(run_dir),
           "kill": kill, "at_kill": at_kill, "hit": where_it_hit(kill.get("at_worker_kill", at_kill)),
           "resume": {k: resume[k] for k in ("rc", "wall_s", "timed_out", "notes", "error_tail")},
           "counts": counts, "front": compare_fronts(clean.front, exported_front(run_dir), args.tolerance),
           "trained": compare_trained(clean.trained, trained, args.tolerance), "compared_with": clean.name,
           "clean_pruned_repeats": clean.counts.get("pruned_repeats", 0)}
    run["wall_s"] = round(time.monotonic() - started, 1)
    run["issues"] = judge(run)
    return run


def config_name(workers: int | None) -> str:
    return f"workers-{workers}" if workers else "serial"


def reference_runs(workers: int | None, args: argparse.Namespace, s: Settings, work: Path, weights: Path,
                   cache: Path) -> tuple[Clean, list[dict[str, Any]]]:
    """The clean run the killed runs of one configuration are compared with, and ``--controls`` more clean
    runs compared with it: how far two runs agree when nothing is killed."""
    name = config_name(workers)
    clean = clean_run(f"clean-{name}", search_command(s, work / f"clean-{name}", weights, cache, workers),
                      work / f"clean-{name}", work, s.trials, args.run_timeout_s)
    print(f"clean run ({name}): {clean.wall_s:.1f} s, {len(clean.front)} front member(s), fine-tune "
          f"{clean.finetune_s:.2f} s, export {clean.export_s:.1f} s, {clean.journal_records} journal records",
          flush=True)
    controls = []
    for i in range(1, args.controls + 1):
        run_dir = work / f"control-{name}-{i}"
        other = clean_run(run_dir.name, search_command(s, run_dir, weights, cache, workers), run_dir, work,
                          s.trials, args.run_timeout_s)
        controls.append({"control": i, "of": name, "wall_s": other.wall_s, "counts": other.counts,
                         "front": compare_fronts(clean.front, other.front, args.tolerance),
                         "trained": compare_trained(clean.trained, other.trained, args.tolerance)})
        c = controls[-1]
        print(f"control {i} ({name}): front equal {c['front']['equal']}, trained candidates equal "
              f"{c['trained']['equal']} (same order: {c['trained']['same_order']}), {c['wall_s']:.1f} s", flush=True)
    return clean, controls


def totals(runs: list[dict[str, Any]]) -> dict[str, Any]:
    n = len(runs)
    counted = [r["counts"] for r in runs if "error" not in r["counts"]]
    return {
        "runs": n,
        "kills_landed": sum(1 for r in runs if r["kill"].get("landed")),
        "resumes_ok": sum(1 for r in runs if r["resume"]["rc"] == 0),
        "lost": sum(c["lost"] for c in counted),
        "duplicated": sum(c["duplicated"] for c in counted),
        "failed_trials": sum(c["failed"] for c in counted),
        "left_running": sum(c["running_left"] for c in counted),
        "fronts_equal": sum(1 for r in runs if r["front"]["equal"]),
        "trained_equal": sum(1 for r in runs if r["trained"]["equal"]),
        "trained_same_order": sum(1 for r in runs if r["trained"]["same_order"]),
        "runs_with_issues": sum(1 for r in runs if r["issues"]),
    }


def write_reports(out: Path, report: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    report["totals"] = totals(report["runs"])
    (out / "report.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    (out / "report.md").write_text(markdown(report))


def markdown(report: dict[str, Any]) -> str:
    t, s = report["totals"], report["settings"]
    n = t["runs"]
    lines = [
        "# Fault campaign: a search SIGKILLed at random moments, then resumed",
        "",
        f"Search: `{report['search_command']}` ({s['trials']} trials, seed {s['seed']}; worker-phase runs add "
        f"`--workers {report['workers']}`). Reference model trained once ({report['reference']['source']}), val "
        f"accuracy {report['reference']['val_accuracy']:.4f}.",
        "",
    ]
    for name, clean in report["clean"].items():
        lines.append(f"- clean run ({name}, the answer its killed runs are compared with): {clean['wall_s']:.1f} s, "
                     f"{len(clean['front'])} front member(s) (trials {sorted(m['trial'] for m in clean['front'].values())}), "
                     f"{len(clean['trained'])} trained")
    lines += [
        f"- resumes ok: {t['resumes_ok']}/{n}",
        f"- kills that landed while the search ran: {t['kills_landed']}/{n}",
        f"- lost trials: {t['lost']}; duplicated trials: {t['duplicated']}; failed trials (killed mid-trial, "
        f"marked FAIL): {t['failed_trials']}; left RUNNING: {t['left_running']}",
        f"- exported front equal to the clean run's (candidates, accuracies within {report['tolerance']:g}): "
        f"{t['fronts_equal']}/{n}",
        f"- trained candidates (each with its proxy accuracy) equal to the clean run's: {t['trained_equal']}/{n}; "
        f"in the same trial order: {t['trained_same_order']}/{n}",
    ]
    for c in report["controls"]:
        lines.append(f"- control {c['control']} ({c['of']}, another clean run, no kill): front equal "
                     f"{'yes' if c['front']['equal'] else 'no'}, trained candidates equal "
                     f"{'yes' if c['trained']['equal'] else 'no'} (same order: "
                     f"{'yes' if c['trained']['same_order'] else 'no'}), {c['wall_s']:.1f} s")
    lines += [f"- note: {note}" for note in report["notes"]]
    lines += [
        "",
        "| run | phase | target | kill at (s) | what was under way | resume | evaluated | failed | duplicated | lost "
        "| front equal | trained equal (order) | wall (s) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["runs"]:
        k, c = r["kill"], r["counts"]
        target = "worker" if k.get("target", "").startswith("worker") else ("group" if k.get("target") else "-")
        at = f"{k['kill_s']:.2f} (+{r['plan']['delay_s']:.3f})" if "kill_s" in k else "missed"
        resume = "ok" if r["resume"]["rc"] == 0 else f"rc {r['resume']['rc']}"
        resume += f", {r['resume']['wall_s']:.0f} s" + "".join(f"; {note}" for note in r["resume"]["notes"])
        lines.append(f"| {r['run']} | {r['phase']} | {target} | {at} | {r['hit']} | {resume} | "
                     f"{c.get('evaluated', '?')}/{c.get('requested', '?')} | {c.get('failed', '?')} | "
                     f"{c.get('duplicated', '?')} | {c.get('lost', '?')} | {'yes' if r['front']['equal'] else 'no'} | "
                     f"{'yes' if r['trained']['equal'] else 'no'} ({'same' if r['trained']['same_order'] else 'moved'}) | "
                     f"{r['wall_s']:.0f} |")
    issues = [(r["run"], issue) for r in report["runs"] for issue in r["issues"]]
    lines += ["", "## Anomalies", ""]
    lines += [f"- run {run}: {issue}" for run, issue in issues] or ["none"]
    lines += ["", "## Reproduce", "", "```bash", report["command"], "```", "",
              f"Run directories (journals, `study.journal.at-kill`, logs): `{report['work']}`.", ""]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20, help="killed-and-resumed runs")
    parser.add_argument("--seed", type=int, default=0, help="the search's seed and the kill plans' generator")
    parser.add_argument("--out", default="experiments/results/fault_campaign", help="report.json and report.md")
    parser.add_argument("--work", default="/tmp/fault_campaign", help="run directories, reference weights, cache")
    parser.add_argument("--phases", nargs="+", default=list(PHASES), choices=PHASES,
                        help="kill phases, used in turn")
    parser.add_argument("--controls", type=int, default=1, help="extra clean runs, never killed")
    parser.add_argument("--workers", type=int, default=2, help="local worker processes for the worker phase")
    parser.add_argument("--model", default="lenet5")
    parser.add_argument("--data", default="mnist5k")
    parser.add_argument("--budget", default="latency<=0.5x")
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--proxy-epochs", type=float, default=6.0)
    parser.add_argument("--final-epochs", type=float, default=4.0)
    parser.add_argument("--max-train", type=int, default=1000)
    parser.add_argument("--base-epochs", type=float, default=6.0, help="the reference, trained once")
    parser.add_argument("--tolerance", type=float, default=1e-6, help="accuracies equal within this")
    parser.add_argument("--run-timeout-s", type=float, default=600.0, help="per search process")
    args = parser.parse_args(argv)
    for name in ("runs", "trials", "max_train"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')}: expected a positive number, got {getattr(args, name)}")
    if args.controls < 0 or args.workers < 1:
        parser.error("--controls: expected >= 0; --workers: expected >= 1")
    return args


def reproduce_command(args: argparse.Namespace) -> str:
    options = ["--runs", args.runs, "--seed", args.seed, "--out", args.out, "--work", args.work,
               "--phases", *args.phases, "--controls", args.controls, "--workers", args.workers,
               "--model", args.model, "--data", args.data, "--budget", args.budget, "--trials", args.trials,
               "--proxy-epochs", args.proxy_epochs, "--final-epochs", args.final_epochs,
               "--max-train", args.max_train, "--base-epochs", args.base_epochs, "--tolerance", args.tolerance,
               "--run-timeout-s", args.run_timeout_s]
    return "flock /tmp/ac-cpu.lock python experiments/fault_campaign.py " + shlex.join(map(str, options))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.getLogger("autocompress").setLevel(logging.ERROR)  # reading copies of torn journals warns; we report it
    s = Settings(model=args.model, data=args.data, budget=args.budget, trials=args.trials, seed=args.seed,
                 proxy_epochs=args.proxy_epochs, final_epochs=args.final_epochs, max_train=args.max_train,
                 base_epochs=args.base_epochs)
    work, out = Path(args.work).resolve(), Path(args.out)
    cache = work / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    notes = []
    phases = list(args.phases)
    workers_flag = has_workers_flag()
    if "worker" in phases and not workers_flag:
        phases.remove("worker")
        notes.append("worker kills skipped: `autocompress search --help` has no --workers flag")
        print(f"fault_campaign: {notes[-1]}")
    if not phases:
        raise SystemExit("fault_campaign: no phase left to run")

    weights, reference = train_reference(s, work, cache)
    print(f"reference: {reference['source']}, val accuracy {reference['val_accuracy']:.4f}, {reference['seconds']} s")
    report: dict[str, Any] = {
        "command": reproduce_command(args), "settings": asdict(s), "tolerance": args.tolerance, "work": str(work),
        "search_command": shlex.join(search_command(s, work / "run-NN", weights, cache, None)),
        "workers_flag": workers_flag, "workers": args.workers, "notes": notes, "reference": reference,
        "clean": {}, "controls": [], "runs": [],
    }
    references: dict[int | None, Clean] = {}
    for i in range(1, args.runs + 1):
        phase = phases[(i - 1) % len(phases)]
        workers = args.workers if phase == "worker" else None
        if workers not in references:  # several workers order trials by timing: compare with a clean run like it
            references[workers], controls = reference_runs(workers, args, s, work, weights, cache)
            report["clean"][config_name(workers)] = summary(references[workers])
            report["controls"] += controls
            write_reports(out, report)
        run = one_run(i, phase, args, s, work, weights, cache, references[workers], workers)
        report["runs"].append(run)
        write_reports(out, report)
        eta = statistics.mean(r["wall_s"] for r in report["runs"]) * (args.runs - i)  # clean runs not counted
        c = run["counts"]
        print(f"[run {i}/{args.runs}] {phase}: {run['hit']}; resume rc {run['resume']['rc']} in "
              f"{run['resume']['wall_s']:.0f} s; evaluated {c.get('evaluated', '?')}/{s.trials}, lost "
              f"{c.get('lost', '?')}, duplicated {c.get('duplicated', '?')}, front equal "
              f"{'yes' if run['front']['equal'] else 'NO'} ({run['wall_s']:.0f} s; ETA {eta / 60:.1f} min)",
              flush=True)
        for issue in run["issues"]:
            print(f"    {issue}")
    t = report["totals"]
    print(f"resumes ok {t['resumes_ok']}/{t['runs']}, lost {t['lost']}, duplicated {t['duplicated']}, "
          f"fronts equal {t['fronts_equal']}/{t['runs']}; wrote {out / 'report.md'} and {out / 'report.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
