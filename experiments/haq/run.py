"""HAQ-style mixed precision on a BitFusion-like accelerator: DDPG over per-layer weight and activation bits.

    python experiments/haq/run.py                # about 20 minutes on 2 CPU threads: see below

Cost: with PyTorch's fused fake-quantization kernels a fake-quantized
MobileNetV2 fine-tune step takes about 2 s on 2 CPU threads (13-19 s with the
clamp/round ops written out), so the 40 episodes of the experiment file take
about 15 minutes here and the whole run about 20; ``device: cuda`` in the
experiment file trains on a GPU. With 2-bit layers in the space, a proxy of 2
steps left the first episodes at chance accuracy: give the proxy at least 8 steps.

HAQ (Wang et al., CVPR 2019) let a DDPG agent pick each layer's bits with the
accelerator's latency in the loop, and observed that on memory-bound, edge-like
hardware the depthwise layers got *more* bits than the pointwise ones: they
hold few MACs and few weights, so their bits cost little time. This run asks
the same question of ``autocompress``:

- profile: the shipped BitFusion analytic model (``autocompress profile analytic
  --model bitfusion``, default parameters), written to ``runs/haq/bitfusion.json``;
- model and data: MobileNetV2 (CIFAR variant) on the embedded 5,000 MNIST digits
  (cheap to fine-tune on a CPU; the accuracy signal is coarse, the latency
  signal is the table's);
- space: ``experiments/haq/mobilenetv2-bits.yaml`` — w and a bits in {2, 4, 6, 8}
  per layer, first and last layer at 8 bits, nothing else compressed;
- budget: latency <= 0.6x the all-8-bit model's latency on the profile (absolute
  ms, computed here; see the experiment file for why not relative);
- strategy: ``ddpg``, objective ``constrained`` (best accuracy under the budget).

Then it exports the best trial (its policy plot is the exporter's) and writes
``experiments/results/haq/mobilenetv2-bitfusion.{json,md,png}``: per layer the
bits chosen, its kind (stem / expansion 1x1 / depthwise 3x3 / projection 1x1 /
head), its latency at 8 bits on the table and what bounds it (compute, DRAM or
the input buffer), and, over the best feasible trials, the mean bits per kind.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from scipy.stats import spearmanr  # noqa: E402

from autocompress.cli import load_experiment  # noqa: E402
from autocompress.export import export_front  # noqa: E402
from autocompress.hardware import leaf_signatures  # noqa: E402
from autocompress.hardware.accelerators import accelerator_profile, layer_cost  # noqa: E402
from autocompress.search import load_study, prepare, records, search  # noqa: E402
from autocompress.search.api import SearchSetup, check  # noqa: E402
from autocompress.space import Candidate  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
EXPERIMENT = ROOT / "experiments/haq/mobilenetv2-bitfusion.yaml"
RESULTS = ROOT / "experiments/results/haq"
BUDGET_VS_8BIT = 0.6
KINDS = ("stem", "expand 1x1", "depthwise", "project 1x1", "head")
KIND_COLORS = {"stem": "tab:gray", "expand 1x1": "tab:blue", "depthwise": "tab:red", "project 1x1": "tab:green",
               "head": "tab:purple"}


def layer_kind(cfg, first: str) -> str:
    """Which part of MobileNetV2 a unit is: the layers of an inverted-residual block sit under ``.conv.``."""
    if cfg.name == first:
        return "stem"
    if cfg.op == "linear" or ".conv." not in cfg.name:
        return "head"  # the last 1x1 convolution (320 -> 1280 channels) and the classifier
    if cfg.groups > 1 and cfg.groups == cfg.in_channels:
        return "depthwise"
    return "expand 1x1" if cfg.out_channels > cfg.in_channels else "project 1x1"


def per_layer(setup: SearchSetup, candidate: Candidate) -> list[dict[str, Any]]:
    """Each unit: its kind, the bits chosen, and its cost on the accelerator at 8 bits and as chosen."""
    profile = setup.costs.profile
    model = profile.accelerator
    graph = setup.space.graph
    units = sorted(graph.units.values(), key=lambda u: u.index)
    first = units[0].name
    eight = {cfg.name: cfg for cfg in setup.space.layer_configs(setup.space.uniform(w_bits=8, a_bits=8))}
    rows = []
    for cfg in setup.space.layer_configs(candidate):
        at8 = [layer_cost(model, sig) for sig in leaf_signatures(eight[cfg.name], profile.precision_for(8, 8))]
        sigs = leaf_signatures(cfg, profile.precision_for(cfg.w_bits, cfg.a_bits))
        rows.append({"unit": cfg.name, "kind": layer_kind(cfg, first), "w_bits": cfg.w_bits,
                     "a_bits": cfg.a_bits, "macs": sum(s.macs for s in sigs),
                     "latency_ms_at_w8a8": sum(c.latency_ms for c in at8),
                     "bound_at_w8a8": max(at8, key=lambda c: c.latency_ms).bound,
                     "latency_ms_chosen": sum(layer_cost(model, sig).latency_ms for sig in sigs)})
    return rows


def bits_by_kind(rows_per_trial: list[list[dict[str, Any]]]) -> dict[str, dict[str, float]]:
    """Mean weight and activation bits per layer kind over several policies."""
    out = {}
    for kind in KINDS:
        picked = [r for rows in rows_per_trial for r in rows if r["kind"] == kind]
        if picked:
            out[kind] = {"layers": len(picked) // len(rows_per_trial),
                         "w_bits": round(float(np.mean([r["w_bits"] for r in picked])), 2),
                         "a_bits": round(float(np.mean([r["a_bits"] for r in picked])), 2)}
    return out


def plot(rows: list[dict[str, Any]], title: str, path: Path) -> None:
    """Bits per layer (bars coloured by kind) over each layer's 8-bit latency on the table."""
    x = np.arange(len(rows))
    colors = [KIND_COLORS[r["kind"]] for r in rows]
    fig, axes = plt.subplots(3, 1, figsize=(max(10, 0.28 * len(rows) + 2), 8.5), sharex=True)
    for ax, key, label in ((axes[0], "w_bits", "weight bits"), (axes[1], "a_bits", "activation bits")):
        ax.bar(x, [r[key] for r in rows], color=colors, edgecolor="black", linewidth=0.3)
        ax.set_yticks([2, 4, 6, 8])
        ax.set_ylim(0, 8.5)
        ax.set_ylabel(label)
        ax.grid(True, axis="y", alpha=0.3)
    lat = [r["latency_ms_at_w8a8"] * 1e3 for r in rows]
    axes[2].bar(x, lat, color=colors, edgecolor="black", linewidth=0.3)
    for i, r in enumerate(rows):
        if r["bound_at_w8a8"] != "compute":
            axes[2].text(i, lat[i], "m", ha="center", va="bottom", fontsize=7)
    axes[2].set_ylabel("latency at w8a8 (µs)")
    axes[2].set_title("each layer on the BitFusion model at 8 bits; m: memory-bound (DRAM or input buffer)",
                      fontsize=9, loc="left")
    axes[2].set_xticks(x)
    axes[2].set_xticklabels([r["unit"] for r in rows], rotation=90, fontsize=6)
    handles = [plt.Rectangle((0, 0), 1, 1, color=KIND_COLORS[k]) for k in KINDS]
    fig.legend(handles, KINDS, loc="upper center", bbox_to_anchor=(0.5, 0.965), ncol=len(KINDS), fontsize=8,
               frameon=False)
    fig.suptitle(title, fontsize=10, y=0.995)
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=None, help="evaluated trials (default: the experiment file's)")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--top", type=int, default=5, help="best feasible trials averaged per layer kind")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    os.chdir(ROOT)  # the experiment file's paths are relative to the repository
    overrides = {"n_trials": args.trials, "seed": args.seed}
    config = load_experiment(str(EXPERIMENT), {k: v for k, v in overrides.items() if v is not None})
    config.out = f"{config.out}-seed{config.seed}"  # the seed is part of a study's identity: one folder each
    profile_path = Path(config.profile)
    profile_path.parent.mkdir(parents=True, exist_ok=True)
    accelerator_profile("bitfusion", name="bitfusion", command=" ".join(["python", *sys.argv])).save(profile_path)

    # the budget: 0.6x the all-8-bit model's latency on this profile, priced before anything is trained
    checked = check(config)
    eight_ms = checked.costs.predict(checked.space.uniform(w_bits=8, a_bits=8)).to_dict()["latency_ms"]
    budget_ms = BUDGET_VS_8BIT * eight_ms
    config.budgets = [f"latency_ms<={budget_ms:.6f}"]
    logging.info("all-8-bit model: %.4f ms on the BitFusion model; budget %s (%.2fx of it; the 16-bit reference "
                 "runs at %.4f ms)", eight_ms, config.budgets[0], BUDGET_VS_8BIT, checked.reference["latency_ms"])

    setup = prepare(config)
    result = search(config, setup=setup)
    study = load_study(config.storage_path, config.study_name)
    history = [t for t in records(study) if t.evaluated and t.feasible and t.accuracy is not None]
    history.sort(key=lambda t: -t.accuracy)
    if not history:
        raise SystemExit(f"{config.storage_path}: no feasible trial was evaluated; nothing to report")
    best = history[0]
    manifest = export_front(setup, study, Path(config.out) / "export", trials=[best.number])

    rows = per_layer(setup, best.candidate)
    top = [per_layer(setup, t.candidate) for t in history[:args.top]]
    uniform = {bits: checked.costs.predict(checked.space.uniform(w_bits=bits, a_bits=bits)).to_dict()["latency_ms"]
               for bits in (2, 4, 6, 8)}
    varied = [r for r in rows if r["kind"] not in ("stem", "head")]
    rho = spearmanr([r["latency_ms_at_w8a8"] for r in varied], [r["w_bits"] + r["a_bits"] for r in varied])
    member = manifest.members[0]
    report = {
        "experiment": str(EXPERIMENT.relative_to(ROOT)) if EXPERIMENT.is_relative_to(ROOT) else str(EXPERIMENT), "command": "python experiments/haq/run.py",
        "profile": str(profile_path), "budget": config.budgets[0],
        "all_8bit_latency_ms": eight_ms, "reference_16bit_latency_ms": checked.reference["latency_ms"],
        "uniform_latency_ms": uniform, "trials": len(history), "strategy": config.strategy,
        "best_trial": best.number, "best_proxy_accuracy": best.accuracy,
        "best_latency_ms": best.costs["latency_ms"], "best_latency_vs_8bit": best.costs["latency_ms"] / eight_ms,
        "best_test_accuracy_after_final_fine_tune": member.accuracy_test,
        "final_epochs": config.final_epochs,
        "bits_by_kind_best": bits_by_kind([rows]), f"bits_by_kind_top{args.top}": bits_by_kind(top),
        "spearman_latency_at_8bit_vs_bits": {"rho": float(rho.statistic), "layers": len(varied),
                                            "what": "over the non-stem, non-head layers of the best policy: a "
                                                    "layer's latency at w8a8 against w_bits + a_bits chosen"},
        "proposals": dataclasses.asdict(result.proposals), "layers": rows,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = RESULTS / "mobilenetv2-bitfusion"
    stem.with_suffix(".json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    title = (f"DDPG bit policy, MobileNetV2 on BitFusion (model), trial {best.number}: "
             f"{best.costs['latency_ms'] / eight_ms:.2f}x the all-8-bit latency, test {member.accuracy_test:.3f}")
    plot(rows, title, stem.with_suffix(".png"))
    shutil.copyfile(Path(config.out) / "export" / "policy.png", RESULTS / "mobilenetv2-bitfusion-export-policy.png")
    stem.with_suffix(".md").write_text(markdown(report, args.top))
    print(stem.with_suffix(".md").read_text())


def markdown(report: dict[str, Any], top: int) -> str:
    """The report a person reads: the budget, the best policy, bits per layer kind against the table."""
    lines = [
        "# HAQ-style bit allocation: MobileNetV2 on the BitFusion model",
        "",
        f"Command: `{report['command']}` (experiment `{report['experiment']}`). Data: the embedded 5,000 MNIST "
        f"digits. Profile: the BitFusion analytic model (modelled, not a chip). Strategy: {report['strategy']}, "
        f"{report['trials']} feasible trials.",
        "",
        f"Budget: `{report['budget']}` = {BUDGET_VS_8BIT}x the all-8-bit model ({report['all_8bit_latency_ms']:.4f} "
        f"ms; uniform 6 bits {report['uniform_latency_ms'][6]:.4f}, 4 bits {report['uniform_latency_ms'][4]:.4f}, "
        f"2 bits {report['uniform_latency_ms'][2]:.4f}; the 16-bit reference {report['reference_16bit_latency_ms']:.4f}).",
        "",
        f"Best policy: trial {report['best_trial']}, {report['best_latency_vs_8bit']:.3f}x the all-8-bit latency, "
        f"proxy accuracy {report['best_proxy_accuracy']:.4f}, test {report['best_test_accuracy_after_final_fine_tune']:.4f} "
        f"after a {report['final_epochs']:g}-epoch final fine-tune.",
        "",
        f"| layer kind | layers | w bits (best) | a bits (best) | w bits (top {top}) | a bits (top {top}) |",
        "|---|---|---|---|---|---|",
    ]
    best, many = report["bits_by_kind_best"], report[f"bits_by_kind_top{top}"]
    for kind, b in best.items():
        m = many.get(kind, {})
        lines.append(f"| {kind} | {b['layers']} | {b['w_bits']:.2f} | {b['a_bits']:.2f} | {m.get('w_bits', '-')} | "
                     f"{m.get('a_bits', '-')} |")
    rho = report["spearman_latency_at_8bit_vs_bits"]
    bound = {}
    for r in report["layers"]:
        bound.setdefault(r["kind"], []).append(r["bound_at_w8a8"])
    lines += ["", f"Spearman between a layer's latency at w8a8 and the bits it got (w + a), {rho['layers']} "
              f"layers: {rho['rho']:.3f}.", "",
              "What bounds each kind at 8 bits on the table: " + "; ".join(
                  f"{k}: {sum(b != 'compute' for b in v)}/{len(v)} memory-bound" for k, v in bound.items()) + ".",
              "", "Plots: `mobilenetv2-bitfusion.png` (bits per layer over each layer's 8-bit latency), "
              "`mobilenetv2-bitfusion-export-policy.png` (the exporter's policy plot).", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
