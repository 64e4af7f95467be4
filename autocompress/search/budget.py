"""Budgets: hard limits on predicted cost, absolute or relative to the uncompressed model.

``latency_ms<=2.5``, ``energy_mj<=1``, ``size_kb<=200``, ``flops<=2e7``,
``bitops<=1e9``, or relative: ``latency<=0.5x`` (half the reference's latency on
the same profile). Every candidate is checked against every budget with the
cost model before any training, so no fine-tuning is spent on one that breaks
a budget.

A search may aim under a measured budget by a margin (``budget_margin``): a
latency or energy limit is then searched at ``limit x (1 - margin)``, so that
members predicted at the edge still meet the true limit when re-measured with
a few percent of timing noise. The export checks the true limit.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

import numpy as np

#: budget metric -> (cost-model array, factor from that array's unit to the budget's unit)
METRICS = {
    "latency_ms": ("latency_ms", 1.0),
    "energy_mj": ("energy_mj", 1.0),
    "size_bytes": ("size_bytes", 1.0),
    "size_kb": ("size_bytes", 1 / 1024),
    "size_mb": ("size_bytes", 1 / 1024**2),
    "macs": ("macs", 1.0),
    "flops": ("macs", 2.0),  # one multiply-accumulate = two floating-point operations
    "bitops": ("bitops", 1.0),
}
#: names allowed with a relative limit ("latency<=0.5x")
RELATIVE = {"latency": "latency_ms", "energy": "energy_mj", "size": "size_bytes", "macs": "macs",
            "flops": "flops", "bitops": "bitops"}
#: metrics a re-measurement can miss by noise, so a search margin tightens them; counted ones are exact
MEASURED = {"latency_ms", "energy_mj"}
_SYNTAX = re.compile(r"^\s*(?P<metric>[a-z_]+)\s*<=\s*(?P<value>[0-9.eE+-]+)\s*(?P<x>x?)\s*$")


class BudgetError(ValueError):
    """A budget that cannot be parsed, or that no candidate of the space can meet."""


@dataclass(frozen=True)
class Budget:
    metric: str  # a key of METRICS
    limit: float  # in the metric's unit; for relative budgets, after resolving against the reference
    text: str  # as the user wrote it
    relative: float | None = None  # the factor of a relative budget
    margin: float = 0.0  # searched at limit, which is the true limit x (1 - margin); see ``with_margin``
    scale: float = 1.0  # and divided by this measured/predicted latency scale; see ``aimed``

    @property
    def cost(self) -> str:
        """The cost-model array this budget reads (``size_kb`` reads ``size_bytes``)."""
        return METRICS[self.metric][0]

    def values(self, costs: Mapping[str, np.ndarray]) -> np.ndarray:
        return np.asarray(costs[self.cost]) * METRICS[self.metric][1]

    def violation(self, costs: Mapping[str, np.ndarray]) -> np.ndarray:
        """> 0 by how much (relative to the limit) a candidate is over; <= 0 when it fits."""
        return self.values(costs) / self.limit - 1.0

    def with_margin(self, margin: float) -> Budget:
        """This budget as a search aims at it: a measured metric's limit lowered by ``margin`` (a fraction)."""
        if not 0 <= margin < 1:
            raise BudgetError(f"budget margin: expected a fraction in [0, 1), got {margin!r}")
        if self.metric not in MEASURED or margin == 0:
            return self
        return replace(self, limit=self.limit * (1 - margin), margin=margin)

    def aimed(self, scale: float) -> Budget:
        """This budget aimed at ``limit / scale``: whole candidates timed here ran ``scale`` x their predicted
        latency (:mod:`autocompress.search.latency_check`), so what is priced there measures about at the limit."""
        if not 0 < scale < math.inf:
            raise BudgetError(f"budget {self.text!r}: a latency scale must be positive and finite, got {scale!r}")
        return replace(self, limit=self.limit / scale, scale=self.scale * scale)

    def __str__(self) -> str:
        if self.margin or self.scale != 1.0:
            true = self.limit * self.scale / (1 - self.margin)
            how = [f"{self.margin:.3g} under it"] if self.margin else []
            if self.scale != 1.0:
                how.append(f"/ {self.scale:.3f}, the ratio of measured to predicted latency here")
            return f"{self.text} (= {self.metric} <= {true:.4g}, searched at {self.limit:.4g}: {', '.join(how)})"
        if self.relative is not None:
            return f"{self.text} (= {self.metric} <= {self.limit:.4g})"
        return self.text


