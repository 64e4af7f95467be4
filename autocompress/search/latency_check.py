"""Before a search: whole candidates near the latency budget timed here, and the budget aimed at what they measured.

The cost model prices a candidate from a per-layer table and a calibration
fitted at one time on one model. On a shared VM the whole-model scale moves
under it: a ResNet-20 profile calibrated 40 minutes before a ``latency<=0.35x``
search priced its phi -2 int8 anchor at 0.27x of the reference, and the export
measured 0.34x; another search's 30 trials, timed as built, came out at 1.17
to 1.25 times their predicted ratio, float and int8 alike. Searched on the
prices, every proposal near the budget was over it as measured, and the
search spent its trials where no member could be exported.

So a search with ``latency_check`` on first times a few candidates the cost
model puts just under the latency budget (built from the reference, no
training; latency does not depend on the weights), interleaved with the
reference, and aims its latency budgets at the limit divided by the median
measured/predicted ratio: what is priced at the aimed limit then measures
about at the true one. The check is stored on the study, so a resumed search
aims where it did (as the sensitivity table is). It needs the profile's
device: on another machine (the machine check says so) it is skipped.
"""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from autocompress.runtime import create_runtime, is_registered
from autocompress.runtime.timing import across_sessions, time_in_passes
from autocompress.runtime.validate import candidate_opener
from autocompress.search.budget import Budget
from autocompress.space import Candidate

log = logging.getLogger(__name__)

LATENCY = "latency_ms"
#: the study attribute holding the check (measured once, reused on resume)
LATENCY_CHECK_ATTR = "latency_check"
#: candidates are drawn priced between these fractions of the searched latency limit: where members end up
NEAR_BUDGET = (0.75, 1.0)
#: random candidates priced to find them: under a tight budget few land near it (ResNet-20 at 0.35x: about 1 in 3,500)
DRAWS = 200_000


@dataclass(frozen=True)
class LatencyCheck:
    """What the check timed and the scale the search's latency budgets are aimed with."""

    scale: float  # median of measured / predicted latency ratio (both against the reference); 1.0 when skipped
    note: str
    candidates: list[dict] = field(default_factory=list)  # candidate, predicted and measured vs the reference
    spread_pct: float | None = None  # 10th-90th percentile of the per-candidate scales, % of the median
    seconds: float = 0.0

    @property
    def applied(self) -> bool:
        return bool(self.candidates)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> LatencyCheck:
        return cls(**data)

    def aim(self, budgets: list[Budget]) -> list[Budget]:
        """``budgets`` with every latency limit divided by the scale (others unchanged)."""
        return [b.aimed(self.scale) if b.cost == LATENCY and self.applied else b for b in budgets]


def near_budget_candidates(costs, budgets: list[Budget], n: int, seed: int) -> list[Candidate]:
    """``n`` distinct candidates priced within :data:`NEAR_BUDGET` of every latency budget (and meeting the
    others), evenly spread over that range; half with quantized layers where the space has both kinds."""
    space = costs.space
    rows = space.encoding.random(DRAWS, rng=seed)
    predicted = costs.predict_batch(rows)
    ok = np.ones(len(rows), dtype=bool)
    for b in budgets:
        values = b.values(predicted)
        low = NEAR_BUDGET[0] if b.cost == LATENCY else 0.0
        ok &= (values >= low * b.limit) & (values <= b.limit)
    picked: list[Candidate] = []
    kinds = [predicted["any_quant"] > 0, predicted["any_quant"] == 0]
    available = [np.flatnonzero(ok & kind) for kind in kinds]
    shares = [n - n // 2, n // 2] if all(len(a) for a in available) else [n if len(a) else 0 for a in available]
    for indices, share in zip(available, shares, strict=True):
        order = indices[np.argsort(predicted[LATENCY][indices], kind="stable")]
        for i in order[np.unique(np.linspace(0, len(order) - 1, num=min(share, len(order))).round().astype(int))]:
            candidate = space.encoding.decode(rows[i])
            if candidate not in picked:
                picked.append(candidate)
    return picked


def check_latency(setup, budgets: list[Budget], *, n: int = 10, rounds: int = 15, reps: int = 10, sessions: int = 2,
                  passes: int = 3, seed: int = 0) -> LatencyCheck:
    """Time ``n`` candidates near the latency budget(s) beside the reference, in ``passes`` runs of fresh sessions
    (as the export times its members: one run of seconds can catch the machine in a slow spell for int8 kernels);
    skipped (scale 1) where the profile's device is not this machine, its runtime cannot run here, or no budget
    is on latency."""
    profile, machine = setup.costs.profile, setup.machine
    if not any(b.cost == LATENCY for b in budgets):
        return LatencyCheck(1.0, "skipped: no latency budget")
    if not is_registered(profile.runtime) or profile.kind != "measured":
        return LatencyCheck(1.0, f"skipped: a {profile.kind} profile on runtime {profile.runtime!r}, not timed here")
    if not machine.matches:
        return LatencyCheck(1.0, f"skipped: this machine ({machine.here}) is not the profile's device "
                                 f"({machine.profile_device}); the budget is aimed as priced")
    candidates = near_budget_candidates(setup.costs, budgets, n, seed)
    if not candidates:
        return LatencyCheck(1.0, "skipped: no candidate priced near the latency budget")
    start = time.perf_counter()
    runtime = create_runtime(profile.runtime, threads=profile.threads)
    space, model = setup.space, setup.base_model
    reference_ms = float(setup.reference[LATENCY])
    with tempfile.TemporaryDirectory(prefix="autocompress-latency-check-") as tmp:
        reference = candidate_opener(runtime, model, space, space.identity(), Path(tmp) / "reference.onnx", seed)()
        openers = {f"c{i}": candidate_opener(runtime, model, space, c, Path(tmp) / f"c{i}.onnx", seed)
                   for i, c in enumerate(candidates)}
        with runtime.measuring():
            runs = time_in_passes(openers, reference, passes=passes, sessions=sessions, rounds=rounds, reps=reps,
                                  seed=seed)
    rows, scales = [], []
    for i, candidate in enumerate(candidates):
        measured = across_sessions([run[f"c{i}#{k}"].ratio for run in runs for k in range(sessions)])
        predicted = setup.costs.predict(candidate).latency_ms / reference_ms
        rows.append({"candidate": candidate.to_dict(), "predicted_vs_reference": predicted,
                     "measured_vs_reference": measured})
        scales.append(measured / predicted)
    scale = float(np.median(scales))
    low, high = np.percentile(scales, [10, 90])
    check = LatencyCheck(scale=scale, candidates=rows, spread_pct=float(100 * (high - low) / scale),
                         seconds=time.perf_counter() - start,
                         note=(f"{len(rows)} candidates priced at {NEAR_BUDGET[0]:g}-{NEAR_BUDGET[1]:g} of the latency "
                               f"budget measured here at {scale:.3f}x their predicted ratio to the reference (10th-90th "
                               f"percentile {low:.3f}-{high:.3f}); latency budgets aimed at their limit / {scale:.3f}"))
    log.info("latency check: %s (%.0f s)", check.note, check.seconds)
    return check


def latency_check(setup, study, budgets: list[Budget], *, seed: int) -> LatencyCheck:
    """The study's check: read back when stored, else timed now and stored on the study."""
    stored = study.user_attrs.get(LATENCY_CHECK_ATTR)
    if stored is not None:
        return LatencyCheck.from_dict(stored)
    check = check_latency(setup, budgets, seed=seed)
    study.set_user_attr(LATENCY_CHECK_ATTR, check.to_dict())
    return check
