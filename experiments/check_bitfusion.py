"""How well does the BitFusion model rank and size layers against a BitFusion simulator's table?

APQ (Wang et al., CVPR 2020) published a per-layer latency/energy table of a
BitFusion simulator at weight/activation bit-widths 4, 6 and 8. This script
imports it (``import_table(..., "apq")``), prices every layer entry with the
default BitFusion model (``BitFusionModel()``, the parameters a
``profile analytic --model bitfusion`` profile ships with) at the same W/A, and
reports per W/A pair and overall: Spearman rank correlation and median
relative error |model - table| / table, for latency and for energy. It also
asks what a mixed-precision search needs most: for one layer, does the model
order the nine W/A pairs as the table does (median Spearman over layers)?

Raw errors use the model's own units. "Scaled" errors first multiply every
prediction of a quantity by ONE global factor, fitted by least squares in log
space (the geometric mean of table / model over all entries); it removes a
uniform offset, nothing layer-specific. The same is repeated with
``operand_rounding="power_of_two"`` (operands padded to 2/4/8 bits, as the
BitFusion hardware and simulator do; the default prices ceil(bits/2) bricks).
Pure arithmetic, runs in seconds:

    python experiments/check_bitfusion.py
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from autocompress.hardware import BitFusionModel, LayerSignature, import_table, layer_cost
from autocompress.hardware.profile import LayerEntry

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_TABLE = ROOT.parent / "shared" / "hw_luts" / "apq_bitfusion_b1.json"
DEFAULT_OUT = ROOT / "experiments" / "results" / "bitfusion_vs_apq.md"
QUANTITIES = ("latency", "energy")


def signature(entry: LayerEntry) -> LayerSignature:
    return LayerSignature("conv", entry.in_channels, entry.out_channels, (entry.kernel, entry.kernel),
                          (entry.stride, entry.stride), (entry.padding, entry.padding), entry.groups, entry.in_hw,
                          precision=f"w{entry.w_bits}a{entry.a_bits}")


def kind(entry: LayerEntry) -> str:
    if entry.groups > 1 and entry.groups == entry.in_channels:
        return "depthwise"
    return "pointwise (1x1)" if entry.kernel == 1 else f"conv {entry.kernel}x{entry.kernel}"


def median_rel_error(pred: np.ndarray, ref: np.ndarray) -> float:
    return float(np.median(np.abs(pred - ref) / ref))


def rho(pred: np.ndarray, ref: np.ndarray) -> float:
    """Spearman's rank correlation; nan where either side is constant (no ranking to compare)."""
    if len(ref) < 3 or np.ptp(pred) == 0 or np.ptp(ref) == 0:
        return float("nan")
    return float(spearmanr(pred, ref).statistic)


def compare(entries: list[LayerEntry], model: BitFusionModel) -> dict:
    """Predictions, global log-space scales and the statistics per group of entries."""
    costs = [layer_cost(model, signature(e)) for e in entries]
    pred = {"latency": np.array([c.latency_ms for c in costs]), "energy": np.array([c.energy_mj for c in costs])}
    ref = {"latency": np.array([e.latency_ms for e in entries]), "energy": np.array([e.energy_mj for e in entries])}
    scale = {q: float(np.exp(np.mean(np.log(ref[q]) - np.log(pred[q])))) for q in QUANTITIES}
    groups: dict[str, list[int]] = defaultdict(list)
    for i, e in enumerate(entries):
        groups[f"W{e.w_bits}A{e.a_bits}"].append(i)
        groups[f"all: {kind(e)}"].append(i)
        groups["all"].append(i)
    rows = {}
    for name, idx in groups.items():
        row = {"n": len(idx)}
        for q in QUANTITIES:
            p, r = pred[q][idx], ref[q][idx]
            row[q] = (rho(p, r), median_rel_error(p, r), median_rel_error(p * scale[q], r))
        rows[name] = row
    # one layer, nine W/A pairs: does the model order the bit-widths as the table does?
    by_layer: dict[tuple, list[int]] = defaultdict(list)
    for i, e in enumerate(entries):
        by_layer[(e.in_channels, e.out_channels, e.in_hw, e.kernel, e.stride, e.padding, e.groups)].append(i)
    full = [idx for idx in by_layer.values() if len(idx) == 9]
    within = {q: float(np.nanmedian([rho(pred[q][idx], ref[q][idx]) for idx in full])) for q in QUANTITIES}
    flat: dict[str, int] = defaultdict(int)  # layers whose predicted latency is the same at all nine pairs
    for idx in full:
        if np.ptp(pred["latency"][idx]) == 0:
            flat[kind(entries[idx[0]])] += 1
    return {"rows": rows, "scale": scale, "within": within, "layers": len(full), "flat": dict(flat),
            "kinds": {k: sum(kind(entries[idx[0]]) == k for idx in full) for k in sorted({kind(e) for e in entries})},
            "bounds": {b: sum(c.bound == b for c in costs) for b in ("compute", "dram", "input_buffer")},
            "table_energy_vs_latency": rho(ref["energy"], ref["latency"]),
            "pointwise_compute": sum(c.bound == "compute" for c, e in zip(costs, entries, strict=True)
                                     if kind(e) == "pointwise (1x1)")}


def order(name: str) -> tuple:
    return (name.startswith("all"), name != "all", name)


