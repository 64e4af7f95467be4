"""How steady is this machine's memory? A cache-resident model, a model whose weights miss the caches, and the
machine check's memory probe, timed side by side for a few minutes.

ResNet-20 (1 MB of float weights) stays in a core's cache; the VGG-like user model (13 MB, most of it a 4096->512
Linear head) and the memory probe (``WeightStream``, 16 MB) read their weights from the shared cache or memory on
every call. On a shared VM that bandwidth moves with the neighbours; a profile's table, timed on small layers,
cannot know it. This prints each window's medians, each series' spread over the run, and how closely the VGG-like
model follows the probe (Spearman over windows), and writes ``memory-state.{json,png}``:

    PYTHONPATH=experiments/generalization python experiments/generalization/memory_state.py --seconds 240
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr
from user_models import vgg_head

from autocompress.models import create_model
from autocompress.runtime import create_runtime
from autocompress.runtime.machine_check import WeightStream
from autocompress.runtime.timing import time_callables

SERIES = ("resnet20", "vgg_head", "memory_probe")


def spread_pct(values: np.ndarray) -> float:
    """10th to 90th percentile, as a % of the median."""
    low, high = np.percentile(values, [10, 90])
    return float(100 * (high - low) / np.median(values))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=240.0, help="how long to watch")
    parser.add_argument("--reps", type=int, default=500, help="timed calls of each model per window (about a second)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("experiments/results/memory-state"))
    args = parser.parse_args()

    runtime = create_runtime("onnxruntime", threads=args.threads)
    models = {"resnet20": (create_model("resnet20").eval(), (3, 32, 32)),
              "vgg_head": (vgg_head().eval(), (3, 32, 32)),
              "memory_probe": (WeightStream(seed=args.seed).eval(), WeightStream.input_shape)}
    windows: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="autocompress-memory-state-") as tmp:
        fns = {name: runtime.model_opener(model, shape, path=Path(tmp) / f"{name}.onnx", seed=args.seed)()
               for name, (model, shape) in models.items()}
        start = time.perf_counter()
        with runtime.measuring():
            while time.perf_counter() - start < args.seconds:
                timings = time_callables(fns, rounds=1, reps=args.reps, warmup=3, seed=args.seed + len(windows))
                row = {"t_s": time.perf_counter() - start, **{n: timings[n].median_ms for n in SERIES}}
                windows.append(row)
                print(f"{row['t_s']:6.0f} s  " + "  ".join(f"{n} {row[n]:.3f} ms" for n in SERIES)
                      + f"  vgg/resnet20 {row['vgg_head'] / row['resnet20']:.2f}", flush=True)
    series = {n: np.array([w[n] for w in windows]) for n in SERIES}
    ratio = series["vgg_head"] / series["resnet20"]
    summary = {n: {"median_ms": float(np.median(v)), "min_ms": float(v.min()), "max_ms": float(v.max()),
                   "spread_pct": spread_pct(v)} for n, v in series.items()}
    summary["vgg_over_resnet20"] = {"median": float(np.median(ratio)), "min": float(ratio.min()),
                                    "max": float(ratio.max()), "spread_pct": spread_pct(ratio)}
    follow = {"vgg_vs_probe": float(spearmanr(series["vgg_head"], series["memory_probe"]).statistic),
              "resnet20_vs_probe": float(spearmanr(series["resnet20"], series["memory_probe"]).statistic),
              "vgg_over_resnet20_vs_probe": float(spearmanr(ratio, series["memory_probe"]).statistic)}
    print(f"\n{len(windows)} windows over {windows[-1]['t_s']:.0f} s, {args.reps} calls each; spread = 10th-90th "
          "percentile of the window medians over their median")
    for name, s in summary.items():
        unit = "" if name == "vgg_over_resnet20" else " ms"
        lo, mid, hi = ((s["min"], s["median"], s["max"]) if name == "vgg_over_resnet20"
                       else (s["min_ms"], s["median_ms"], s["max_ms"]))
        print(f"  {name:18s} median {mid:.3f}{unit}, range {lo:.3f}-{hi:.3f}{unit}, spread {s['spread_pct']:.0f}%")
    print("  Spearman over windows: " + ", ".join(f"{k} {v:+.2f}" for k, v in follow.items()))

    args.out.parent.mkdir(parents=True, exist_ok=True)
    report = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "seconds": args.seconds,
              "reps": args.reps, "threads": args.threads, "runtime": "onnxruntime",
              "weights_mb": {n: sum(p.numel() for p in m.parameters()) * 4 / 1e6 for n, (m, _) in models.items()},
              "summary": summary, "spearman": follow, "windows": windows,
              "command": "PYTHONPATH=experiments/generalization python experiments/generalization/memory_state.py "
                         f"--seconds {args.seconds:g}"}
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4))
    t = np.array([w["t_s"] for w in windows])
    for name in SERIES:
        ax.plot(t, series[name] / np.median(series[name]), label=f"{name} (median {np.median(series[name]):.3f} ms)")
    ax.set_xlabel("seconds")
    ax.set_ylabel("window median / run median")
    ax.set_title("ONNX Runtime, 1 thread: a cache-resident model against two that miss the caches")
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.out.with_suffix(".png"), dpi=120)
    print(f"wrote {args.out.with_suffix('.json')} and {args.out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
