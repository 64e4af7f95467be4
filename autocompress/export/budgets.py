"""Budgets checked twice: on the cost model's prediction and on what the export measured or counted."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from autocompress.export.manifest import BudgetCheck
from autocompress.hardware.profile import HardwareProfile, ValidationResult, model_keys
from autocompress.search.budget import METRICS, Budget

#: noise band when the profile has no validation noise floor that applies to the model
DEFAULT_NOISE_PCT = 5.0


def noise_band(profile: HardwareProfile, model: str, input_shape: Sequence[int] | None = None) -> tuple[float, str]:
    """The % a measurement may exceed a limit and still count as met, and where the figure comes from.

    The noise floor of the profile's latest validation (subset "all") of this
    model at this input shape (filed as ``calibration_key``, e.g.
    ``resnet20@3x32x32``), else of the bare model name (older profiles), else of
    the latest validation of several models together: the same order as
    :meth:`HardwareProfile.calibration_for`. Else :data:`DEFAULT_NOISE_PCT`.
    """
    def latest(wanted) -> ValidationResult | None:
        found = [v for v in profile.validation if v.subset == "all" and wanted(list(v.models))]
        return found[-1] if found else None

    keys = model_keys(model, input_shape)
    for key in keys:
        v = latest(lambda models, key=key: models == [key])
        if v is not None:
            return float(v.noise_floor_pct), f"profile {profile.name!r} validation of {v.date}: noise floor for {key}"
    pooled = latest(lambda models: len(models) > 1)
    if pooled is not None:
        return float(pooled.noise_floor_pct), (f"profile {profile.name!r} validation of {pooled.date}: pooled noise "
                                               f"floor of {', '.join(pooled.models)} (none for {keys[0]})")
    return DEFAULT_NOISE_PCT, f"default ({DEFAULT_NOISE_PCT:g}%): profile {profile.name!r} has no validation for {keys[0]}"


def budget_rows(budgets: list[Budget], predicted: dict[str, Any], measured: dict[str, Any],
                reference_measured: dict[str, Any], *, noise_pct: float, energy_method: str,
                timing_note: str = "", device_note: str = "",
                speed_ratio: float | None = None) -> list[BudgetCheck]:
    """Each budget checked on the prediction and, where measurable, on the measurement.

    Latency: met when measured <= limit * (1 + noise band); a relative latency
    budget's limit is its factor times the *measured* reference. Size, MACs and
    BitOps are counted on the real model (exact, no band); a relative one is
    compared with the counted reference. Energy is checked like latency when
    the re-measurement read an energy counter (RAPL, NVML); otherwise only its
    prediction (modelled) is reported. ``speed_ratio`` (this machine's speed
    against the profile's device, from the machine check, where they differ)
    rescales a measured latency before it meets an absolute limit, which is
    set for the profile's device; a relative one compares like with like.
    """
    rows = []
    for budget in budgets:
        array, factor = METRICS[budget.metric]
        unit = _unit(budget.metric)
        pred_value = float(predicted[array]) * factor
        row = BudgetCheck(text=budget.text, metric=budget.metric, relative=budget.relative, limit=budget.limit,
                          predicted=pred_value, met_predicted=pred_value <= budget.limit * (1 + 1e-9))
        if array == "energy_mj":
            row.energy_method = measured.get("energy_method") or energy_method
        if array == "energy_mj" and measured.get("energy_mj") is None:
            row.note = (f"energy is {energy_method}, not measured on this machine: predicted "
                        f"{pred_value:.4g} {unit} ({energy_method}) against the limit {budget.limit:.4g} {unit}")
            rows.append(row)
            continue
        value = measured.get(array)
        ref_value = reference_measured.get(array)
        if value is None or (budget.relative is not None and ref_value is None):
            row.note = timing_note or f"not measured ({array} unavailable)"
            rows.append(row)
            continue
        value = float(value) * factor
        if budget.relative is not None:
            limit = budget.relative * float(ref_value) * factor
            basis = f"{budget.relative:g} x measured reference {float(ref_value) * factor:.4g} {unit}"
        else:
            limit = budget.limit
            basis = "the absolute limit"
            if array == "latency_ms" and speed_ratio:
                basis += (f"; measured here {value:.4g} {unit} / machine speed ratio {speed_ratio:.2f} = "
                          f"{value / speed_ratio:.4g} {unit} on the profile's device")
                value /= speed_ratio
        timed = array in ("latency_ms", "energy_mj")  # measured with the timing noise; the rest is counted
        band = noise_pct if timed else 0.0
        met = value <= limit * (1 + band / 100)
        over_pct = (value / limit - 1) * 100 if limit > 0 else math.inf
        row.measured, row.measured_limit, row.met_measured, row.noise_band_pct = value, limit, bool(met), band
        what = "measured" if timed else "counted"
        if value <= limit:
            row.note = f"{what} {value:.4g} {unit} <= {limit:.4g} {unit} ({basis})"
        elif met:
            row.note = (f"{what} {value:.4g} {unit} is {over_pct:.1f}% over {limit:.4g} {unit} ({basis}), within "
                        f"the {band:.1f}% noise band: counted as met")
        else:
            band_text = f", more than the {band:.1f}% noise band" if band else " (counted exactly)"
            row.note = (f"MISSED: {what} {value:.4g} {unit} exceeds {limit:.4g} {unit} ({basis}) by "
                        f"{over_pct:.1f}%{band_text}; the cost model predicted {pred_value:.4g} {unit}")
        passes = measured.get("latency_passes_vs_reference") if array == "latency_ms" else None
        if passes and len(passes) > 1:
            # each pass's figure formed as the whole one is: its ratio x the measured reference, rescaled alike
            figures = [r * value / float(measured["latency_vs_reference"]) for r in passes]
            row.met_in_passes = [bool(f <= limit * (1 + band / 100)) for f in figures]
            row.note += (f"; met in {sum(row.met_in_passes)} of {len(figures)} timing passes "
                         f"({min(figures):.4g}-{max(figures):.4g} {unit})")
        if array == "latency_ms" and device_note:
            row.note += f"; {device_note}"
        rows.append(row)
    return rows


def _unit(metric: str) -> str:
    return {"latency_ms": "ms", "energy_mj": "mJ", "size_bytes": "B", "size_kb": "KiB", "size_mb": "MiB",
            "macs": "MACs", "flops": "FLOPs", "bitops": "BitOps"}.get(metric, "")
