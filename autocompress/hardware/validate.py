"""Fidelity of a profile: calibrate on measured whole models, then test on held-out ones.

Random candidates of each model's space are materialized, exported for the
profile's runtime and timed end to end, all interleaved in one process. One set
fits the calibration (per kernel precision); a disjoint set is predicted and
compared with its measurement: Spearman rank correlation, median and 90th
percentile absolute % error, share within +-10%, beside the noise floor (each
held-out model measured twice, as two sessions, in the same run).
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
from torch import nn

from autocompress.compress import deploy_copy, materialize
from autocompress.hardware.cost_model import FLOAT_PRECISION, CostModel
from autocompress.hardware.profile import (
    Calibration,
    HardwareProfile,
    ProfileError,
    ValidationResult,
)
from autocompress.hardware.timing import time_callables, torch_callable
from autocompress.space import Candidate, SearchSpace

log = logging.getLogger(__name__)
SUBSETS = ("fp32-only", "int8-containing")


@dataclass
class Suite:
    """One model and its space, as validation draws candidates from it."""

    name: str
    model: nn.Module
    space: SearchSpace


@dataclass
class Sample:
    suite: str
    role: str  # "calibrate" | "validate"
    subset: str
    candidate: Candidate
    features: np.ndarray  # latency_sum_ms, activation_elements, leaves
    measured_ms: float = float("nan")
    repeat_ms: float = float("nan")


def draw_candidates(space: SearchSpace, n: int, subset: str, rng: np.random.Generator) -> list[Candidate]:
    """Random points of the whole joint space; fp32-only ones have every bit-width at 32."""
    out: list[Candidate] = []
    for _ in range(20 * n):
        if len(out) == n:
            break
        data = space.sample(rng).to_dict()
        if subset == "fp32-only":
            for dims in data["layers"].values():
                dims.update(w_bits=32, a_bits=32)
        elif not any(d["w_bits"] <= 8 and d["a_bits"] <= 8 for d in data["layers"].values()):
            continue
        candidate = Candidate.from_dict(data)
        if candidate not in out:
            out.append(candidate)
    return out


def _runner(profile: HardwareProfile, model: nn.Module, input_shape: tuple[int, int, int], path: Path,
            seed: int) -> Callable[[], Callable[[], object]]:
    """Export once; each call of the result opens a fresh session (two calls: the noise floor)."""
    if profile.runtime == "onnxruntime":
        from autocompress.hardware.onnx_runtime import export_onnx, ort_callable, ort_session

        exported = export_onnx(model, input_shape, path)
        x = np.random.default_rng(seed).standard_normal((1, *input_shape)).astype(np.float32)

        def open_session():
            session = ort_session(exported, threads=profile.threads)
            return ort_callable(session, {session.get_inputs()[0].name: x})
        return open_session
    if profile.runtime == "torch-eager":
        deployed = deploy_copy(model)
        return lambda: torch_callable(deployed, input_shape, seed=seed)
    raise ProfileError(f"profile runtime {profile.runtime!r} cannot be measured on this machine")


#: calibration forms, simplest first: columns of (layer sum, activations / 1e6, layers, 1) each one uses
CALIBRATION_FORMS = {"a*sum+b": (0, 3), "a*sum+c*layers+b": (0, 2, 3), "a*sum+d*act+c*layers+b": (0, 1, 2, 3)}


def fit_calibration(features: np.ndarray, measured: np.ndarray, precision: str) -> Calibration:
    """Least squares of measured latency on the layer sum and, where the data supports it, more terms.

    Each form is scored by leave-one-out median absolute % error and the best
    one kept, so a small calibration set never buys an over-fitted formula.
    """
    n = len(measured)
    if n < 4:
        raise ProfileError(f"need at least 4 calibration models for {precision}, got {n}")
    design = np.column_stack([features[:, 0], features[:, 1] / 1e6, features[:, 2], np.ones(n)])
    best: tuple[float, np.ndarray] | None = None
    for columns in CALIBRATION_FORMS.values():
        if n < 3 * len(columns):
            continue
        errors = []
        for i in range(n):
            keep = np.arange(n) != i
            coef, *_ = np.linalg.lstsq(design[keep][:, columns], measured[keep], rcond=None)
            errors.append(abs(design[i, columns] @ coef - measured[i]) / measured[i])
        coef, *_ = np.linalg.lstsq(design[:, columns], measured, rcond=None)
        full = np.zeros(4)
        full[list(columns)] = coef
        score = float(np.median(errors))
        if full[0] > 0 and (best is None or score < best[0]):
            best = (score, full)
    if best is None:
        a, b = np.polyfit(features[:, 0], measured, 1)
        best = (float("nan"), np.array([a, 0.0, 0.0, b]))
    coef = best[1]
    return Calibration(scale=float(coef[0]), per_mega_element_ms=float(coef[1]), per_layer_ms=float(coef[2]),
                       offset_ms=float(coef[3]), fitted_on=n, precision=precision)


def fidelity(predicted: np.ndarray, measured: np.ndarray, repeat: np.ndarray) -> dict[str, float]:
    errors = np.abs(predicted - measured) / measured * 100
    return {
        "n_candidates": int(len(measured)),
        "spearman": float(stats.spearmanr(predicted, measured).statistic) if len(measured) > 2 else float("nan"),
        "median_abs_pct_error": float(np.median(errors)),
        "p90_abs_pct_error": float(np.percentile(errors, 90)),
        "within_10pct": float(np.mean(errors <= 10)),
        "noise_floor_pct": float(np.median(np.abs(repeat - measured) / measured * 100)),
    }


def validate_profile(
    profile: HardwareProfile,
    suites: Sequence[Suite],
    *,
    n_validate: int = 50,
    n_calibrate: int = 20,
    seed: int = 0,
    rounds: int = 5,
    reps: int = 20,
    warmup: int = 3,
    command: str = "",
    workdir: str | Path | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[HardwareProfile, dict[str, Any]]:
    """Fit calibrations on ``n_calibrate`` and evaluate on ``n_validate`` candidates per model.

    Both counts are split evenly between fp32-only and int8-containing candidates
    (int8 only where the profile has int8 kernels). Returns the updated profile
    (calibrations and validation results stored) and a report with every sample.
    """
    rng = np.random.default_rng(seed)
    has_int8 = any(rule.precision != FLOAT_PRECISION for rule in profile.precision_rules)
    subsets = SUBSETS if has_int8 else SUBSETS[:1]
    samples: list[Sample] = []
    runners: dict[int, Callable] = {}
    tmp = tempfile.TemporaryDirectory(prefix="autocompress-validate-") if workdir is None else None
    root = Path(workdir or tmp.name)
    try:
        for suite in suites:
            costs = CostModel(profile.model_copy(update={"calibration": Calibration(), "calibrations": {}}),
                              suite.space)
            for subset in subsets:
                per_role = {"calibrate": n_calibrate // len(subsets), "validate": n_validate // len(subsets)}
                drawn = draw_candidates(suite.space, sum(per_role.values()), subset, rng)
                roles = ["calibrate"] * per_role["calibrate"] + ["validate"] * per_role["validate"]
                raw = costs.predict_batch(costs.encode(drawn))
                for i, (candidate, role) in enumerate(zip(drawn, roles, strict=False)):
                    features = np.array([raw["latency_sum_ms"][i], raw["activation_elements"][i], raw["leaves"][i]])
                    samples.append(Sample(suite.name, role, subset, candidate, features))
                    built = materialize(suite.model, candidate, suite.space).eval()
                    shape = (suite.space.graph.input_shape[0], *suite.space.input_resolution(candidate))
                    runners[len(samples) - 1] = _runner(profile, built, shape,
                                                        root / f"{suite.name}-{len(samples)}.onnx", seed)
                    log.info("validation: prepared %d models", len(samples))
        fns = {}
        for i, open_session in runners.items():
            fns[f"{i}"] = open_session()
            if samples[i].role == "validate":
                fns[f"{i}-repeat"] = open_session()
        timings = time_callables(fns, rounds=rounds, reps=reps, warmup=warmup, seed=seed, progress=progress)
    finally:
        if tmp is not None:
            tmp.cleanup()
    for i, sample in enumerate(samples):
        sample.measured_ms = timings[f"{i}"].value_ms
        if sample.role == "validate":
            sample.repeat_ms = timings[f"{i}-repeat"].value_ms

    calibrations: dict[str, Calibration] = {}
    for subset in subsets:
        fit = [s for s in samples if s.role == "calibrate" and s.subset == subset]
        precision = FLOAT_PRECISION if subset == "fp32-only" else "int8"
        calibrations[precision] = fit_calibration(np.array([s.features for s in fit]),
                                                  np.array([s.measured_ms for s in fit]), precision)
    date = datetime.now(timezone.utc).isoformat(timespec="seconds")
    results, report_rows = [], []
    held_out = [s for s in samples if s.role == "validate"]
    for s in held_out:
        cal = calibrations[FLOAT_PRECISION if s.subset == "fp32-only" else "int8"]
        s_pred = float(cal.apply(*s.features))
        report_rows.append({"model": s.suite, "subset": s.subset, "predicted_ms": s_pred,
                            "measured_ms": s.measured_ms, "repeat_ms": s.repeat_ms,
                            "candidate": s.candidate.to_dict()})
    model_groups = [[s.name] for s in suites] + ([[s.name for s in suites]] if len(suites) > 1 else [])
    for models in model_groups:
        for subset in (*subsets, "all"):
            rows = [r for r in report_rows if r["model"] in models and subset in ("all", r["subset"])]
            if not rows:
                continue
            metrics = fidelity(np.array([r["predicted_ms"] for r in rows]),
                               np.array([r["measured_ms"] for r in rows]), np.array([r["repeat_ms"] for r in rows]))
            precision = "int8" if subset == "int8-containing" else FLOAT_PRECISION
            results.append(ValidationResult(date=date, command=command, models=models, subset=subset,
                                            calibration=calibrations[precision], **metrics))
    updated = profile.model_copy(update={
        "calibrations": calibrations,
        "calibration": calibrations[FLOAT_PRECISION],
        "validation": [*profile.validation, *results],
    })
    report = {"results": [r.model_dump() for r in results], "samples": report_rows,
              "calibration_samples": [{"model": s.suite, "subset": s.subset, "measured_ms": s.measured_ms,
                                       "features": s.features.tolist()} for s in samples if s.role == "calibrate"]}
    return updated, report
