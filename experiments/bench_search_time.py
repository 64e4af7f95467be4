"""Where the quickstart's time goes: base model, cost scoring, building, fine-tuning, export.

Runs the README quickstart task (ResNet-20 on mnist5k, latency<=0.5x on the
shipped ONNX Runtime CPU profile) in a fresh run directory and prints seconds
per phase. A figure, not a test: run it on an otherwise idle machine.

    python experiments/bench_search_time.py --trials 20 --seed 0
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from autocompress.export import export_front
from autocompress.search import SearchConfig, load_study, prepare, search


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache-dir", default=None, help="reuse a trained base model (default: train it)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        config = SearchConfig(n_trials=args.trials, seed=args.seed, out=str(Path(tmp) / "run"),
                              cache_dir=args.cache_dir or str(Path(tmp) / "cache"))
        phases = {}
        last = {}

        def on_trial(progress, record) -> None:
            last["progress"] = progress

        start = time.perf_counter()
        setup = prepare(config, progress=False)
        phases["base model (train or load), graph, space, cost tables"] = time.perf_counter() - start
        start = time.perf_counter()
        result = search(config, setup=setup, on_trial=on_trial, progress=False)
        search_s = time.perf_counter() - start
        p = last["progress"]
        phases["cost scoring (all proposals)"] = p.scoring_s
        phases["materialize (evaluated trials)"] = p.building_s
        phases["fine-tune + accuracy (evaluated trials)"] = p.evaluating_s
        phases["search: set-up and the rest"] = search_s - p.scoring_s - p.building_s - p.evaluating_s
        start = time.perf_counter()
        manifest = export_front(setup, load_study(result.storage, result.study_name), Path(tmp) / "export",
                                progress=False)
        phases["export (fine-tune, ONNX, re-measure, plots)"] = time.perf_counter() - start

    total = sum(phases.values())
    print(f"quickstart: {args.trials} evaluated trials ({p.proposals.filtered} filtered by budget), "
          f"{len(manifest.members)} exported")
    for name, seconds in phases.items():
        print(f"  {name:55s} {seconds:8.1f} s  {seconds / total:6.1%}")
    print(f"  {'total':55s} {total:8.1f} s")


if __name__ == "__main__":
    main()
