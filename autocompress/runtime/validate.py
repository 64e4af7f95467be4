"""Fidelity of a profile: calibrate on measured whole models, then test on held-out ones.

Random candidates of each model's space are materialized, exported for the
profile's runtime and timed end to end, all interleaved in one process. One set
fits the calibration (per kernel precision); a disjoint set is predicted and
compared with its measurement: Spearman rank correlation, median and 90th
percentile absolute % error, share within +-10%, beside the noise floor.

A candidate's calls take turns, in short blocks, with calls of its model's
uncompressed *reference* (see :mod:`autocompress.runtime.timing`): a
candidate's latency is its median ratio to the reference times the
reference's median over the run, so the machine's drift from second to
second cancels and every candidate is
priced at the run's typical speed. Every model is timed as two independent
sets of sessions: its latency comes from both, and the noise floor is how far
the two sets' own figures fall apart (the noise of a measurement half as long,
so an upper bound on the noise of the figure compared). The profile's anchor
signatures are timed in the same run: their ratio to the table says how far
the machine's speed has moved since the table was measured.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats
from scipy.optimize import lsq_linear
from torch import nn

from autocompress.compress import materialize
from autocompress.hardware.cost_model import FLOAT_PRECISION, CostModel
from autocompress.hardware.profile import (
    CALIBRATION_FEATURES,
    Calibration,
    HardwareProfile,
    ProfileError,
    ValidationResult,
    calibration_features,
    calibration_key,
    in_context,
    model_keys,
)
from autocompress.hardware.signature import LayerSignature
from autocompress.runtime.base import Opener, Runtime, create_runtime
from autocompress.runtime.timing import (
    Timing,
    across_sessions,
    merge_rounds,
    open_sessions,
    time_callables,
)
from autocompress.space import Candidate, SearchSpace

log = logging.getLogger(__name__)
#: random candidates of the whole joint space: every layer float, at least one int8 (about half float), and all
#: int8 but one to three float units, where a latency search under a tight budget ends up (its float stem,
#: classifier or shortcuts between int8 layers: few float<->int8 boundaries, a region the half-float ones miss)
SUBSETS = ("fp32-only", "int8-containing", "near-int8")
#: how many units a near-int8 candidate keeps float
NEAR_INT8_FLOAT_UNITS = (1, 2, 3)
#: third subset of a profile with int8 kernels: every uniform w8a8 candidate (each keep, each compound scaling),
#: the models with no float<->int8 boundary inside, and the search's anchors. Random int8-containing candidates
#: are about half float, so a calibration fitted on them alone priced all-int8 ResNet-56s 25% too high: half of
#: these calibrate, half are held out
UNIFORM_INT8 = "uniform-int8"
#: the uncompressed model, calibrated on (never held out) whenever a model is calibrated
REFERENCE = "reference"
HALVES = ("a", "b")  # every model is timed as two independent session sets: their disagreement is the noise floor
#: sessions per chunk: a round visits the chunks of every model in one random order, so each model is timed across
#: the whole round rather than in a minute of its own (on a shared VM the machine's speed moves by 10-30% within
#: minutes, and a model timed in a fast minute came out fast as a whole: its reference's median scales every figure)
CHUNK = 24


@dataclass
class Suite:
    """One model and its space, as validation draws candidates from it."""

    name: str
    model: nn.Module
    space: SearchSpace


@dataclass
class Sample:
    suite: str
    role: str  # "calibrate" | "validate" | "reference" (a held-out model's uncompressed one: neither, but what
    # its relative fractions divide by)
    subset: str
    candidate: Candidate
    features: np.ndarray  # CALIBRATION_FEATURES, in order
    measured_ms: float = float("nan")  # median over every session of both sets (ratio to the reference x its ms)
    halves_ms: tuple[float, float] = (float("nan"), float("nan"))  # each set's own median: the noise floor


def draw_candidates(space: SearchSpace, n: int, subset: str, rng: np.random.Generator) -> list[Candidate]:
    """Random points of the whole joint space, with the bit-widths of ``subset`` (one of :data:`SUBSETS`)."""
    out: list[Candidate] = []
    for _ in range(20 * n):
        if len(out) == n:
            break
        data = space.sample(rng).to_dict()
        units = data["layers"]
        if subset == "fp32-only":
            for dims in units.values():
                dims.update(w_bits=32, a_bits=32)
        elif subset == "near-int8":
            quantizable = [u for u in units if 8 in space.choices[u].get("w_bits", ())
                           and 8 in space.choices[u].get("a_bits", ())]
            if len(quantizable) < 2:
                continue
            floats = set(rng.choice(quantizable, size=min(len(quantizable) - 1,
                                                          int(rng.choice(NEAR_INT8_FLOAT_UNITS))), replace=False))
            for unit in quantizable:
                bits = 32 if unit in floats else 8
                units[unit].update(w_bits=bits, a_bits=bits)
        elif not any(d["w_bits"] <= 8 and d["a_bits"] <= 8 for d in units.values()):
            continue
        candidate = Candidate.from_dict(data)
        if candidate not in out:
            out.append(candidate)
    return out


def uniform_int8_candidates(space: SearchSpace, n: int) -> list[Candidate]:
    """Up to ``n`` distinct all-int8 uniform candidates: every scaling at each keep, widest first (every scaling
    joins before a narrower keep does: a table's error at a scaling is what calibration must see)."""
    keeps = space.choice_values("keep")[::-1] or [1.0]
    scalings = space.uniform_scalings()
    out: list[Candidate] = []
    for keep in keeps:
        for scaling in scalings:
            candidate = space.uniform(keep=keep, w_bits=8, a_bits=8, **scaling)
            if candidate not in out and len(out) < n:
                out.append(candidate)
    return out


def candidate_opener(runtime: Runtime, model: nn.Module, space: SearchSpace, candidate: Candidate, path: Path,
                     seed: int) -> Opener:
    """Each call of the result opens a fresh timed session of ``candidate`` built from ``model``.

    At the candidate's input resolution; ``path`` is where the runtime keeps the
    model's artifact (ONNX Runtime: the exported file). Time the sessions inside
    ``runtime.measuring()``, which sets its threads.
    """
    shape = (space.graph.input_shape[0], *space.input_resolution(candidate))
    return runtime.model_opener(materialize(model, candidate, space).eval(), shape, path=path, seed=seed)


#: calibration forms, simplest first, as the features each one weighs (plus an offset); a feature that
#: is 0 for every calibration model (any_quant on a float-only runtime) is left out of the fit
CALIBRATION_FORMS = {
    "sums": ("sum_float_ms", "sum_quant_ms", "any_quant"),
    "sums+boundaries": ("sum_float_ms", "sum_quant_ms", "any_quant", "boundaries", "boundary_mact"),
    "sums+layers": ("sum_float_ms", "sum_quant_ms", "any_quant", "layers_float", "layers_quant"),
    "sums+activations+boundaries": ("sum_float_ms", "sum_quant_ms", "any_quant", "mact_float", "mact_quant",
                                    "boundaries", "boundary_mact"),
    "sums+layers+activations+boundaries": CALIBRATION_FEATURES,
}


def _bounds(names: Sequence[str]) -> tuple[list[float], list[float]]:
    """Physically sensible signs: layer sums and boundary terms add time; layer counts and the layers' own
    activations may remove it (a layer timed alone pays per-call overhead, and per activation the layout
    reorders or quantize/dequantize of its one-layer model, that a whole graph runs once or not at all)."""
    low = [0.0 if not name.startswith(("layers", "mact")) else -np.inf for name in names] + [-np.inf]
    return low, [np.inf] * (len(names) + 1)


def fit_calibration(features: np.ndarray, measured: np.ndarray, models: Sequence[str]) -> Calibration:
    """Least squares of measured latency on the layer sums and, where the data supports it, more terms.

    ``features`` has one column per CALIBRATION_FEATURES entry. Each form is
    scored by leave-one-out mean absolute % error (the tail counts: the goal is every
    model within +-10%) and the best one kept, so a small calibration set never buys
    an over-fitted formula.
    """
    n = len(measured)
    if n < 4:
        raise ProfileError(f"need at least 4 calibration models, got {n}")
    best: tuple[float, str, tuple[str, ...], np.ndarray] | None = None
    for form, names in CALIBRATION_FORMS.items():
        names = tuple(f for f in names if np.any(features[:, CALIBRATION_FEATURES.index(f)]))
        columns = [CALIBRATION_FEATURES.index(f) for f in names]
        design = np.column_stack([features[:, columns], np.ones(n)])
        if n < 3 * design.shape[1]:
            continue
        bounds = _bounds(names)
        errors = []
        for i in range(n):
            keep = np.arange(n) != i
            coef = lsq_linear(design[keep], measured[keep], bounds=bounds).x
            errors.append(abs(design[i] @ coef - measured[i]) / measured[i])
        coef = lsq_linear(design, measured, bounds=bounds).x
        score = float(np.mean(errors))
        # a richer form must earn its terms: 10% lower leave-one-out error than the simpler one
        if best is None or score < 0.9 * best[0]:
            best = (score, form, names, coef)
    if best is None:
        raise ProfileError(f"too few calibration models ({n}) for even the simplest calibration form")
    _, form, names, coef = best
    return Calibration(coefficients={f: float(c) for f, c in zip(names, coef[:-1], strict=True)},
                       offset_ms=float(coef[-1]), form=form, fitted_on=n, models=sorted(set(models)))


def _spearman(predicted: np.ndarray, measured: np.ndarray) -> float:
    """Rank correlation; 0 for a constant prediction (a calibration that ignores the table ranks nothing)."""
    if len(measured) <= 2:
        return float("nan")
    if np.ptp(predicted) == 0:
        return 0.0
    return float(stats.spearmanr(predicted, measured).statistic)


def fidelity(predicted: np.ndarray, measured: np.ndarray, halves: np.ndarray) -> dict[str, float]:
    """``halves``: (n, 2) medians of each model's two session sets, for the noise floor."""
    errors = np.abs(predicted - measured) / measured * 100
    return {
        "n_candidates": int(len(measured)),
        "spearman": _spearman(predicted, measured),
        "median_abs_pct_error": float(np.median(errors)),
        "p90_abs_pct_error": float(np.percentile(errors, 90)),
        "within_10pct": float(np.mean(errors <= 10)),
        "noise_floor_pct": noise_floor_pct(measured, halves),
    }


def noise_floor_pct(measured: Sequence[float], halves: Sequence[tuple[float, float]]) -> float:
    """How far each candidate's two session sets fall apart, % of its latency: the median over candidates."""
    halves = np.asarray(halves, dtype=float)
    return float(np.median(np.abs(halves[:, 0] - halves[:, 1]) / np.asarray(measured, dtype=float) * 100))


def validate_profile(
    profile: HardwareProfile,
    suites: Sequence[Suite],
    *,
    n_validate: int = 50,
    n_calibrate: int = 20,
    seed: int = 0,
    rounds: int = 3,
    reps: int = 10,
    warmup: int = 3,
    sessions: int = 3,
    command: str = "",
    workdir: str | Path | None = None,
    progress: Callable[[int, int], None] | None = None,
    hold_out: Sequence[str] = (),
    noise_bound_pct: float = 0.0,
    max_rounds: int | None = None,
    before_round: Callable[[int], object] | None = None,
) -> tuple[HardwareProfile, dict[str, Any]]:
    """Fit calibrations on ``n_calibrate`` and evaluate on ``n_validate`` candidates per model.

    Both counts are split evenly between the :data:`SUBSETS` (only fp32-only where the
    profile has no int8 kernels); with int8 kernels, up to
    ``n_validate // 2 + n_calibrate // 2`` uniform all-int8 candidates come besides
    (subset ``uniform-int8``), alternately calibrated on (the widest first) and held out. ``n_calibrate=0`` fits
    nothing: the models are priced with the profile's stored calibration
    (held-out models, see :func:`score_samples`). With ``n_calibrate > 0`` each
    calibrated model's uncompressed reference is one more calibration sample (subset
    ``reference``): it is timed beside every call anyway, and relative budgets
    divide by its prediction; a held-out model's is kept (role ``reference``) for the
    candidates' fractions of it. Returns the updated profile
    (calibrations and validation results stored) and a report with every sample.
    A model's latency is its median ratio to its reference over 2 x
    ``sessions`` sessions, times the reference's median latency in the run.

    ``hold_out``: models timed in the same run but never calibrated on; they are priced
    with the pooled calibration this run fits on the others, as a search on a model the
    profile was never calibrated on would be. Timed in the same run, a calibration and the
    models it is checked on see the same machine: on a shared VM the anchors ran 23% slower
    in a held-out run started three minutes after the calibration's, which came out as 16-22%
    of error on every held-out model. For the same reason every round visits every model, and each model's
    sessions are shuffled into chunks (:data:`CHUNK`) that a round visits in one random order with every other
    model's, so no model is timed in a minute of its own, and a candidate's sessions fall in different minutes.

    ``noise_bound_pct``: after ``rounds`` rounds, every model whose noise floor (the median disagreement of its
    two session sets, as :func:`fidelity` reports it) is still above this bound gets another round, the chunks
    of the models above it visited in a fresh order, until each is under it or has had ``max_rounds`` (default: twice
    ``rounds``). A validation is read against +-10%: on a shared VM a noisy spell put one model's noise floor at
    6-10%, where its figure says more about the spell than about the profile. 0: a fixed ``rounds``. The report
    says how many rounds each model got and whether it reached the bound.

    ``before_round``: called with the number of rounds done before every round after the first, to wait out a
    slow spell that began during the timing (:class:`~autocompress.runtime.machine_check.Settler`; the caller
    settles the machine before the first).
    """
    unknown = sorted(set(hold_out) - {suite.name for suite in suites})
    if unknown:
        raise ProfileError(f"hold_out: {unknown} are not among the validated models "
                           f"{[suite.name for suite in suites]}")
    if hold_out and (not n_calibrate or len(set(hold_out)) == len(suites)):
        raise ProfileError("hold_out: needs calibration candidates (n_calibrate > 0) on at least one model that is "
                           "not held out, to fit the calibration the held-out models are priced with")
    max_rounds = 2 * rounds if max_rounds is None else max_rounds
    if rounds < 1 or noise_bound_pct < 0 or max_rounds < rounds:
        raise ProfileError(f"rounds {rounds}, noise bound {noise_bound_pct}%, max rounds {max_rounds}: expected at "
                           "least 1 round, a bound >= 0 (0: none) and max rounds >= rounds")
    runtime = create_runtime(profile.runtime, threads=profile.threads)  # an unknown runtime fails before any export
    rng = np.random.default_rng(seed)
    has_int8 = any(rule.precision != FLOAT_PRECISION for rule in profile.precision_rules)
    subsets = SUBSETS if has_int8 else SUBSETS[:1]
    samples: list[Sample] = []
    runners: dict[int, Callable] = {}
    references: dict[str, Callable] = {}
    # the uncompressed model, timed with every call anyway: what a relative budget divides by, so calibrated on
    # (a held-out model's only priced, for its candidates' fractions)
    reference_samples: dict[str, Sample] = {}
    tmp = tempfile.TemporaryDirectory(prefix="autocompress-validate-") if workdir is None else None
    root = Path(workdir or tmp.name)
    try:
        for suite in suites:
            calibrate = 0 if suite.name in hold_out else n_calibrate
            # a model calibrated here needs no warning that the calibration's models run unlike it
            costs = CostModel(profile, suite.space, model=suite.name, warn_context=not calibrate)
            references[suite.name] = candidate_opener(runtime, suite.model, suite.space, suite.space.identity(),
                                                      root / f"{suite.name}-reference.onnx", seed)()
            reference_samples[suite.name] = Sample(suite.name, "calibrate" if calibrate else "reference", REFERENCE,
                                                   suite.space.identity(),
                                                   feature_rows(costs, suite.space, [suite.space.identity()])[0])
            planned: list[tuple[Candidate, str, str]] = []  # candidate, role, subset
            for subset in subsets:
                per_role = {"calibrate": calibrate // len(subsets), "validate": n_validate // len(subsets)}
                drawn = draw_candidates(suite.space, sum(per_role.values()), subset, rng)
                roles = ["calibrate"] * per_role["calibrate"] + ["validate"] * per_role["validate"]
                planned += [(c, role, subset) for c, role in zip(drawn, roles, strict=False)]
            if has_int8:  # the uniform all-int8 models too, alternately calibrated on and held out
                seen = {c for c, _, _ in planned}
                uniform = [c for c in uniform_int8_candidates(suite.space, n_validate // 2 + calibrate // 2)
                           if c not in seen]
                # the widest (the cheap lossless point a search most needs right) is calibrated on, so the held-out
                # ones lie between calibrated neighbours instead of beyond them
                roles = ["calibrate", "validate"] if calibrate else ["validate"]
                planned += [(c, roles[i % len(roles)], UNIFORM_INT8) for i, c in enumerate(uniform)]
            rows = feature_rows(costs, suite.space, [c for c, _, _ in planned])
            for (candidate, role, subset), features in zip(planned, rows, strict=True):
                samples.append(Sample(suite.name, role, subset, candidate, features))
                runners[len(samples) - 1] = candidate_opener(runtime, suite.model, suite.space, candidate,
                                                             root / f"{suite.name}-{len(samples)}.onnx", seed)
                log.info("validation: prepared %d models", len(samples))
        fns = open_sessions({f"{i}/{half}": open_session for i, open_session in runners.items()
                             for half in HALVES}, sessions, seed)

        def labels(i: int, half: str) -> list[str]:  # the timed sessions of sample i's session set
            return [f"{i}/{half}#{k}" for k in range(sessions)]

        mine = {suite.name: [i for i, s in enumerate(samples) if s.suite == suite.name] for suite in suites}
        # each model's sessions against its reference; the anchors (layers) alone: a model's cache would disturb them
        models = {name: ({label: fns[label] for i in indices for half in HALVES for label in labels(i, half)},
                         references[name]) for name, indices in mine.items()}
        with runtime.measuring():
            timings, rounds_of = _time_in_rounds(
                models, _anchor_callables(profile, runtime, sessions, seed),
                lambda t, name: noise_floor_pct(*zip(*_figures(t, mine[name], labels)[1], strict=True)),
                rounds=rounds, max_rounds=max_rounds, noise_bound_pct=noise_bound_pct, reps=reps, warmup=warmup,
                seed=seed, progress=progress, before_round=before_round)
    finally:
        if tmp is not None:
            tmp.cleanup()
    reference_ms: dict[str, float] = {}
    noise: dict[str, float] = {}
    for name, indices in mine.items():
        reference_ms[name], figures = _figures(timings, indices, labels)
        for i, (measured, halves) in zip(indices, figures, strict=True):
            samples[i].measured_ms, samples[i].halves_ms = measured, halves
        noise[name] = noise_floor_pct(*zip(*figures, strict=True))
        if noise_bound_pct and noise[name] > noise_bound_pct:
            log.warning("validation: %s's noise floor is still %.1f%% after %d rounds (bound %.1f%%): its figures "
                        "carry that much of this machine's noise", name, noise[name], rounds_of[name],
                        noise_bound_pct)
        reference_samples[name].measured_ms = reference_ms[name]
        reference_samples[name].halves_ms = (reference_ms[name], reference_ms[name])
        samples.append(reference_samples[name])
    ratios = [across_sessions([timings[f"anchor/{key}/{k}"].value_ms for k in range(sessions)]) / reference
              for key, reference in profile.anchors.items() if reference > 0]
    anchor_ratio = float(np.median(ratios)) if ratios else None
    updated, report = score_samples(profile, suites, samples, (*subsets, UNIFORM_INT8) if has_int8 else subsets,
                                    command=command, anchor_ratio=anchor_ratio, reference_ms=reference_ms,
                                    hold_out=hold_out)
    report["rounds"] = {"min": rounds, "max": max_rounds if noise_bound_pct else rounds,
                        "noise_bound_pct": noise_bound_pct, "per_model": rounds_of, "noise_floor_pct": noise}
    return updated, report


def _time_in_rounds(models: dict[str, tuple[dict[str, Callable], Callable]], anchors: dict[str, Callable],
                    noise_of: Callable[[dict[str, Timing], str], float], *, rounds: int, max_rounds: int,
                    noise_bound_pct: float, reps: int, warmup: int, seed: int,
                    progress: Callable[[int, int], None] | None,
                    before_round: Callable[[int], object] | None = None,
                    ) -> tuple[dict[str, Timing], dict[str, int]]:
    """Time every model's sessions (each against its reference) and the anchors, in rounds.

    Each model's sessions are shuffled into chunks of :data:`CHUNK`, and a round visits the chunks of every
    model and the anchors in one random order. After ``rounds`` rounds, the models whose ``noise_of`` (their
    noise floor from the timings so far) is above ``noise_bound_pct`` get another round, until none is or each
    has had ``max_rounds``. ``before_round`` (the number of rounds done) runs before every round after the first.
    Returns label -> timing over every round, and how many rounds each model got.
    """
    groups: list[tuple[dict[str, Callable], Callable | None]] = []
    names: list[str | None] = []  # whose each group is (None: the anchors)
    for name, (fns, reference) in models.items():
        labels = list(fns)
        shuffled = [labels[int(k)] for k in np.random.default_rng([seed, len(names)]).permutation(len(labels))]
        for start in range(0, len(shuffled), CHUNK):
            groups.append(({label: fns[label] for label in shuffled[start:start + CHUNK]}, reference))
            names.append(name)
    if anchors:
        groups.append((anchors, None))
        names.append(None)
    total = rounds * sum(len(group) for group, _ in groups)
    per_round: dict[str, list[Timing]] = {}
    done = round_ = 0
    rounds_of = {name: 0 for name in models}
    visiting = list(range(len(groups)))
    while visiting:  # every round visits every group still being timed, in a fresh order
        if round_ and before_round is not None:
            before_round(round_)
        for g in np.random.default_rng([seed, round_]).permutation(visiting):
            group, reference = groups[int(g)]
            for label, timing in time_callables(
                    group, rounds=1, reps=reps, warmup=warmup, seed=seed + round_, reference=reference,
                    progress=None if progress is None else
                    lambda n, _, offset=done, total=total: progress(offset + n, total)).items():
                per_round.setdefault(label, []).append(timing)
            done += len(group)
        for name in {names[g] for g in visiting} - {None}:
            rounds_of[name] += 1
        round_ += 1
        if round_ < rounds:
            continue
        if not noise_bound_pct:
            break
        timings = {label: merge_rounds(parts) for label, parts in per_round.items()}
        noise = {name: noise_of(timings, name) for name in models}
        noisy = [name for name, pct in noise.items() if pct > noise_bound_pct and rounds_of[name] < max_rounds]
        visiting = [g for g, name in enumerate(names) if name in noisy]
        if visiting:
            total += sum(len(groups[g][0]) for g in visiting)
            log.info("validation: noise floor above %.1f%% after %d rounds: %s; another round of %s",
                     noise_bound_pct, round_, ", ".join(f"{n} {noise[n]:.1f}%" for n in noisy),
                     "it" if len(noisy) == 1 else "them")
    return {label: merge_rounds(parts) for label, parts in per_round.items()}, rounds_of


def _figures(timings: dict[str, Timing], indices: Sequence[int],
             labels: Callable[[int, str], list[str]]) -> tuple[float, list[tuple[float, tuple[float, float]]]]:
    """One model's reference ms (its median over the run) and, per candidate, its latency and each session set's:
    every session's median ratio to the reference times that ms."""
    reference = float(np.median([timings[label].reference_ms for i in indices for half in HALVES
                                 for label in labels(i, half)]))
    figures = []
    for i in indices:
        a, b = ([timings[label].ratio * reference for label in labels(i, half)] for half in HALVES)
        figures.append((across_sessions(a + b), (across_sessions(a), across_sessions(b))))
    return reference, figures


def _anchor_callables(profile: HardwareProfile, runtime: Runtime, sessions: int,
                      seed: int) -> dict[str, Callable[[], object]]:
    """The profile's anchor signatures, timed beside the models (none for profiles without anchors)."""
    if not profile.anchors:
        return {}
    return {f"anchor/{key}/{k}": runtime.open_layer(LayerSignature.parse(key), seed=seed)
            for key in profile.anchors for k in range(sessions)}


def score_samples(profile: HardwareProfile, suites: Sequence[Suite], samples: list[Sample], subsets: Sequence[str],
                  *, command: str = "", anchor_ratio: float | None = None,
                  reference_ms: dict[str, float] | None = None,
                  hold_out: Sequence[str] = ()) -> tuple[HardwareProfile, dict[str, Any]]:
    """Fit the calibrations on the calibration samples and score them on the held-out ones.

    A model with no calibration samples is predicted with the calibration the
    profile already holds for it (``calibration_for``: its own, else the pooled
    one), as a search on it would be: that is how a profile is checked on
    models its calibration never saw. Nothing is stored for such a model but
    its validation results. A model whose operations between layers the
    profile holds (``graph_ops``) has them added to every prediction, and its
    calibrations fit what is left of each measured latency.

    ``reference_ms``: each model's uncompressed reference as timed in the run (what ratios were scaled by). With
    it, every row also holds the candidate as a fraction of its reference, measured and predicted (over the
    reference's prediction): what a relative budget such as ``latency<=0.5x`` compares. It differs from the
    absolute figure where a calibration prices a model's uncompressed end less well than its random candidates.
    ``hold_out``: models priced with this run's pooled calibration, whatever the profile holds for them; they are
    also scored together.
    """
    fit = [s for s in samples if s.role == "calibrate"]
    shapes = {s.name: s.space.graph.input_shape for s in suites}
    keys = {name: calibration_key(name, shape) for name, shape in shapes.items()}
    ops = {name: profile.graph_ops_for(name, shape) for name, shape in shapes.items()}

    def ops_ms(sample: Sample) -> float:
        """The model's operations between layers (measured in its graph): calibrations fit the rest."""
        found = ops[sample.suite]
        return 0.0 if found is None else float(found.price(*(sample.features[CALIBRATION_FEATURES.index(f)]
                                                              for f in ("mact_float", "mact_quant"))))

    def layers_ms(chosen: list[Sample]) -> np.ndarray:
        return np.array([s.measured_ms - ops_ms(s) for s in chosen])

    def features(sample: Sample, models: Sequence[str]) -> dict[str, Any]:
        """The sample's features as a calibration fitted on ``models`` takes them (its quantized sums in context)."""
        return in_context(dict(zip(CALIBRATION_FEATURES, sample.features, strict=True)),
                          profile.quant_context(sample.suite, shapes[sample.suite], models))

    def fitted(chosen: list[Sample]) -> Calibration:
        models = sorted({keys[s.suite] for s in chosen})
        rows = [features(s, models) for s in chosen]
        design = np.array([[row[f] for f in CALIBRATION_FEATURES] for row in rows], dtype=float)
        return fit_calibration(design, layers_ms(chosen), [keys[s.suite] for s in chosen])

    pooled = profile.calibration if not fit else fitted(fit)
    own: dict[str, Calibration] = {}  # fitted on the model's own samples
    held_out: dict[str, Calibration] = {}  # no samples to fit on: what a search on the model would use
    for suite in suites:
        mine = [s for s in fit if s.suite == suite.name]
        if mine:
            own[suite.name] = fitted(mine)
        else:  # its own stored calibration, else the pool this run leaves in the profile
            stored = [k for k in model_keys(suite.name, suite.space.graph.input_shape)
                      if k in profile.model_calibrations and suite.name not in hold_out]
            held_out[suite.name] = profile.model_calibrations[stored[0]] if stored else pooled
    used = {**own, **held_out}

    def predicted(sample: Sample) -> dict[str, float]:
        between = ops_ms(sample)
        return {"predicted_ms": float(used[sample.suite].apply(features(sample, used[sample.suite].models))) + between,
                "pooled_predicted_ms": float(pooled.apply(features(sample, pooled.models))) + between,
                "graph_ops_ms": between}

    # what a relative budget (latency<=0.5x) divides by: each model's uncompressed reference, predicted
    references = {s.suite: predicted(s) for s in samples if s.subset == REFERENCE}
    date = datetime.now(timezone.utc).isoformat(timespec="seconds")
    results, report_rows = [], []
    for s in (s for s in samples if s.role == "validate"):
        row = {"model": s.suite, "subset": s.subset, **predicted(s), "measured_ms": s.measured_ms,
               "halves_ms": list(s.halves_ms), "candidate": s.candidate.to_dict()}
        if reference_ms and s.suite in reference_ms and s.suite in references:  # a fraction of its reference
            row |= {"measured_fraction": s.measured_ms / reference_ms[s.suite],
                    **{key.replace("_ms", "_fraction"): row[key] / references[s.suite][key]
                       for key in ("predicted_ms", "pooled_predicted_ms")}}
        report_rows.append(row)
    model_groups = [[s.name] for s in suites] + ([[s.name for s in suites]] if len(suites) > 1 else [])
    if 1 < len(set(hold_out)) < len(suites):
        model_groups.append([s.name for s in suites if s.name in hold_out])
    for models in model_groups:
        if len(models) > 1 and not fit and any(used[m] != pooled for m in models):
            continue  # no one calibration priced these models together
        for subset in (*subsets, "all"):
            rows = [r for r in report_rows if r["model"] in models and subset in ("all", r["subset"])]
            if not rows:
                continue
            # one model: its own calibration (what a search on it uses); several: the pooled one
            key = "predicted_ms" if len(models) == 1 or not fit else "pooled_predicted_ms"
            metrics = fidelity(np.array([r[key] for r in rows]), np.array([r["measured_ms"] for r in rows]),
                               np.array([r["halves_ms"] for r in rows]))
            results.append(ValidationResult(date=date, command=command, models=[keys[m] for m in models],
                                            subset=subset,
                                            anchor_ratio=anchor_ratio,
                                            calibration=used[models[0]] if len(models) == 1 else pooled, **metrics))
    # the pooled calibration (for models without their own) keeps the widest pool it has seen: one model
    # validated at another input shape does not replace a pool of several
    keep_pool = not fit or len(profile.calibration.models) > len(pooled.models)
    updated = profile.model_copy(update={
        "calibration": profile.calibration if keep_pool else pooled,
        "model_calibrations": {**profile.model_calibrations, **{keys[name]: c for name, c in own.items()}},
        "validation": [*profile.validation, *results],
    })
    report = {"results": [r.model_dump() for r in results], "anchor_ratio": anchor_ratio,
              "reference_ms": reference_ms or {}, "reference_predicted_ms": references, "samples": report_rows,
              "calibration_samples": [{"model": s.suite, "subset": s.subset, "measured_ms": s.measured_ms,
                                       "halves_ms": list(s.halves_ms),
                                       "features": dict(zip(CALIBRATION_FEATURES, s.features.tolist(), strict=True)),
                                       "candidate": s.candidate.to_dict()}
                                      for s in samples if s.role == "calibrate"]}
    return updated, report


def feature_rows(costs: CostModel, space: SearchSpace, candidates: Sequence[Candidate]) -> np.ndarray:
    """The candidates' CALIBRATION_FEATURES as ``costs`` prices them, one row each."""
    raw = costs.predict_batch(space.encoding.encode(list(candidates)))
    return np.column_stack([raw[f] for f in CALIBRATION_FEATURES])


def samples_from_report(profile: HardwareProfile, suites: Sequence[Suite], report: dict[str, Any]) -> list[Sample]:
    """The measured samples of an earlier validation, to recalibrate without measuring again, and every model's
    uncompressed reference (the held-out ones' with role ``reference``, timed as the report says)."""
    by_name = {s.name: s for s in suites}
    costs = {s.name: CostModel(profile, s.space) for s in suites}
    samples = []
    for role, rows in (("calibrate", report["calibration_samples"]), ("validate", report["samples"])):
        for row in rows:
            suite = by_name.get(row["model"])
            if suite is None:
                raise ProfileError(f"the report has samples of {row['model']!r}; pass that model too")
            if "candidate" in row:  # features from today's table and cost model
                candidate = Candidate.from_dict(row["candidate"])
                features = feature_rows(costs[suite.name], suite.space, [candidate])[0]
            else:
                candidate = Candidate({})
                lacking = sorted(set(CALIBRATION_FEATURES) - {"any_quant"} - set(row["features"]))
                if lacking:
                    raise ProfileError(f"a calibration sample of {row['model']!r} in the report stores neither its "
                                       f"candidate nor the features {lacking}: measure it again")
                stored = calibration_features(row["features"])
                features = np.array([float(stored[f]) for f in CALIBRATION_FEATURES])
            # reports written before the two-set rule hold the first set as measured_ms and the second as repeat_ms
            halves = row.get("halves_ms") or (row["measured_ms"], row.get("repeat_ms", float("nan")))
            samples.append(Sample(suite.name, role, row["subset"], candidate, features, row["measured_ms"],
                                  (float(halves[0]), float(halves[1]))))
    timed = report.get("reference_ms", {})
    for suite in suites:  # a held-out model's reference: the calibrated ones' are calibration samples
        if not any(s.suite == suite.name and s.subset == REFERENCE for s in samples):
            identity = suite.space.identity()
            ms = timed.get(suite.name, float("nan"))
            samples.append(Sample(suite.name, "reference", REFERENCE, identity,
                                  feature_rows(costs[suite.name], suite.space, [identity])[0], ms, (ms, ms)))
    return samples
