"""Trials per hour with 1 and 2 workers, local processes and Ray Tune, on one small real search.

    python experiments/bench_workers.py --trials 24 --out experiments/results/bench_workers

Every configuration runs the same search (LeNet-5 on the embedded MNIST digits, the same seed,
budget and fine-tune) into a fresh study, one configuration after another. The rate counts the
study's own clock: trained trials over the time from the first trial's start to the last one's end,
so the reference's loading and Ray's start-up are left out (their seconds are reported apart, as
the command's wall time). On a machine with C cores, N workers share them (C/N threads each).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from optuna.trial import TrialState

from autocompress.search import load_study

CONFIGS = [("local", 1), ("local", 2), ("ray", 1), ("ray", 2)]


def run(backend: str, workers: int, args: argparse.Namespace, work: Path) -> dict:
    out = work / f"{backend}-{workers}"
    cmd = [sys.executable, "-m", "autocompress.cli", "search", "--model", "lenet5", "--data", "mnist5k",
           "--budget", "latency<=0.5x", "--trials", str(args.trials), "--seed", str(args.seed),
           "--proxy-epochs", str(args.proxy_epochs), "--base-epochs", str(args.base_epochs),
           "--strategy", args.strategy, "--cache-dir", str(work / "cache"), "--out", str(out),
           "--workers", str(workers), "--backend", backend, "--no-export", "--quiet"]
    started = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{backend} x{workers} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    summary = json.loads((out / "front.json").read_text())
    study = load_study(summary["storage"], summary["study"])
    trained = [t for t in study.trials if t.state == TrialState.COMPLETE and t.user_attrs.get("evaluated")]
    first = min(t.datetime_start for t in trained)
    last = max(t.datetime_complete for t in trained)
    span = (last - first).total_seconds()
    return {"backend": backend, "workers": workers, "trained": len(trained), "search_s": round(span, 1),
            "trials_per_hour": round(len(trained) / span * 3600, 1), "command_wall_s": round(wall, 1),
            "workers_seen": len({t.user_attrs["worker"] for t in trained}),
            "duplicates": summary["proposals"]["duplicates"], "command": " ".join(cmd)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=24)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--proxy-epochs", type=float, default=3.0)
    parser.add_argument("--base-epochs", type=float, default=3.0)
    parser.add_argument("--strategy", default="evolution")
    parser.add_argument("--work", default="/tmp/bench_workers")
    parser.add_argument("--out", default="experiments/results/bench_workers")
    args = parser.parse_args()
    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    rows = []
    for i, (backend, workers) in enumerate(CONFIGS, start=1):
        print(f"[{i}/{len(CONFIGS)}] {backend} x{workers} ...", flush=True)
        rows.append(run(backend, workers, args, work))
        r = rows[-1]
        print(f"    {r['trained']} trials in {r['search_s']} s: {r['trials_per_hour']} per hour "
              f"(command {r['command_wall_s']} s, {r['workers_seen']} process(es) recorded trials)", flush=True)
    base = rows[0]["trials_per_hour"]
    for r in rows:
        r["speedup"] = round(r["trials_per_hour"] / base, 2)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report = {"cores": os.cpu_count(), "settings": vars(args), "rows": rows}
    (out / "bench_workers.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [f"# Trials per hour with 1 and 2 workers ({os.cpu_count()} cores)", "",
             f"LeNet-5 on mnist5k, `latency<=0.5x`, strategy {args.strategy}, {args.trials} trials, proxy "
             f"{args.proxy_epochs} epoch(s), seed {args.seed}. Rate: trained trials over the study's span from the "
             "first trial's start to the last one's end; the command's wall time adds loading the reference and, "
             "for Ray, starting its runtime.", "",
             "| backend | workers | trials | search (s) | trials/hour | vs local x1 | command wall (s) | duplicates |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['backend']} | {r['workers']} | {r['trained']} | {r['search_s']} | {r['trials_per_hour']}"
                     f" | {r['speedup']}x | {r['command_wall_s']} | {r['duplicates']} |")
    lines += ["", "Command: `python experiments/bench_workers.py " + " ".join(
        f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k not in ("work",)) + "`", ""]
    (out / "bench_workers.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
