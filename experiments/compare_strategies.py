"""Random, TPE, NSGA-II, DDPG and NetAdapt on one task: best feasible accuracy, hypervolume, wall time.

Every strategy gets the same model, data, profile, budget, seed and number of
evaluated (fine-tuned) candidates, in its own study; over-budget proposals of
TPE and NSGA-II are filtered by the cost model and cost no training (they are
counted). Random search draws only feasible candidates. NetAdapt also
fine-tunes its over-budget steps (they count as evaluated) and stops by itself
once the budget holds. TPE and NSGA-II start, as ``autocompress search`` does
by default, from the warm-start anchors (uniform candidates; the feasible ones
count as evaluated trials). Random search, DDPG and NetAdapt start from nothing.

Hypervolume: the area the feasible evaluated trials dominate in (proxy
accuracy up, predicted latency down), from the reference point (accuracy 0,
latency at the budget), with latency as a fraction of the budget — 1.0 would be
accuracy 1 at zero latency.

    python experiments/compare_strategies.py experiments/quickstart.yaml --trials 20 --seed 0

writes experiments/results/strategies.{json,md} and strategies-hypervolume.png.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from autocompress.cli import load_experiment  # noqa: E402
from autocompress.search import BudgetError, SearchConfig, load_study, prepare, records, search  # noqa: E402
from autocompress.search.study import TrialRecord  # noqa: E402

STRATEGIES = ("random", "tpe", "nsga2", "evolution", "ddpg", "netadapt")


def hypervolume(points: list[tuple[float, float]], limit: float) -> float:
    """2-D hypervolume of (accuracy, latency) points, reference (0, limit), latency scaled by the limit."""
    front = sorted((lat / limit, acc) for acc, lat in points if lat <= limit)
    area, best = 0.0, 0.0
    for lat, acc in front:  # fastest first: each point that beats the best so far adds a strip up to the limit
        if acc > best:
            area += (acc - best) * (1.0 - lat)
            best = acc
    return area


def curve(evaluated: list[TrialRecord], limit: float) -> list[float]:
    """Hypervolume after each evaluated trial."""
    points: list[tuple[float, float]] = []
    out = []
    for record in evaluated:
        if record.feasible:
            points.append((float(record.accuracy), record.costs["latency_ms"]))
        out.append(hypervolume(points, limit))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("experiment", nargs="?", default="experiments/quickstart.yaml")
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--strategies", nargs="+", default=list(STRATEGIES))
    parser.add_argument("--max-filtered", type=int, default=500,
                        help="a sampler is given up on after this many over-budget proposals in a row")
    parser.add_argument("--work", default="runs/compare", help="studies and the cached reference model")
    parser.add_argument("--results", default="experiments/results", help="where the table and plot go")
    parser.add_argument("--report-only", action="store_true", help="redraw the table and plot from the JSON")
    args = parser.parse_args()
    if args.report_only:
        out = Path(args.results)
        print(report(json.loads((out / "strategies.json").read_text()), out))
        return

    work = Path(args.work)
    base = load_experiment(args.experiment, {"seed": args.seed, "n_trials": args.trials})
    base = SearchConfig(**{**base.to_dict(), "warm_start": True, "max_filtered": args.max_filtered,
                           "cache_dir": str(work / "cache")})
    setup = prepare(base, progress=True)  # trains (or loads) the reference model once for everyone
    limit = setup.budgets[0].limit
    rows = []
    for name in args.strategies:
        config = SearchConfig(**{**base.to_dict(), "strategy": name, "out": str(work / name)})
        start = time.perf_counter()
        try:
            result = search(config, progress=False)
            gave_up = None
        except BudgetError as exc:  # a sampler that keeps proposing over-budget candidates
            result, gave_up = None, str(exc)
        wall = time.perf_counter() - start
        done = records(load_study(config.storage_path, config.study_name))
        evaluated = [r for r in done if r.evaluated]
        feasible = [r for r in evaluated if r.feasible]
        best = max(feasible, key=lambda r: r.accuracy, default=None)
        hv = curve(evaluated, limit)
        rows.append({
            "strategy": name, "evaluated": len(evaluated), "evaluated_over_budget": len(evaluated) - len(feasible),
            "filtered": sum(not r.evaluated for r in done), "feasible_evaluated": len(feasible),
            "best_feasible_accuracy": None if best is None else best.accuracy,
            "best_latency_ms": None if best is None else best.costs["latency_ms"],
            "front_size": 0 if result is None else len(result.front), "hypervolume": hv[-1] if hv else 0.0,
            "hypervolume_curve": hv, "wall_s": wall, "study": config.storage_path, "gave_up": gave_up,
            "reference_val_accuracy": setup.base_info.get("val_accuracy"),
        })
        print(f"{name:9s} evaluated {len(evaluated):3d} (feasible {len(feasible):3d}), best "
              f"{rows[-1]['best_feasible_accuracy']}, hypervolume {rows[-1]['hypervolume']:.4f}, {wall:.0f} s",
              flush=True)

    out = Path(args.results)
    out.mkdir(parents=True, exist_ok=True)
    task = {k: base.to_dict()[k] for k in ("model", "data", "profile", "budgets", "proxy_epochs", "seed", "n_trials")}
    earlier = json.loads((out / "strategies.json").read_text()) if (out / "strategies.json").is_file() else {}
    if earlier.get("task") == task:  # the same task: strategies not run this time keep their earlier rows
        ran = {r["strategy"] for r in rows}
        kept = [{"reference_val_accuracy": earlier["reference_val_accuracy"], **r} for r in earlier["strategies"]
                if r["strategy"] not in ran]
        rows = kept + rows
        rows.sort(key=lambda r: STRATEGIES.index(r["strategy"]) if r["strategy"] in STRATEGIES else len(STRATEGIES))
    command = (f"python experiments/compare_strategies.py {args.experiment} --trials {args.trials} --seed {args.seed} "
               f"--max-filtered {args.max_filtered}")
    summary = {"command": command, "max_filtered": args.max_filtered,
               "task": task,
               "budget_resolved": str(setup.budgets[0]), "reference": setup.reference,
               "reference_val_accuracy": setup.base_info.get("val_accuracy"), "strategies": rows}
    (out / "strategies.json").write_text(json.dumps(summary, indent=1))
    print(report(summary, out))


def report(summary: dict, out: Path) -> str:
    """The table (Markdown) and the hypervolume plot, from the results JSON."""
    task, rows = summary["task"], summary["strategies"]
    lines = [f"Command: `{summary['command']}`", "",
             f"Task: {task['model']} on {task['data']}, profile {task['profile']}, budget "
             f"{summary['budget_resolved']}, proxy fine-tune {task['proxy_epochs']} epoch(s), seed {task['seed']}; "
             f"reference val accuracy {summary['reference_val_accuracy']:.4f}. TPE and NSGA-II start from the "
             "warm-start anchors (uniform candidates); a sampler is given up on after "
             f"{summary.get('max_filtered', 500)} over-budget proposals in a row.", "",
             "| strategy | evaluated | of which over budget | filtered (no training) | priced per feasible "
             "| best feasible accuracy | its latency (ms) | hypervolume | wall time (s) | stopped because |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        acc = "-" if r["best_feasible_accuracy"] is None else f"{r['best_feasible_accuracy']:.4f}"
        lat = "-" if r["best_latency_ms"] is None else f"{r['best_latency_ms']:.3f}"
        why = ("gave up: over-budget proposals" if r["gave_up"] else
               "trials done" if r["evaluated"] >= task.get("n_trials", r["evaluated"]) else "strategy finished")
        feasible = r["evaluated"] - r["evaluated_over_budget"]
        per = f"{(r['evaluated'] + r['filtered']) / feasible:.1f}" if feasible else "-"
        lines.append(f"| {r['strategy']} | {r['evaluated']} | {r['evaluated_over_budget']} | {r['filtered']} | "
                     f"{per} | {acc} | {lat} | {r['hypervolume']:.4f} | {r['wall_s']:.0f} | {why} |")
    references = {r["strategy"]: r.get("reference_val_accuracy") for r in rows}
    if len(set(references.values())) > 1:  # rows merged from runs with another reference
        lines += ["", "The rows come from runs whose reference was trained separately (same recipe and seed; CPU "
                  "training is not bit-exact): reference val accuracy per row: "
                  + ", ".join(f"{k} {v:.4f}" for k, v in references.items()) + "."]
    (out / "strategies.md").write_text("\n".join(lines) + "\n")
    fig, ax = plt.subplots(figsize=(6, 4))
    for r in rows:
        ax.plot(range(1, len(r["hypervolume_curve"]) + 1), r["hypervolume_curve"], label=r["strategy"], marker=".")
    ax.set_xlabel("evaluated trials")
    ax.set_ylabel("hypervolume (accuracy x latency saved)")
    ax.set_title(f"{task['model']} on {task['data']}, {', '.join(task['budgets'])}")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "strategies-hypervolume.png", dpi=120)
    plt.close(fig)
    return "\n".join(lines)


if __name__ == "__main__":
    main()
