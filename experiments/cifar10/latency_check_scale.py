"""Would the before-search latency check have aimed a search's budget where its members measured?

``latency_check: true`` times a few random candidates priced near the latency
budget beside the reference, before any training, and aims the budget at the
limit divided by their median measured/predicted ratio. This script runs that
check (with several seeds) for an experiment and sets its scale beside the
ratio of the trials an export screened (timed as built, in its manifest):
where the two differ, the check's random candidates are not where the
search's members are, and only the export's screening on measured latency
keeps the members under the budget.

    python experiments/cifar10/latency_check_scale.py experiments/cifar10/mobilenetv2_cifar_050-0.5-machine.yaml \\
        runs/cifar10/mobilenetv2_cifar_050-0.5/search-machine/export-screened/manifest.json \\
        --out experiments/results/cifar10/mobilenetv2_cifar_050-0.5-latency-check.json

MobileNetV2 (width 0.5) at 0.5x, 2026-12-05, 2-core AMD EPYC VM: the check's
scale 1.009 and 1.004 (seeds 0 and 1, ten candidates each); the 16 screened
trials priced at 0.475-0.5x measured a median 1.030x their prediction.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from autocompress.cli import load_experiment
from autocompress.search.api import prepare
from autocompress.search.latency_check import check_latency


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("experiment", type=Path, help="the search's experiment YAML (its profile on this machine)")
    parser.add_argument("manifest", type=Path, help="an export's manifest.json with its screening")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--near", type=float, default=0.95,
                        help="screened trials priced at least this fraction of the budget are the members' ratio")
    parser.add_argument("--out", type=Path, default=None, help="write the figures here as JSON")
    args = parser.parse_args()
    torch.set_num_threads(2)
    screening = json.loads(args.manifest.read_text()).get("screening") or {}
    limit = min(screening.get("limits_vs_reference") or [np.nan])
    near = [t for t in screening.get("trials", []) if t["predicted_vs_reference"] >= args.near * limit]
    if not near:
        raise SystemExit(f"{args.manifest}: no screened trial priced at {args.near:g} of the budget or more")
    members = float(np.median([t["measured_vs_reference"] / t["predicted_vs_reference"] for t in near]))
    setup = prepare(load_experiment(str(args.experiment), {}))
    checks = [check_latency(setup, setup.searched_budgets, seed=seed) for seed in args.seeds]
    for seed, check in zip(args.seeds, checks, strict=True):
        print(f"seed {seed}: {check.note}")
    print(f"{len(near)} screened trial(s) priced at {args.near:g}-1 of the budget measured a median {members:.3f}x "
          f"their prediction; the check's scale {', '.join(f'{c.scale:.3f}' for c in checks)}")
    if args.out:
        args.out.write_text(json.dumps({
            "experiment": str(args.experiment), "manifest": str(args.manifest),
            "screened_near_budget": near, "screened_scale": members,
            "checks": [{"seed": s, **c.to_dict()} for s, c in zip(args.seeds, checks, strict=True)],
        }, indent=1) + "\n")


if __name__ == "__main__":
    main()
