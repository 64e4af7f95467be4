"""Table and plot of a held-out validation (`autocompress profile validate ... --hold-out ...`, or
`--calibrate 0` on a profile calibrated earlier).

    python experiments/generalization/report.py runs/generalization/profile.validation.json \
        --out experiments/results/generalization

Per model: candidates, share within +-10% of the prediction, median and 90th
percentile absolute error, median signed error (the bias a calibration
fitted elsewhere carries), Spearman, the noise floor of the measurement, and
how well the prediction of each candidate as a fraction of its uncompressed
reference matches the measured fraction (what `latency<=0.5x` compares).
Writes OUT.md, OUT.json (the report's rows) and OUT.png (predicted against
measured latency, one panel per model).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("report", help="the .validation.json that `autocompress profile validate` wrote")
    parser.add_argument("--out", required=True, help="OUT.md, OUT.json and OUT.png are written")
    args = parser.parse_args()
    report = json.loads(Path(args.report).read_text())
    rows = report["samples"]
    results = [r for r in report["results"] if len(r["models"]) == 1 and r["subset"] == "all"]
    pooled = [r for r in report["results"] if len(r["models"]) > 1 and r["subset"] == "all"]
    calibrated = sorted({s["model"] for s in report["calibration_samples"]})
    held_out = [m for m in dict.fromkeys(s["model"] for s in rows) if m not in calibrated]
    if calibrated:  # calibrated and held-out models timed in one run (`--hold-out`)
        fit = next(r["calibration"] for r in pooled if len(r["models"]) == len(calibrated) + len(held_out))
        used = (f"{', '.join(calibrated)} calibrated on in the same run, each with its own calibration; "
                f"{', '.join(held_out) or 'no model'} held out, priced with the pooled calibration the run fitted on "
                f"{', '.join(fit['models'])} (form `{fit['form']}`).")
    else:
        used = (f"fitted on {', '.join(results[0]['calibration']['models']) or 'nothing'} "
                f"(form `{results[0]['calibration']['form']}`).")
    lines = [f"Held-out validation: `{(results or pooled)[0]['command']}`", "",
             f"Calibration used: {used} "
             + ("The profile has no anchors." if report["anchor_ratio"] is None else
                f"Profile anchors ran at {report['anchor_ratio']:.3f}x their table values."), "",
             "| model | candidates | within +-10% | median abs err | p90 abs err | median signed err | Spearman | "
             "noise floor | as a fraction of the reference: within +-10% (median signed err) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in [*results, *pooled]:
        models = r["models"]
        mine = [s for s in rows if any(m.startswith(s["model"] + "@") for m in models)]
        # what the row's metrics compared: the pooled calibration only for several models fitted in this run
        key = "pooled_predicted_ms" if len(models) > 1 and report["calibration_samples"] else "predicted_ms"
        signed = np.median([(s[key] / s["measured_ms"] - 1) * 100 for s in mine])
        name = (models[0] if len(models) == 1 else "held-out models" if len(models) == len(held_out) < len(
            set(s["model"] for s in rows)) else "all models")
        lines.append(f"| {name} | {r['n_candidates']} | {r['within_10pct']:.0%} | {r['median_abs_pct_error']:.1f}% | "
                     f"{r['p90_abs_pct_error']:.1f}% | {signed:+.1f}% | {r['spearman']:.3f} | "
                     f"{r['noise_floor_pct']:.1f}% | {_fractions(mine, key.replace('_ms', '_fraction'))} |")
    timed = report.get("rounds")
    if timed:  # reports before the noise bound timed every model for a fixed number of rounds
        lines += ["", (f"Rounds: at least {timed['min']}; models whose noise floor stayed above "
                       f"{timed['noise_bound_pct']:g}% got more, up to {timed['max']}: " if timed["noise_bound_pct"]
                       else f"Rounds: {timed['min']}, no noise bound: ")
                  + ", ".join(f"{m} {n}" for m, n in timed["per_model"].items()) + "."]
    checks = report.get("machine_check") or {}
    if checks:
        lines += ["", "Memory during the run (the machine check's 16 MB memory probe, beside its anchors): "
                  + "; ".join(f"{when}: {_memory(checks[when])}" for when in ("before", "after") if when in checks)
                  + ". Models whose weights miss a core's cache (the VGG-like one: 13 MB) time off the table by "
                    "about memory's pace; the others do not."]
    if checks.get("settle"):  # reports before --settle checked the machine between rounds have none
        lines += ["", "The anchors against their table at each check of `--settle` (before the timing and before "
                  "every later round), and any wait: "
                  + ", ".join(_settle(c) for c in checks["settle"] if c["speed_ratio"] is not None) + "."]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    out.with_suffix(".json").write_text(json.dumps({"results": report["results"], "samples": rows,
                                                    "machine_check": checks, "rounds": timed}, indent=1))
    models = list(dict.fromkeys(s["model"] for s in rows))
    fig, axes = plt.subplots(1, len(models), figsize=(4.2 * len(models), 4.0), squeeze=False)
    for ax, model in zip(axes[0], models, strict=True):
        for subset, marker in (("fp32-only", "o"), ("int8-containing", "s"), ("near-int8", "D"), ("uniform-int8", "^")):
            mine = [s for s in rows if s["model"] == model and s["subset"] == subset]
            if mine:
                ax.scatter([s["measured_ms"] for s in mine], [s["predicted_ms"] for s in mine], marker=marker,
                           label=subset, s=18)
        low = min(min(s["measured_ms"], s["predicted_ms"]) for s in rows if s["model"] == model)
        high = max(max(s["measured_ms"], s["predicted_ms"]) for s in rows if s["model"] == model)
        line = np.array([low, high])
        ax.plot(line, line, "k-", lw=0.8, zorder=1)
        ax.fill_between(line, line * 0.9, line * 1.1, color="0.85", label="+-10%", zorder=0)  # under the points
        ax.set(title=model, xlabel="measured (ms)", ylabel="predicted (ms)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out.with_suffix(".png"), dpi=110)
    print("\n".join(lines))
    print(f"wrote {out.with_suffix('.md')}, {out.with_suffix('.json')} and {out.with_suffix('.png')}")


def _fractions(rows: list[dict], key: str) -> str:
    """How well the rows' predicted fractions of their reference (``key``) match the measured ones: what a relative
    budget compares. Reports before the validation recorded fractions have none."""
    errors = np.array([(s[key] / s["measured_fraction"] - 1) * 100 for s in rows if key in s])
    if not len(errors):
        return "not recorded"
    return f"{np.mean(np.abs(errors) <= 10):.0%} ({np.median(errors):+.1f}%)"


def _settle(check: dict) -> str:
    notes = []
    if check["waited_s"]:
        notes.append(f"waited {check['waited_s']:.0f} s")
    if check["slow"]:
        notes.append("still slow")
    return f"{check['stage']} {check['speed_ratio']:.2f}x" + (f" ({'; '.join(notes)})" if notes else "")


def _memory(check: dict) -> str:
    if check.get("memory_probe_ms") is None:
        return "not timed"
    pace = ("" if check.get("memory_ratio") is None else
            f", {check['memory_ratio']:.2f}x its pace against the anchors when the profile was measured")
    return (f"probe {check['memory_probe_ms']:.3f} ms{pace}, rounds spread {check['memory_spread_pct']:.0f}%, "
            f"anchors at {check['speed_ratio']:.2f}x their table")


if __name__ == "__main__":
    main()
