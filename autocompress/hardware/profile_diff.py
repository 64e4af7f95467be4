"""How two profiles differ, per operator type, precision and layer size: what moving to a new device changes.

A single speed ratio hides what matters to a search: a device that runs 1x1
convolutions 2x faster but depthwise ones at the same speed moves the best
candidates to other layers. ``diff_profiles(a, b)`` compares the latency of
every signature both tables hold, as ``b / a``, grouped by operator type
(the predictor's groups: conv1x1, conv_kxk, depthwise, linear), precision
and size (MACs per decade), and reports how many signatures only one of them
has. ``autocompress profile diff A B`` prints the table and draws the plot.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

from autocompress.hardware.predictor import group_key
from autocompress.hardware.profile import HardwareProfile
from autocompress.hardware.signature import LayerSignature


@dataclass(frozen=True)
class RatioRow:
    """Latency ratios b / a of one group of shared signatures."""

    group: str  # "conv1x1/int8"
    size: str  # "1e4-1e5 MACs", or "all"
    n: int
    median: float
    p10: float
    p90: float


@dataclass
class ProfileDiff:
    a: str
    b: str
    shared: int
    only_a: int
    only_b: int
    overall: RatioRow | None
    rows: list[RatioRow] = field(default_factory=list)
    #: per shared signature: (group, MACs, latency in a, latency in b), for the plot
    points: list[tuple[str, int, float, float]] = field(default_factory=list)

    def table(self) -> str:
        """The ratios as a plain-text table, one line per group and size."""
        lines = [f"{self.b} / {self.a}: latency ratio of the {self.shared} signatures both tables hold "
                 f"({self.only_a} only in {self.a}, {self.only_b} only in {self.b})"]
        if self.overall is None:
            return lines[0] + "\n  nothing to compare: the tables share no signature"
        lines.append(f"  {'group':18s} {'size':18s} {'n':>5s} {'median':>7s} {'p10':>7s} {'p90':>7s}")
        for row in [self.overall, *self.rows]:
            lines.append(f"  {row.group:18s} {row.size:18s} {row.n:5d} {row.median:7.3f} {row.p10:7.3f} "
                         f"{row.p90:7.3f}")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        out = asdict(self)
        out.pop("points")
        return out


def _size(macs: int) -> str:
    decade = int(math.floor(math.log10(max(macs, 1))))
    return f"1e{decade}-1e{decade + 1} MACs"


def _row(group: str, size: str, ratios: list[float]) -> RatioRow:
    r = np.asarray(ratios)
    return RatioRow(group, size, len(r), float(np.median(r)), float(np.percentile(r, 10)),
                    float(np.percentile(r, 90)))


def diff_profiles(a: HardwareProfile, b: HardwareProfile) -> ProfileDiff:
    """Latency of every signature in both tables, as ratios ``b / a`` grouped by operator type, precision and size."""
    shared = sorted(set(a.entries) & set(b.entries))
    points = []
    for key in shared:
        la, lb = a.entries[key].latency_ms, b.entries[key].latency_ms
        if la > 0 and lb > 0:
            sig = LayerSignature.parse(key)
            points.append((group_key(sig), sig.macs, la, lb))
    diff = ProfileDiff(a=a.name, b=b.name, shared=len(shared), only_a=len(set(a.entries) - set(b.entries)),
                       only_b=len(set(b.entries) - set(a.entries)), overall=None, points=points)
    if not points:
        return diff
    diff.overall = _row("all", "all", [lb / la for _, _, la, lb in points])
    groups: dict[tuple[str, str], list[float]] = {}
    for group, macs, la, lb in points:
        groups.setdefault((group, "all"), []).append(lb / la)
        groups.setdefault((group, _size(macs)), []).append(lb / la)
    order = sorted(groups, key=lambda k: (k[0], k[1] != "all", k[1]))
    diff.rows = [_row(group, size, groups[(group, size)]) for group, size in order]
    return diff


def plot_diff(diff: ProfileDiff, path) -> None:
    """Latency in ``b`` against latency in ``a`` per shared signature (log-log, one colour per group), with the
    lines of equal and of the median ratio: which layers moving to ``b`` makes cheaper or dearer."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 5))
    for group in sorted({p[0] for p in diff.points}):
        mine = [p for p in diff.points if p[0] == group]
        ax.scatter([p[2] for p in mine], [p[3] for p in mine], s=6, alpha=0.5, label=f"{group} ({len(mine)})")
    if diff.points:
        lo = min(min(p[2], p[3]) for p in diff.points)
        hi = max(max(p[2], p[3]) for p in diff.points)
        ax.plot([lo, hi], [lo, hi], color="black", lw=1, label="equal")
        if diff.overall is not None:
            m = diff.overall.median
            ax.plot([lo, hi], [lo * m, hi * m], color="black", lw=1, ls="--", label=f"median ratio {m:.2f}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(f"latency in {diff.a} (ms)")
    ax.set_ylabel(f"latency in {diff.b} (ms)")
    ax.set_title(f"{diff.b} against {diff.a}: {diff.shared} shared layer signatures", fontsize=9)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, markerscale=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