def parse_budget(text: str, reference: Mapping[str, float] | None = None) -> Budget:
    """One budget; ``reference`` (costs of the uncompressed model) resolves relative ones."""
    m = _SYNTAX.match(text)
    if not m:
        raise BudgetError(f"budget {text!r}: expected METRIC<=NUMBER (e.g. latency_ms<=2.5) "
                          f"or NAME<=FACTORx (e.g. latency<=0.5x); metrics: {sorted(METRICS)}")
    metric, x = m["metric"], bool(m["x"])
    try:
        value = float(m["value"])
    except ValueError:
        raise BudgetError(f"budget {text!r}: {m['value']!r} is not a number") from None
    if not 0 < value < math.inf:
        raise BudgetError(f"budget {text!r}: the limit must be positive and finite")
    if x:
        if metric not in RELATIVE and metric not in METRICS:
            raise BudgetError(f"budget {text!r}: unknown metric {metric!r}; relative budgets take {sorted(RELATIVE)}")
        metric = RELATIVE.get(metric, metric)
        if reference is None:
            raise BudgetError(f"budget {text!r}: a relative budget needs the uncompressed model's costs")
        array, factor = METRICS[metric]
        base = reference.get(array)
        if base is None:  # a profile without energy figures
            raise BudgetError(f"budget {text!r}: the uncompressed model has no {array} figure on this profile")
        limit = value * float(base) * factor
        if not 0 < limit < math.inf:  # a calibration that went below zero, or a factor too large
            raise BudgetError(f"budget {text!r}: the uncompressed model's {array} on this profile is {base!r}, "
                              f"so a limit relative to it would be {limit:.4g}; give an absolute limit instead")
        return Budget(metric, limit, text.strip(), relative=value)
    if metric not in METRICS:
        hint = f"; did you mean {RELATIVE[metric]}?" if metric in RELATIVE else ""
        raise BudgetError(f"budget {text!r}: unknown metric {metric!r}; expected one of {sorted(METRICS)}{hint}")
    return Budget(metric, value, text.strip())


def parse_budgets(texts: Iterable[str], reference: Mapping[str, float] | None = None) -> list[Budget]:
    """Budgets from texts, each one or several separated by commas; a single text may be given bare."""
    budgets = []
    if isinstance(texts, str):  # not its characters, one by one
        texts = [texts]
    for text in texts:
        for part in str(text).split(","):
            if part.strip():
                budgets.append(parse_budget(part, reference))
    return budgets


def with_margins(budgets: Iterable[Budget], margin: float) -> list[Budget]:
    """The budgets a search aims at: each measured one ``margin`` under its limit (``Budget.with_margin``)."""
    return [b.with_margin(margin) for b in budgets]


def feasible(budgets: Iterable[Budget], costs: Mapping[str, np.ndarray]) -> np.ndarray:
    """Which candidates meet every budget (vectorized over the cost arrays)."""
    ok = None
    for budget in budgets:
        fits = budget.violation(costs) <= 0
        ok = fits if ok is None else ok & fits
    if ok is None:
        return np.ones(len(next(iter(costs.values()))), dtype=bool)
    return ok


def check_reachable(budgets: list[Budget], costs: Mapping[str, np.ndarray]) -> None:
    """Raise a clear error when none of the priced candidates meets the budgets.

    ``costs`` should include the space's cheapest corners (e.g. the most
    compressed uniform candidate) beside many random ones.
    """
    ok = feasible(budgets, costs)
    if ok.any():
        return
    lines = []
    for budget in budgets:
        values = budget.values(costs)
        lines.append(f"{budget}: cheapest reachable {values.min():.4g}")
    raise BudgetError("no candidate of the space meets the budget(s): " + "; ".join(lines) +
                      f" (over {len(ok)} priced candidates, including the most compressed ones)")
