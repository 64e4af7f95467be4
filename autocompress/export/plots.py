"""Plots of an export: the accuracy/cost front and the per-layer policies of its members (PNG, Agg).

``plot_front(manifest, study_records, path)``: one panel per cost (latency,
energy, size) with accuracy on y — every evaluated feasible trial, the exported
members labelled with their trial numbers (proxy score, final score, measured
latency), the budget lines and the uncompressed reference.

``plot_policy(manifest, space, path)``: for each member, per layer in execution
order, the fraction of output channels kept, weight and activation bits, rank
ratio and sparsity.

``plot_screening(manifest, path)``: the trials the export timed before choosing
its members, predicted against measured latency (both as fractions of the
reference), and their accuracy against measured latency, with the budget.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

from autocompress.export.manifest import ExportedMember, Manifest  # noqa: E402
from autocompress.search.study import TrialRecord  # noqa: E402
from autocompress.space import Candidate, SearchSpace  # noqa: E402

#: panel -> (cost-model array, factor to the panel's unit, axis label); energy's label gets its method
PANELS = {
    "latency_ms": ("latency_ms", 1.0, "latency (ms)"),
    "energy_mj": ("energy_mj", 1.0, "energy (mJ)"),
    "size_kb": ("size_bytes", 1 / 1024, "size (KiB)"),
}
#: budget metric -> panel it is drawn on
_BUDGET_PANEL = {"latency_ms": "latency_ms", "energy_mj": "energy_mj", "size_bytes": "size_kb",
                 "size_kb": "size_kb", "size_mb": "size_kb"}
_TO_PANEL = {"latency_ms": 1.0, "energy_mj": 1.0, "size_bytes": 1 / 1024, "size_kb": 1.0, "size_mb": 1024.0}
MEMBER_COLOR = "tab:red"
MEASURED_COLOR = "tab:blue"
REFERENCE_COLOR = "goldenrod"
MISSED_COLOR = "crimson"


def _finite(values) -> list[float]:
    return [v for v in values if v is not None and math.isfinite(v)]


def plot_front(manifest: Manifest, study_records: Sequence[TrialRecord], path: str | Path) -> Path:
    """Accuracy against each cost; returns ``path``."""
    path = Path(path)
    members = manifest.members
    reference = manifest.reference
    energy_method = manifest.energy_method
    pool = [t for t in study_records if t.feasible and t.evaluated and t.accuracy is not None]
    filtered = sum(not t.feasible for t in study_records)
    panels = []
    for name, (array, factor, label) in PANELS.items():
        values = _finite([t.costs.get(array) for t in pool] + [m.predicted.get(array) for m in members])
        if not values:
            continue  # e.g. energy on a profile without an energy model
        if name == "energy_mj":
            label = f"energy (mJ, {energy_method})"
        panels.append((name, array, factor, label))

    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.8), squeeze=False)
    axes = axes[0]
    ref_acc = reference.accuracy_val
    for ax, (name, array, factor, label) in zip(axes, panels, strict=True):
        xs = [t.costs[array] * factor for t in pool]
        ax.scatter(xs, [t.accuracy for t in pool], s=18, color="0.6", alpha=0.55, linewidths=0,
                   label="evaluated trial (proxy accuracy)", zorder=2)
        for m in members:
            x = m.predicted[array] * factor
            ax.plot([x, x], [m.accuracy_proxy, m.accuracy_val], ls=":", color=MEMBER_COLOR, lw=1, zorder=3)
            ax.scatter([x], [m.accuracy_proxy], s=60, color=MEMBER_COLOR, edgecolors="black", linewidths=0.6,
                       zorder=4)
            ax.scatter([x], [m.accuracy_val], s=70, marker="D", facecolors="none", edgecolors=MEMBER_COLOR,
                       linewidths=1.5, zorder=5)
            ax.annotate(f"#{m.trial}", (x, m.accuracy_proxy), xytext=(5, -11), textcoords="offset points",
                        fontsize=8, color="darkred", zorder=6)
            measured = m.measured.get(array) if name == "latency_ms" else None
            if measured is not None:
                missed = any(r.met_measured is False and r.metric == "latency_ms" for r in m.budgets)
                ax.scatter([measured], [m.accuracy_val], s=55, marker="s", facecolors="none",
                           edgecolors=MISSED_COLOR if missed else MEASURED_COLOR, linewidths=1.5, zorder=5)
                if missed:
                    ax.annotate("missed budget", (measured, m.accuracy_val), xytext=(6, 5),
                                textcoords="offset points", fontsize=7, color=MISSED_COLOR, ha="left", zorder=6)
                ax.plot([x, measured], [m.accuracy_val] * 2, color=MEASURED_COLOR, lw=0.8, alpha=0.6, zorder=3)
        ref_x = reference.predicted.get(array)
        if ref_x is not None and ref_acc is not None and math.isfinite(ref_x):
            ax.scatter([ref_x * factor], [ref_acc], s=220, marker="*", color=REFERENCE_COLOR, edgecolors="black",
                       linewidths=0.7, zorder=6)
            ax.annotate(f"reference ({ref_acc:.3f})", (ref_x * factor, ref_acc), xytext=(0, -10),
                        textcoords="offset points", fontsize=8, ha="center", va="top", zorder=6)
            ref_measured = reference.measured.get(array) if name == "latency_ms" else None
            if ref_measured is not None:
                ax.scatter([ref_measured], [ref_acc], s=200, marker="*", facecolors="none",
                           edgecolors=MEASURED_COLOR, linewidths=1.2, zorder=6)
        _budget_lines(ax, name, manifest)
        if name == "latency_ms":
            timed = manifest.timing.measured
            label += "  [x: predicted; blue: measured]" if timed else "  [predicted; not re-measured here]"
        else:
            label += "  [predicted]"
        ax.set_xlabel(label, fontsize=9)
        ax.grid(True, alpha=0.3)
        ax.margins(x=0.08, y=0.1)
        lo = _finite(xs + [m.predicted[array] * factor for m in members]
                     + ([ref_x * factor] if ref_x is not None else []))
        if lo and min(lo) > 0 and max(lo) / min(lo) > 30:
            ax.set_xscale("log")
    axes[0].set_ylabel("top-1 accuracy")
    handles = [
        Line2D([], [], marker="o", ls="", color="0.6", label="evaluated trial (proxy accuracy)"),
        Line2D([], [], marker="o", ls="", color=MEMBER_COLOR, markeredgecolor="black", label="exported: proxy accuracy"),
        Line2D([], [], marker="D", ls="", color="white", markeredgecolor=MEMBER_COLOR, markeredgewidth=1.5,
               label="exported: after final fine-tune (val)"),
        Line2D([], [], marker="s", ls="", color="none", markeredgecolor=MEASURED_COLOR, markeredgewidth=1.5,
               label="re-measured latency"),
        Line2D([], [], marker="*", ls="", color=REFERENCE_COLOR, markeredgecolor="black", markersize=13,
               label="uncompressed reference (val)"),
        Line2D([], [], marker="*", ls="", color="none", markeredgecolor=MEASURED_COLOR, markersize=13,
               label="reference, re-measured"),
        Line2D([], [], ls="--", color="tab:purple", label="budget (predicted limit)"),
        Line2D([], [], ls=":", color=MEASURED_COLOR, label="budget (x measured reference)"),
    ]
    fig.legend(handles=handles, loc="lower center", ncol=4, fontsize=8, frameon=False)
    study = manifest.study
    fig.suptitle(f"{study.name}: {len(pool)} evaluated feasible trials shown, {filtered} filtered over budget "
                 f"(not shown); {len(members)} exported\nprofile {manifest.profile.name} "
                 f"({manifest.profile.runtime}, {manifest.profile.threads} thread(s))", fontsize=10)
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _budget_lines(ax, panel: str, manifest: Manifest) -> None:
    rows = manifest.members[0].budgets if manifest.members else []
    for row in rows:
        if _BUDGET_PANEL.get(row.metric) != panel:
            continue
        scale = _TO_PANEL[row.metric]
        limit = row.limit * scale
        ax.axvline(limit, ls="--", color="tab:purple", lw=1.2, zorder=1)
        ax.annotate(row.text, (limit, 0.98), xycoords=("data", "axes fraction"), xytext=(-3, 0),
                    textcoords="offset points", fontsize=8, color="tab:purple", rotation=90, ha="right",
                    va="top")
        if row.relative is not None and row.measured_limit is not None and panel == "latency_ms":
            measured_limit = row.measured_limit * scale
            ax.axvline(measured_limit, ls=":", color=MEASURED_COLOR, lw=1.2, zorder=1)
            ax.annotate(f"{row.relative:g} x measured reference", (measured_limit, 0.98),
                        xycoords=("data", "axes fraction"), xytext=(-3, 0), textcoords="offset points", fontsize=8,
                        color=MEASURED_COLOR, rotation=90, ha="right", va="top")


def plot_policy(manifest: Manifest, space: SearchSpace, path: str | Path) -> Path:
    """Per-layer choices of every exported member, as grouped bars; returns ``path``."""
    path = Path(path)
    members = manifest.members
    units = [u.name for u in sorted(space.graph.units.values(), key=lambda u: u.index)]
    identity = {cfg.name: cfg for cfg in space.layer_configs(space.identity())}
    rows = ("keep", "w_bits", "a_bits", "rank", "sparsity")
    titles = {"keep": "output channels kept (fraction)", "w_bits": "weight bits", "a_bits": "activation bits",
              "rank": "rank ratio (1 = not factorized)", "sparsity": "weight sparsity"}
    values: dict[str, dict[str, list[float]]] = {r: {} for r in rows}
    for m in members:
        candidate = Candidate.from_dict(m.candidate)
        configs = {cfg.name: cfg for cfg in space.layer_configs(candidate)}
        label = _member_label(m)
        for r in rows:
            values[r][label] = []
        for unit in units:
            cfg = configs.get(unit)  # None: the unit's block is dropped by depth scaling
            values["keep"][label].append(cfg.out_channels / identity[unit].out_channels if cfg else 0.0)
            values["w_bits"][label].append(cfg.w_bits if cfg else math.nan)
            values["a_bits"][label].append(cfg.a_bits if cfg else math.nan)
            values["rank"][label].append(float(candidate.get(unit, "rank")) if cfg else 0.0)
            values["sparsity"][label].append(cfg.sparsity if cfg else math.nan)

    if any(v == 0.0 for ys in values["keep"].values() for v in ys):
        titles["keep"] += "; no bar: layer dropped by depth scaling"
    n_members = max(1, len(members))
    width = min(28.0, max(8.0, 1.5 + len(units) * (0.35 + 0.12 * n_members)))
    legend_cols = min(n_members, 3)
    header_in = 0.3 + 0.22 * math.ceil(n_members / legend_cols)  # title + legend rows, inches
    height = 1.9 * len(rows) + 1.4 + header_in
    fig, axes = plt.subplots(len(rows), 1, figsize=(width, height), sharex=True)
    colors = plt.get_cmap("tab10").colors
    bar_w = 0.8 / n_members
    for ax, r in zip(axes, rows, strict=True):
        for k, (label, ys) in enumerate(values[r].items()):
            xs = [i - 0.4 + bar_w * (k + 0.5) for i in range(len(units))]
            color = colors[k % len(colors)]
            if r in ("w_bits", "a_bits"):
                ax.bar(xs, [y - 1 if math.isfinite(y) else 0 for y in ys], width=bar_w, bottom=1, color=color,
                       label=label, edgecolor="black", linewidth=0.3)
            else:
                ax.bar(xs, [y if math.isfinite(y) else 0 for y in ys], width=bar_w, color=color, label=label,
                       edgecolor="black", linewidth=0.3)
        if r in ("w_bits", "a_bits"):
            ax.set_yscale("log", base=2)
            ax.set_ylim(1, 48)
            ax.set_yticks([2, 4, 6, 8, 32])
            ax.set_yticklabels(["2", "4", "6", "8", "32 (float)"])
            ax.minorticks_off()
            ax.axhline(8, color="0.5", lw=0.6, ls=":")
        elif r == "sparsity":
            ax.set_ylim(0, 1)
        else:
            ax.set_ylim(0, 1.08)
        ax.set_title(titles[r], fontsize=9, loc="left")
        ax.grid(True, axis="y", alpha=0.3)
        ax.tick_params(axis="y", labelsize=8)
    axes[-1].set_xticks(range(len(units)))
    axes[-1].set_xticklabels(units, rotation=45, ha="right", fontsize=8)
    axes[-1].set_xlabel("layer (execution order)")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.suptitle(f"per-layer policy of the exported models ({manifest.study.name})", fontsize=10,
                 y=1 - 0.12 / height, va="top")
    fig.legend(handles, labels, loc="upper center", ncol=legend_cols, fontsize=8, frameon=False,
               bbox_to_anchor=(0.5, 1 - 0.4 / height))
    fig.tight_layout(rect=(0, 0, 1, 1 - header_in / height))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_screening(manifest: Manifest, path: str | Path) -> Path:
    """The screened trials: how far the cost model was off for each, and the front chosen on measurement."""
    path = Path(path)
    screening = manifest.screening
    rows = screening.trials
    fig, (err, front) = plt.subplots(1, 2, figsize=(11, 4.6))
    colors = [MEMBER_COLOR if r.chosen else (MEASURED_COLOR if r.met_measured else "0.6") for r in rows]
    predicted = [r.predicted_vs_reference for r in rows]
    measured = [r.measured_vs_reference for r in rows]
    err.scatter(predicted, measured, c=colors, s=24, zorder=3)
    low, high = min(predicted + measured) * 0.95, max(predicted + measured) * 1.05
    err.plot([low, high], [low, high], color="0.4", lw=0.8, ls="-", label="measured = predicted")
    err.set_xlabel("predicted latency (x reference)")
    err.set_ylabel("measured latency (x reference), as built")
    front.scatter(measured, [r.accuracy_proxy for r in rows], c=colors, s=24, zorder=3)
    for r in rows:
        if r.chosen:
            front.annotate(f"#{r.trial}", (r.measured_vs_reference, r.accuracy_proxy), xytext=(3, 3),
                           textcoords="offset points", fontsize=7)
    front.set_xlabel("measured latency (x reference), as built")
    front.set_ylabel("search accuracy (proxy)")
    for limit in screening.limits_vs_reference:
        err.axhline(limit, ls="--", color="tab:purple", lw=1.0)
        err.axvline(limit, ls=":", color="tab:purple", lw=1.0)
        front.axvline(limit, ls="--", color="tab:purple", lw=1.0)
    handles = [Line2D([], [], marker="o", ls="", color=MEMBER_COLOR, label="chosen: on the measured front"),
               Line2D([], [], marker="o", ls="", color=MEASURED_COLOR, label="met the budget as measured"),
               Line2D([], [], marker="o", ls="", color="0.6", label="over the budget as measured"),
               Line2D([], [], ls="--", color="tab:purple", label="budget")]
    err.legend(handles=[*handles[1:], Line2D([], [], color="0.4", label="measured = predicted")], fontsize=7,
               loc="upper left")
    front.legend(handles=handles[:1], fontsize=7, loc="lower right")
    for ax in (err, front):
        ax.grid(True, alpha=0.3)
    fig.suptitle(f"screening before the final fine-tune ({manifest.study.name}): {len(rows)} trial(s) timed as "
                 "built beside the reference", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _member_label(member: ExportedMember) -> str:
    latency = member.measured.get("latency_ms")
    cost = f"{latency:.3g} ms measured" if latency is not None else f"{member.predicted['latency_ms']:.3g} ms predicted"
    return f"#{member.trial}: val {member.accuracy_val:.3f}, {cost}"
