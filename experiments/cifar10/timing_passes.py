"""How far separate timing runs of the same files fall apart: why exports and tables time in several passes.

Times every ONNX file of a CIFAR-10 table (its JSON, written by
``experiments/cifar10/table.py``) beside the table's reference in ``--runs``
timing passes back to back (``measure_latency(passes=...)``, fresh sessions
each), and prints each file's ratio to the reference per pass with the spread
between them (against their median).

    python experiments/cifar10/timing_passes.py experiments/results/cifar10/filled/resnet20-0.35.json

On the second 2-core AMD EPYC VM (2026-12-03, the filled 0.35x table) the
float files of half the reference or more agreed within 3% across three runs;
the third run put the 15 int8 files a median 25% higher than the first two
(1.00-1.39x). Run again 80 minutes later: the int8 files 7-30% apart across
the three runs, those float files 1-4.5%.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from table import table_models

from autocompress.export.measure import measure_latency
from autocompress.hardware.profile import HardwareProfile


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("table", type=Path, help="a table's JSON (experiments/results/cifar10/...)")
    parser.add_argument("--profile", default="runs/cifar10/profile-warm.json", help="the profile (its runtime, threads)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--sessions", type=int, default=4)
    args = parser.parse_args()
    models = table_models(json.loads(args.table.read_text())["rows"])
    timings, why_not = measure_latency(models, HardwareProfile.load(args.profile), rounds=args.rounds,
                                       reps=args.reps, sessions=args.sessions, passes=args.runs, seed=0,
                                       progress=False)
    if why_not:
        raise SystemExit(why_not)
    print(f"{'file':60s} " + " ".join(f"run {i:<3d}" for i in range(args.runs)) + "  spread %")
    for label, timing in timings.items():
        ratios = timing["latency_passes_vs_reference"]
        spread = (max(ratios) - min(ratios)) / float(np.median(ratios)) * 100
        print(f"{label[:60]:60s} " + " ".join(f"{r:7.3f}" for r in ratios) + f"  {spread:8.1f}")


if __name__ == "__main__":
    main()
