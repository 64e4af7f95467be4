"""Which trials an export fine-tunes: the study's front chosen again on latency measured here, before any fine-tune.

The search prices candidates on the cost model: per-layer tables and a
calibration fitted at one time, on one model. Near a latency budget its errors
decide which members are in, and they are not small where precisions mix: on
a 2-core VM, a ResNet-20 search's most accurate members under ``latency<=0.35x``
(int8 but for a float stem, classifier and shortcut) measured 0.411x and 0.426x
of the reference against 0.341x predicted, and the export had fine-tuned them
for nothing. A candidate's latency does not depend on its weights, so timing it
as built (materialized from the reference, its int8 file calibrated on a few
training images) costs a second or two where its final fine-tune costs minutes.

So, before fine-tuning anything, the export times every trained trial priced
within :attr:`ScreenSettings.slack` of the latency budgets, interleaved with
the reference (:func:`~autocompress.export.measure.measure_latency`), and takes
the Pareto front on the search's accuracy and the *measured* latency: NetAdapt's
"empirical measurements" applied to the whole front, not to one step.
Screening needs the profile's device: on another machine (the machine check
says so) the measurement would choose members for the wrong hardware, and the
front as priced is kept unless the user asks for this machine's choice.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from autocompress.compress import materialize
from autocompress.export.calibration import export_deployed
from autocompress.export.manifest import ScreenedTrial, ScreeningInfo
from autocompress.export.measure import REFERENCE, measure_latency, timing_note
from autocompress.export.select import select_trials
from autocompress.runtime import is_registered
from autocompress.runtime.onnx_export import export_onnx
from autocompress.search.api import SearchSetup
from autocompress.search.budget import Budget
from autocompress.search.engine import pareto_front
from autocompress.search.study import TrialRecord

log = logging.getLogger(__name__)

LATENCY = "latency_ms"


@dataclass(frozen=True)
class ScreenSettings:
    """How candidates are screened: which are timed, and how long each."""

    #: trained trials priced up to this fraction over a latency budget are timed too: the cost model errs both ways
    slack: float = 0.25
    limit: int = 40  # at most this many trials, the most accurate first
    rounds: int = 15
    reps: int = 10
    sessions: int = 2
    passes: int = 3


def screen_pool(history: Sequence[TrialRecord], budgets: Sequence[Budget], prices: Mapping[int, Mapping[str, float]],
                *, slack: float, limit: int) -> list[TrialRecord]:
    """Trained trials (no repeats, no failures) priced within ``slack`` of every latency budget and meeting every
    other budget as priced (``prices``: trial number -> the cost model's costs now); the ``limit`` most accurate."""
    def within(record: TrialRecord) -> bool:
        costs = prices[record.number]
        return all(float(b.values(costs)) <= b.limit * (1 + (slack if b.cost == LATENCY else 0)) * (1 + 1e-9)
                   for b in budgets)

    trained = [t for t in history if t.evaluated and t.accuracy is not None and t.duplicate_of is None
               and not t.failed]
    return sorted([t for t in trained if within(t)], key=lambda t: (-t.accuracy, t.number))[:limit]


def limit_vs_reference(budget: Budget, reference_ms: float) -> float:
    """A latency budget's limit as a fraction of the reference's latency (what screening compares)."""
    return budget.relative * (1 - budget.margin) if budget.relative is not None else budget.limit / reference_ms


def screen_front(setup: SearchSetup, study, history: list[TrialRecord], *, screen: bool | None = None,
                 settings: ScreenSettings = ScreenSettings(), seed: int = 0,
                 progress: bool = True) -> tuple[list[TrialRecord], ScreeningInfo]:
    """The trials to export and how they were chosen.

    ``screen``: None times candidates where this machine is the profile's
    device, True also on another machine (this machine is the target), False never.
    Falls back to the feasible front as priced, saying why, when nothing can be
    or was timed, or when no timed trial met the budgets.
    """
    objective = list(setup.config.objective_costs)
    priced = select_trials(study, history, None, objective)  # refuses a study with no feasible trial
    latency = [b for b in setup.budgets if b.cost == LATENCY]

    def kept(note: str, **more) -> tuple[list[TrialRecord], ScreeningInfo]:
        log.info("screening: %s", note)
        numbers = [t.number for t in priced]
        return priced, ScreeningInfo(screened=False, note=note, priced_front=numbers, chosen=numbers, **more)

    profile, machine = setup.costs.profile, setup.machine
    if screen is False:
        return kept("not screened (turned off): the front as priced")
    if not latency:
        return kept("no latency budget: the front as priced (size and MACs are counted exactly)")
    if not is_registered(profile.runtime):
        return kept(f"the profile's runtime {profile.runtime!r} cannot run here: the front as priced")
    if screen is None and not machine.matches:
        return kept(f"this machine ({machine.here}) is not the profile's device ({machine.profile_device}): "
                    "latency measured here would choose members for other hardware, so the front as priced "
                    "(screen on this machine anyway with --screen)")
    # priced now, on the scale the budgets were resolved on (the study's stored costs may come from an earlier
    # calibration of the profile)
    prices = {t.number: setup.costs.predict(t.candidate).to_dict() for t in history if t.evaluated}
    pool = screen_pool(history, setup.budgets, prices, slack=settings.slack, limit=settings.limit)
    note = timing_note(sessions=settings.sessions, rounds=settings.rounds, reps=settings.reps, passes=settings.passes)
    reference_ms = float(setup.reference[LATENCY])
    limits = [limit_vs_reference(b, reference_ms) for b in latency]
    timings = _time_as_built(setup, pool, settings, seed=seed, progress=progress)
    if timings is None:
        return kept("the profile's runtime could not time the candidates here: the front as priced")
    speed = None if machine.matches else machine.speed_ratio
    rows, met = [], []
    for record in pool:
        measured = timings[_label(record)]
        ratio = float(measured["latency_vs_reference"])
        ok = all(_measured(b, measured, ratio * reference_ms, speed) <= b.limit * (1 + 1e-9) for b in latency)
        if ok:  # on the front's terms: latency as measured (on the profile's scale), the rest as priced
            met.append(replace(record, feasible=True, costs={**prices[record.number], LATENCY: ratio * reference_ms}))
        rows.append(ScreenedTrial(trial=record.number, accuracy_proxy=float(record.accuracy),
                                  predicted_vs_reference=float(prices[record.number][LATENCY]) / reference_ms,
                                  measured_vs_reference=ratio, met_measured=ok, chosen=False))
    front = pareto_front(met, objective)
    if not front:
        return kept(f"none of {len(pool)} timed trial(s) met the latency budget(s) as measured: the front as "
                    "priced", trials=rows, timing=note, slack=settings.slack, limits_vs_reference=limits)
    by_number = {t.number: t for t in pool}
    chosen = [by_number[t.number] for t in front]
    numbers = {t.number for t in chosen}
    rows = [row.model_copy(update={"chosen": row.trial in numbers}) for row in rows]
    dropped = sorted({t.number for t in priced} - numbers)
    added = sorted(numbers - {t.number for t in priced})
    summary = (f"{len(pool)} trained trial(s) priced within {settings.slack:.0%} of the latency budget(s) timed as "
               f"built beside the reference; {len(met)} met them as measured, {len(chosen)} on the measured front"
               + (f"; dropped from the priced front: trials {dropped}" if dropped else "")
               + (f"; added: trials {added}" if added else ""))
    log.info("screening: %s", summary)
    return chosen, ScreeningInfo(screened=True, note=summary, priced_front=[t.number for t in priced],
                                 chosen=[t.number for t in chosen], trials=rows, timing=note, slack=settings.slack,
                                 limits_vs_reference=limits)


def _measured(budget: Budget, measured: dict, on_profile_scale_ms: float, speed_ratio: float | None) -> float:
    """The figure a latency budget's limit is compared with: a relative one, the measured ratio times
    the reference's predicted latency (the scale the limit was resolved on); an absolute one, the measured
    milliseconds (rescaled to the profile's device where the machine check says this is not it)."""
    if budget.relative is not None:
        return on_profile_scale_ms
    value = float(measured[LATENCY])
    return value / speed_ratio if speed_ratio else value


def _label(record: TrialRecord) -> str:
    return f"trial-{record.number:04d}"


def _time_as_built(setup: SearchSetup, pool: list[TrialRecord], settings: ScreenSettings, *, seed: int,
                   progress: bool) -> dict[str, dict] | None:
    """Each pooled trial materialized from the reference (no fine-tune), exported as the export would deploy it
    (int8 where any layer is), and timed with the reference; None where nothing could be timed."""
    native = tuple(setup.data.input_shape)
    with tempfile.TemporaryDirectory(prefix="autocompress-screen-") as tmp:
        models = {REFERENCE: (setup.base_model.eval(), native,
                              export_onnx(setup.base_model.eval(), native, Path(tmp) / "reference.onnx", int8=False))}
        for i, record in enumerate(pool):
            h, w = setup.space.input_resolution(record.candidate)
            shape = (native[0], h, w)
            model = materialize(setup.base_model, record.candidate, setup.space).eval()
            path = export_deployed(setup, model, shape, Path(tmp) / f"{_label(record)}.onnx", seed)
            models[_label(record)] = (model, shape, path)
            log.info("screening: built %d of %d (trial %d)", i + 1, len(pool), record.number)
        timings, not_timed = measure_latency(models, setup.costs.profile, rounds=settings.rounds, reps=settings.reps,
                                             sessions=settings.sessions, passes=settings.passes, seed=seed,
                                             progress=progress)
    return None if not_timed else timings
