"""A cell's margin over the final fine-tune's seed: one member and the deciding baselines, replicated.

Reads what ``seeds.sh`` left: seed 0 from the cell's own runs (the committed table's), every other seed from
``<runs>/seed-<s>/``. Top-1 is the deployed ONNX file on the 10,000 test images (int8 where the file is int8),
as in the table; Δ is against the reference given the same fine-tune under the same seed. Which baselines meet
the budget comes from the committed table's measured latency (``<cell>.json``): a seed changes weights, not
architectures or speed. Writes ``<cell>-seeds.{md,json}`` beside the table.

    python experiments/cifar10/seeds.py --model resnet20 --budget 0.5 --search search-machine-warm --trial 21 \
        --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from common import RESULTS, RUNS, run_dir

#: the baselines seeds.sh replicates (the reference gives every Δ)
BASELINES = ("int8-uniform", "compound-uniform-int8", "l1-uniform-int8")


def deployed_top1(artifact: dict) -> float:
    """The deployed file's test top-1: the int8 file where there is one."""
    return artifact["onnx_int8"] if artifact.get("onnx_int8") is not None else artifact["onnx_fp32"]


def seed_runs(seed: int, runs: Path) -> Path:
    return runs if seed == 0 else runs / f"seed-{seed}"


def read_seed(seed: int, args: argparse.Namespace) -> dict[str, float]:
    """Method -> top-1 (%) under one seed, and ``reference`` -> the reference's after the same fine-tune."""
    cell = run_dir(args.model, args.budget, seed_runs(seed, args.runs))
    out: dict[str, float] = {}
    reference = cell / "baselines" / "reference" / "record.json"
    manifest = cell / args.search / "export" / "manifest.json"
    for path in (reference, manifest, *(cell / "baselines" / b / "record.json" for b in BASELINES)):
        if not path.is_file():
            sys.exit(f"{path}: missing (run experiments/cifar10/seeds.sh for seed {seed} first)")
    out["reference"] = 100 * json.loads(reference.read_text())["accuracy_test"]
    members = {m["trial"]: m for m in json.loads(manifest.read_text())["members"]}
    if args.trial not in members:
        sys.exit(f"{manifest}: no member for trial {args.trial} (has {sorted(members)})")
    out["member"] = 100 * deployed_top1(members[args.trial]["artifact_accuracy"])
    for name in BASELINES:
        record = json.loads((cell / "baselines" / name / "record.json").read_text())
        out[name] = 100 * deployed_top1(record["artifact_accuracy"])
    return out


def mean_sd(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--budget", type=float, default=0.5)
    parser.add_argument("--search", required=True, help="the search folder in the cell, e.g. search-machine-warm")
    parser.add_argument("--trial", type=int, required=True)
    parser.add_argument("--seeds", type=int, nargs="+", required=True)
    parser.add_argument("--runs", type=Path, default=RUNS)
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args()

    cell = run_dir(args.model, args.budget, args.runs).name
    table = json.loads((args.results / f"{cell}.json").read_text())
    rows = {row["method"]: row for row in table["rows"] if row["kind"] == "baseline"}
    member_row = next((r for r in table["rows"] if r["label"] == f"ours-{args.search}-{args.trial:04d}"), None)
    if member_row is None:
        sys.exit(f"{args.results / f'{cell}.json'}: no row for trial {args.trial} of {args.search}")
    # judged as table.py judges a latency cell, from the one measured figure (its verdict's key changed name)
    under = [b for b in BASELINES if rows[b]["measured_latency_ratio"] <= args.budget]
    by_seed = {seed: read_seed(seed, args) for seed in args.seeds}
    methods = ["reference", "member", *BASELINES]
    margins = [by_seed[s]["member"] - max(by_seed[s][b] for b in under) for s in args.seeds]
    summary = {}
    for m in methods:
        top1 = [by_seed[s][m] for s in args.seeds]
        mean, sd = mean_sd(top1)
        summary[m] = {"top1": top1, "mean": mean, "sd": sd,
                      "delta_mean": statistics.fmean(by_seed[s][m] - by_seed[s]["reference"] for s in args.seeds)}
    label = {"reference": "reference, same fine-tune", "member": f"{args.search} trial {args.trial}"}
    latency = {"reference": 1.0, "member": member_row["measured_latency_ratio"],
               **{b: rows[b]["measured_latency_ratio"] for b in BASELINES}}
    lines = [f"# {cell}: the margin over the final fine-tune's seed",
             "",
             f"Seeds {', '.join(map(str, args.seeds))} of the same final fine-tune (seed 0: the committed table's "
             f"run). Top-1: the deployed ONNX file on the 10,000 test images of CIFAR-10 (JPEG copy). Latency: the "
             f"committed table's measurement (`{cell}.md`); a seed changes weights, not speed. Margin: the member "
             f"against the best baseline under the budget ({', '.join(under)}) in the same seed.",
             "",
             "| method | latency (x ref) | " + " | ".join(f"seed {s}" for s in args.seeds)
             + " | mean ± sd | Δ vs ref (mean) |",
             "|---|---|" + "---|" * len(args.seeds) + "---|---|"]
    for m in methods:
        s = summary[m]
        over = "" if m in ("reference", "member") or m in under else " (over)"
        lines.append(f"| {label.get(m, m)} | {latency[m]:.3f}{over} | "
                     + " | ".join(f"{v:.2f}" for v in s["top1"])
                     + f" | {s['mean']:.2f} ± {s['sd']:.2f} | {s['delta_mean']:+.2f} |")
    mean, sd = mean_sd(margins)
    lines += ["", f"Margin of the member over the best baseline under the budget, per seed: "
              f"{', '.join(f'{m:+.2f}' for m in margins)} pt; mean {mean:+.2f} ± {sd:.2f} pt.", "",
              "Command: `experiments/cifar10/seeds.sh " + f"{args.model} {args.budget:g} {args.search} {args.trial} "
              + " ".join(str(s) for s in args.seeds if s != 0) + "`"]
    text = "\n".join(lines) + "\n"
    (args.results / f"{cell}-seeds.md").write_text(text)
    (args.results / f"{cell}-seeds.json").write_text(json.dumps(
        {"cell": cell, "search": args.search, "trial": args.trial, "seeds": args.seeds, "under_budget": under,
         "latency_ratio": latency, "methods": summary, "margins": margins, "margin_mean": mean, "margin_sd": sd},
        indent=2) + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