def table(result: dict) -> list[str]:
    lines = ["| W/A | n | latency Spearman | latency median err (raw) | latency median err (scaled) "
             "| energy Spearman | energy median err (raw) | energy median err (scaled) |",
             "|---|---|---|---|---|---|---|---|"]
    for name in sorted(result["rows"], key=order):
        row = result["rows"][name]
        cells = [f"{s:.3f} | {raw:.0%} | {scaled:.0%}" for s, raw, scaled in (row[q] for q in QUANTITIES)]
        lines.append(f"| {name} | {row['n']} | {cells[0]} | {cells[1]} |")
    return lines


def summary(result: dict) -> list[str]:
    s, w = result["scale"], result["within"]
    return [f"Global scales (table / model, geometric mean): latency x{s['latency']:.3g}, energy x{s['energy']:.3g}.",
            f"Per layer, ordering its nine W/A pairs ({result['layers']} layers with all nine): median Spearman "
            f"latency {w['latency']:.3f}, energy {w['energy']:.3f}; layers by kind: "
            + ", ".join(f"{k} {n}" for k, n in result["kinds"].items())
            + "; the model gives the same latency at all nine pairs for: "
            + (", ".join(f"{k} {n}" for k, n in result["flat"].items()) or "none")
            + " (left out of the median: no ranking).",
            "What bounds each entry in the model: " + ", ".join(f"{b} {n}" for b, n in result["bounds"].items()) + "."]


def notes(result: dict, entries: list[LayerEntry]) -> list[str]:
    """What the figures say, with the numbers that back it."""
    one = {(e.w_bits, e.a_bits): e.latency_ms for e in entries
           if (e.in_channels, e.out_channels, e.in_hw[0], e.kernel, e.groups) == (96, 456, 14, 1, 1)}
    pointwise = result["rows"]["all: pointwise (1x1)"]
    return [
        "## Reading it",
        "",
        f"* Scale: the model is about {result['scale']['latency']:.2g}x faster and spends about "
        f"{result['scale']['energy']:.2g}x less energy than the simulator (the global scales above). Its "
        "parameters are the published configuration and 45 nm estimates, not a fit. BitFusion's public simulator "
        "(github.com/hsharma35/bitfusion) searches loop tilings, pads channels to the array and moves 32-bit "
        "outputs; the model does none of that.",
        f"* Energy: the table's own energy follows its own latency (Spearman "
        f"{result['table_energy_vs_latency']:.3f} over all entries), as if time-proportional terms (the whole "
        "array's energy per cycle, leakage) dominated it. The model prices energy per brick used and per byte "
        "moved, so across layers of one W/A pair it ranks energy less well than latency; within a layer it orders "
        f"the bit-widths with a median Spearman of {result['within']['energy']:.3f} for energy and "
        f"{result['within']['latency']:.3f} for latency.",
        f"* Pointwise (1x1) layers rank worst in latency (Spearman {pointwise['latency'][0]:.3f}): the model "
        f"calls {result['pointwise_compute']} of {pointwise['n']} compute-bound, while the table barely moves with bits for them (e.g. "
        f"(96, 456, 14, 1, 1, 0, 1): {one.get((4, 4), float('nan')):.4f} ms at W4A4, "
        f"{one.get((8, 8), float('nan')):.4f} ms at W8A8), as if its memory traffic set their time.",
        "* For a mixed-precision search the per-layer ordering of bit-widths is what matters: median Spearman "
        f"{result['within']['latency']:.3f} (latency) and {result['within']['energy']:.3f} (energy) within a layer, "
        f"against {result['rows']['all']['latency'][0]:.3f} and {result['rows']['all']['energy'][0]:.3f} across "
        "every entry. Use the absolute figures as a model's, not a chip's.",
        "",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--table", type=Path, default=DEFAULT_TABLE, help="the APQ BitFusion table (JSON)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="markdown report to write")
    args = parser.parse_args(argv)

    profile = import_table(args.table, "apq")
    entries = profile.imported.layers
    default = compare(entries, BitFusionModel())
    padded = compare(entries, BitFusionModel(operand_rounding="power_of_two"))
    command = "python experiments/check_bitfusion.py" + "".join(f" {a}" for a in (argv or sys.argv[1:]))
    lines = [
        "# BitFusion model vs the APQ BitFusion table",
        "",
        f"Command: `{command}`",
        "",
        f"Table: `{profile.imported.source_file}` (sha256 {profile.imported.sha256[:16]}..., "
        f"{profile.imported.obtained}: figures of a BitFusion simulator, not of a chip), {len(entries)} layer entries "
        f"at W/A in {{4, 6, 8}}; its `head` and `tail` parts are not layers and are left out. Model: "
        "`BitFusionModel()` defaults (16x32 fusion units x 16 bricks, 500 MHz, 12 GB/s DRAM; "
        "see `autocompress/hardware/profile.py`), no parameter fitted to the table.",
        "",
        "Errors are median |model - table| / table. *Raw*: the model's own ms and mJ. *Scaled*: every prediction "
        "of that quantity times one global factor fitted by least squares in log space over all entries "
        "(the table's units and overheads the model does not have; it cannot change a rank, and where the kinds of "
        "layer are off by different factors it can leave one kind worse than raw).",
        "",
        "## Default model (`operand_rounding: bricks`, ceil(w/2) x ceil(a/2) brick-cycles per MAC)",
        "",
        *table(default),
        "",
        *summary(default),
        "",
        "## Operands padded to 2/4/8 bits (`operand_rounding: power_of_two`, as BitFusion's spatial fusion)",
        "",
        *table(padded),
        "",
        *summary(padded),
        "",
        *notes(default, entries),
    ]
    text = "\n".join(lines)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
