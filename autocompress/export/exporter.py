"""Pareto set -> real artifacts, re-measured: weights, ONNX (fp32 and int8), a manifest and plots.

``export_front(setup, study, out_dir)`` takes the feasible Pareto front of a
study (or the trials named), and for each member:

1. materializes its candidate from the reference model (the exact model the
   trial scored), fine-tunes it longer with distillation ("full" fidelity) at
   the candidate's input resolution, and measures val and test accuracy;
2. saves ``weights.pt`` (the state_dict) and ``candidate.json`` (candidate,
   trial number and the configuration that rebuilds it: :func:`rebuild`);
3. exports ``model.onnx`` (float) and, when any layer is <= 8 bits for weights
   and activations, ``model.int8.onnx`` (QDQ, calibrated on real training
   images at the candidate's resolution);
4. counts size, MACs and BitOps on the real model (:mod:`autocompress.counting`).

Then all members **and the uncompressed reference** are timed together, in one
interleaved run in the profile's runtime (several sessions per model, each
call paired with a call of the reference, the median ratio kept), so a relative budget such as ``latency<=0.5x`` compares a
measurement with a measurement. Every budget is checked twice: on the cost
model's prediction and on the measurement (latency within the profile's noise
band; size/MACs/BitOps are counted exactly; energy is said to be modelled where
it is). A measured miss is written out plainly in the member's ``note``.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import platform
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from autocompress.compress import deploy_copy, materialize
from autocompress.counting import count_model
from autocompress.hardware.profile import HardwareProfile, this_machine
from autocompress.runtime.onnx_runtime import export_onnx, int8_leaves, ort_session
from autocompress.runtime.timing import (
    Timing,
    across_sessions,
    open_sessions,
    time_callables,
    torch_threads,
)
from autocompress.runtime.validate import session_opener
from autocompress.search.api import SearchSetup
from autocompress.search.budget import METRICS, Budget
from autocompress.search.engine import pareto_front
from autocompress.search.study import TrialRecord, records
from autocompress.space import Candidate
from autocompress.train import Evaluator, FitConfig, evaluate

log = logging.getLogger(__name__)

MANIFEST_FORMAT = "autocompress-export/1"
MANIFEST_NAME = "manifest.json"
#: noise band when the profile has no validation noise floor for the model
DEFAULT_NOISE_PCT = 5.0
#: runtimes this machine can re-measure
MEASURABLE_RUNTIMES = ("onnxruntime", "torch-eager")
#: calibration data for int8 export: this many real training batches of this size
CALIBRATION_BATCHES = 4
CALIBRATION_BATCH_SIZE = 16
#: test images the deployed ONNX model is checked on (batch 1, in the runtime)
ONNX_CHECK_LIMIT = 1000
#: test images whose logits candidate.json keeps, so rebuild() can prove the round trip
PROBE_IMAGES = 4


class ExportError(ValueError):
    """A trial that cannot be exported (unknown, not evaluated, over budget), or a member directory
    that cannot be rebuilt."""


@dataclass
class ExportedMember:
    """One exported model: a row of the manifest."""

    trial: int
    candidate: dict
    accuracy_proxy: float  # the search's proxy score (short fine-tune, subset)
    accuracy_val: float  # after the final fine-tune
    accuracy_test: float
    predicted: dict[str, Any]  # cost model: latency_ms, energy_mj, size_bytes, macs, bitops + energy_method
    measured: dict[str, Any]  # re-measured latency (+ spread) and counted size / MACs / BitOps
    budgets: list[dict]  # per budget: predicted vs measured, met or not, and a note
    files: dict[str, str]  # relative to the export directory
    dir: str = ""  # the member's directory, relative to the export directory
    input_shape: list[int] = field(default_factory=list)
    fine_tune: dict[str, Any] = field(default_factory=dict)
    note: str = ""  # one line: all budgets met on measurement, or what missed

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# -- public API --------------------------------------------------------------------------------------


def export_front(
    setup: SearchSetup,
    study,
    out_dir: str | Path,
    *,
    trials: list[int] | None = None,
    final_epochs: float | None = None,
    rounds: int = 5,
    reps: int = 20,
    sessions: int = 4,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Export the study's feasible Pareto front (or ``trials``) to ``out_dir``; returns the manifest.

    ``final_epochs``: the longer distillation fine-tune (default ``config.final_epochs``).
    ``rounds``/``reps``/``sessions``: the interleaved latency measurement (every
    member and the reference, ``sessions`` runtime sessions each, their median
    kept). Writes ``manifest.json``, ``front.png``, ``policy.png``, the
    reference's ``reference/model.onnx`` and one ``trial-NNNN/`` folder per member.
    """
    config = setup.config
    if sessions < 1 or isinstance(sessions, bool):
        raise ValueError(f"sessions must be an integer >= 1, got {sessions!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    history = records(study)
    chosen = _select(study, history, trials, list(config.objective_costs))
    profile: HardwareProfile = setup.costs.profile
    epochs = config.final_epochs if final_epochs is None else final_epochs
    fit = FitConfig(epochs=epochs, lr=config.proxy_lr, seed=config.seed, progress=progress)
    evaluator = Evaluator(teacher=setup.base_model, data=setup.data, fit=fit, fidelity="full")
    native = setup.data.input_shape
    log.info("exporting %d model(s) of study %r to %s: trials %s", len(chosen), study.study_name, out,
             [t.number for t in chosen])

    # -- the reference (uncompressed) model --------------------------------------------------------
    ref_dir = out / "reference"
    ref_dir.mkdir(exist_ok=True)
    reference_model = setup.base_model.eval()
    ref_files = {"model.onnx": _rel(export_onnx(reference_model, native, ref_dir / "model.onnx", int8=False), out)}
    ref_counts = count_model(reference_model, native)
    ref_test = evaluate(reference_model, setup.data.loader("test", batch_size=256))
    # the reference given the members' final fine-tuning budget too, so accuracy compares like with like
    same_budget = copy.deepcopy(reference_model)
    same_budget_val = evaluator(same_budget).accuracy
    same_budget_test = evaluate(same_budget.eval(), setup.data.loader("test", batch_size=256))

    # -- members: materialize, fine-tune, evaluate, save, export -------------------------------------
    built: list[dict[str, Any]] = []
    for record in chosen:
        built.append(_build_member(setup, record, out, evaluator, seed=seed))

    # -- one interleaved measurement of every member and the reference -------------------------------
    runners = {}
    if profile.runtime in MEASURABLE_RUNTIMES:
        runners["reference"] = session_opener(profile, reference_model, native, out / ref_files["model.onnx"], seed,
                                              export=False)
        for b in built:
            runners[b["label"]] = session_opener(profile, b["model"], b["input_shape"], out / b["deployed_onnx"],
                                                 seed, export=False)
    timings, timing_note = _measure(runners, profile, rounds=rounds, reps=reps, sessions=sessions, seed=seed,
                                    progress=progress)
    noise_pct, noise_source = noise_band(profile, config.model)
    here = this_machine()
    device_note = ""
    if profile.device.cpu and here.cpu and profile.device.cpu != here.cpu:
        device_note = (f"latency measured on this machine ({here.cpu}), not on the profile's device "
                       f"({profile.device.name}: {profile.device.cpu})")
        log.warning(device_note)

    reference_predicted = dict(setup.reference)
    reference_measured = {**_counted(ref_counts), **timings.get("reference", {})}
    members = []
    for b in built:
        measured = {**_counted(b["counts"]), **timings.get(b["label"], {}),
                    **b["onnx_check"]}
        rows = budget_rows(setup.budgets, b["predicted"], measured, reference_measured, noise_pct=noise_pct,
                           energy_method=b["predicted"].get("energy_method", "none"), timing_note=timing_note,
                           device_note=device_note)
        missed = [r["text"] for r in rows if r["met_measured"] is False]
        unmeasured = [r["text"] for r in rows if r["met_measured"] is None]
        if missed:
            note = f"MISSED on measurement: {', '.join(missed)} (see budgets)"
            log.warning("trial %d: %s", b["record"].number, note)
        else:
            note = "every measurable budget met on measurement"
            if unmeasured:
                note += f"; not measurable here: {', '.join(unmeasured)}"
        members.append(ExportedMember(
            trial=b["record"].number, candidate=b["record"].candidate.to_dict(),
            accuracy_proxy=float(b["record"].accuracy), accuracy_val=b["accuracy_val"],
            accuracy_test=b["accuracy_test"], predicted=b["predicted"], measured=measured, budgets=rows,
            files=b["files"], dir=b["dir"], input_shape=list(b["input_shape"]), fine_tune=b["fine_tune"],
            note=note,
        ))

    manifest = {
        "format": MANIFEST_FORMAT,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "study": {"name": study.study_name, "storage": config.storage_path, "trials": len(history),
                  "evaluated": sum(t.evaluated for t in history),
                  "filtered": sum(not t.feasible for t in history),
                  "selected": "given" if trials is not None else "pareto",
                  "objective_costs": list(config.objective_costs)},
        "config": json.loads(json.dumps(config.to_dict(), default=str)),
        "base_model": json.loads(json.dumps(setup.base_info, default=str)),
        "profile": {"name": profile.name, "kind": profile.kind, "runtime": profile.runtime,
                    "threads": profile.threads, "batch_size": profile.batch_size,
                    "device": profile.device.model_dump(), "energy_method": profile.energy.method,
                    "energy_notes": profile.energy.notes},
        "energy_method": profile.energy.method,
        "measured_on": here.model_dump(),
        "timing": {"runtime": profile.runtime, "threads": profile.threads, "rounds": rounds, "reps": reps,
                   "sessions": sessions, "seed": seed, "measured": not timing_note,
                   "note": timing_note or (f"every member and the reference timed together, interleaved: "
                                           f"{sessions} session(s) x {rounds} rounds x {reps} runs each, every "
                                           "call followed by a call of the reference; latency = median over "
                                           "sessions of the median round ratio to the reference x the "
                                           "reference's median"),
                   "noise_band_pct": noise_pct, "noise_band_source": noise_source,
                   "device_note": device_note},
        "budgets": [str(b) for b in setup.budgets],
        "reference": {"accuracy_val": _maybe_float(setup.base_info.get("val_accuracy")),
                      "accuracy_test": float(ref_test),
                      "accuracy_val_same_fine_tune": float(same_budget_val),
                      "accuracy_test_same_fine_tune": float(same_budget_test),
                      "predicted": reference_predicted,
                      "measured": reference_measured, "files": ref_files,
                      "input_shape": list(native)},
        "final_fine_tune": {"epochs": epochs, "lr": config.proxy_lr, "seed": config.seed,
                            "distillation": "from the reference model", "fidelity": "full"},
        "members": [m.to_dict() for m in members],
        "all_budgets_met_measured": all(r["met_measured"] is not False for m in members for r in m.budgets),
        "versions": versions(),
        "plots": {},
    }

    from autocompress.export.plots import plot_front, plot_policy

    manifest["plots"]["front"] = _rel(plot_front(manifest, history, out / "front.png"), out)
    manifest["plots"]["policy"] = _rel(plot_policy(manifest, setup.space, out / "policy.png"), out)
    write_manifest(manifest, out / MANIFEST_NAME)
    log.info("export written to %s (%d member(s))", out, len(members))
    return manifest


def rebuild(member_dir: str | Path, setup: SearchSetup, *, check: bool = True) -> nn.Module:
    """The exported model of ``member_dir`` (a ``trial-NNNN/`` folder) as a trainable ``nn.Module``.

    Materializes the stored candidate from ``setup``'s reference model and loads
    ``weights.pt`` with ``weights_only=True``; the result is in eval mode. With
    ``check``, its outputs on the probe images stored in ``candidate.json`` must
    match the exported model's (else :class:`ExportError`).
    """
    member_dir = Path(member_dir)
    info_path = member_dir / "candidate.json"
    weights_path = member_dir / "weights.pt"
    for path in (info_path, weights_path):
        if not path.is_file():
            raise ExportError(f"{member_dir}: no {path.name} (not an exported member folder)")
    try:
        info = json.loads(info_path.read_text())
    except json.JSONDecodeError as exc:
        raise ExportError(f"{info_path}: not valid JSON: {exc}") from None
    for key in ("model", "data"):
        want, got = info.get(key), getattr(setup.config, key)
        if want is not None and want != got:
            raise ExportError(f"{info_path}: exported for {key}={want!r}, but the setup has {key}={got!r}")
    candidate = Candidate.from_dict(info["candidate"])
    model = materialize(setup.base_model, candidate, setup.space)
    state = torch.load(weights_path, map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    model.eval()
    probe = info.get("probe")
    if check and probe:
        resolution = probe.get("resolution")
        with torch.no_grad():
            got = model(_probe_images(setup, resolution)[: probe["images"]])
        want = torch.tensor(probe["logits"], dtype=got.dtype)
        if got.shape != want.shape or not torch.allclose(got, want, rtol=1e-4, atol=1e-5):
            diff = (got - want).abs().max().item() if got.shape == want.shape else float("nan")
            raise ExportError(f"{member_dir}: the rebuilt model does not reproduce the exported one's outputs on "
                              f"the probe images (max |diff| {diff:.3g}): weights.pt and the candidate disagree, "
                              "or the reference model differs from the one exported from")
    return model


def load_manifest(path: str | Path) -> dict[str, Any]:
    """A manifest written by :func:`export_front` (the file, or the export directory holding it)."""
    path = Path(path)
    if path.is_dir():
        path = path / MANIFEST_NAME
    if not path.is_file():
        raise ExportError(f"{path}: no such manifest")
    data = json.loads(path.read_text())
    if data.get("format") != MANIFEST_FORMAT:
        raise ExportError(f"{path}: field format: expected {MANIFEST_FORMAT!r}, got {data.get('format')!r}")
    return data


def write_manifest(manifest: dict[str, Any], path: str | Path) -> Path:
    """Atomic write (an interrupted write never leaves half a manifest)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=1, default=_json_default) + "\n")
    os.replace(tmp, path)
    return path


def noise_band(profile: HardwareProfile, model: str) -> tuple[float, str]:
    """The % a measurement may exceed a limit and still count as met, and where the figure comes from.

    The profile's validation noise floor for exactly this model (subset "all"; the
    latest such entry), else :data:`DEFAULT_NOISE_PCT`.
    """
    found = [v for v in profile.validation if list(v.models) == [model] and v.subset == "all"]
    if found:
        v = found[-1]
        return float(v.noise_floor_pct), f"profile {profile.name!r} validation of {v.date}: noise floor for {model}"
    return DEFAULT_NOISE_PCT, f"default ({DEFAULT_NOISE_PCT:g}%): profile {profile.name!r} has no validation for {model}"


def versions() -> dict[str, str]:
    out = {"python": platform.python_version(), "platform": platform.platform()}
    for pkg in ("autocompress", "torch", "onnx", "onnxruntime", "optuna", "numpy"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


# -- selecting trials -------------------------------------------------------------------------------


def _select(study, history: list[TrialRecord], trials: list[int] | None, costs: list[str]) -> list[TrialRecord]:
    if trials is None:
        front = pareto_front(history, costs)
        if not front:
            raise ExportError(f"study {study.study_name!r} has no evaluated trial that meets the budgets "
                              f"({len(history)} finished trial(s)): nothing to export")
        return front
    if not trials:
        raise ExportError("trials: give at least one trial number (or None for the Pareto front)")
    by_number = {t.number: t for t in history}
    all_trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    chosen = []
    for number in trials:
        if isinstance(number, bool) or not isinstance(number, int | np.integer):
            raise ExportError(f"trials: {number!r} is not a trial number")
        number = int(number)
        if number not in all_trials:
            span = f"0..{max(all_trials)}" if all_trials else "none"
            raise ExportError(f"trial {number} does not exist in study {study.study_name!r} (trials: {span})")
        record = by_number.get(number)
        if record is None:
            raise ExportError(f"trial {number} of study {study.study_name!r} was not evaluated "
                              f"(state {all_trials[number].state.name})")
        if not record.feasible:
            over = ", ".join(f"{k} {v:.4g}" for k, v in record.costs.items() if k in costs or k == "latency_ms")
            raise ExportError(f"trial {number} of study {study.study_name!r} broke a budget (predicted {over}): "
                              "it was filtered, never trained")
        if not record.evaluated or record.accuracy is None:
            raise ExportError(f"trial {number} of study {study.study_name!r} was not evaluated")
        if record not in chosen:
            chosen.append(record)
    return chosen


# -- one member ---------------------------------------------------------------------------------------


def _build_member(setup: SearchSetup, record: TrialRecord, out: Path, evaluator: Evaluator, *,
                  seed: int) -> dict[str, Any]:
    config = setup.config
    candidate = record.candidate
    label = f"trial-{record.number:04d}"
    member_dir = out / label
    member_dir.mkdir(parents=True, exist_ok=True)
    c, native_h, _ = setup.data.input_shape
    h, w = setup.space.input_resolution(candidate)
    input_shape = (c, h, w)
    resolution = None if h == native_h else h

    model = materialize(setup.base_model, candidate, setup.space)
    result = evaluator(model, resolution=resolution)
    model.eval()
    test_loader = setup.data.loader("test", batch_size=256, shuffle=False, augment=False, seed=config.seed,
                                    resolution=resolution)
    accuracy_test = evaluate(model, test_loader)
    log.info("%s: val %.4f, test %.4f after %d fine-tune steps (proxy %.4f)", label, result.accuracy,
             accuracy_test, result.fine_tune_steps, record.accuracy)

    torch.save(model.state_dict(), member_dir / "weights.pt")
    probe_x = _probe_images(setup, resolution)
    with torch.no_grad():
        probe_logits = model(probe_x)
    info = {
        "trial": record.number, "candidate": candidate.to_dict(), "model": config.model, "data": config.data,
        "space": config.space or setup.space.name, "input_shape": list(input_shape),
        "study": config.study_name, "storage": config.storage_path,
        "base_weights": setup.base_info.get("path"), "config": json.loads(json.dumps(config.to_dict(), default=str)),
        "rebuild": "autocompress.export.rebuild(<this folder>, autocompress.search.prepare(SearchConfig(**config)))",
        # the model's logits on the first test images: rebuild() checks the rebuilt model reproduces them
        "probe": {"split": "test", "images": int(len(probe_x)), "resolution": resolution,
                  "logits": probe_logits.tolist()},
    }
    (member_dir / "candidate.json").write_text(json.dumps(info, indent=1) + "\n")
    files = {"weights.pt": _rel(member_dir / "weights.pt", out),
             "candidate.json": _rel(member_dir / "candidate.json", out)}

    files["model.onnx"] = _rel(export_onnx(model, input_shape, member_dir / "model.onnx", int8=False), out)
    has_int8 = any(int8_leaves(model).values())
    if has_int8:
        calibration = _calibration_batches(setup, resolution, seed)
        files["model.int8.onnx"] = _rel(export_onnx(model, input_shape, member_dir / "model.int8.onnx", int8=None,
                                                    calibration=calibration), out)
    deployed = files["model.int8.onnx"] if has_int8 and setup.costs.profile.runtime == "onnxruntime" \
        else files["model.onnx"]

    predicted = setup.costs.predict(candidate).to_dict()
    return {
        "label": label, "record": record, "model": model, "dir": label, "input_shape": input_shape,
        "files": files, "deployed_onnx": deployed, "counts": count_model(model, input_shape),
        "predicted": predicted, "accuracy_val": float(result.accuracy), "accuracy_test": float(accuracy_test),
        "fine_tune": {"steps": result.fine_tune_steps, "seconds": round(result.seconds, 2),
                      "train_loss": result.train_loss},
        "onnx_check": _onnx_check(setup, model, out, files, input_shape, resolution, config.seed),
    }


def _probe_images(setup: SearchSetup, resolution: int | None) -> torch.Tensor:
    loader = setup.data.loader("test", batch_size=PROBE_IMAGES, shuffle=False, augment=False, seed=0,
                               resolution=resolution)
    return next(iter(loader))[0]


def _calibration_batches(setup: SearchSetup, resolution: int | None, seed: int) -> list[torch.Tensor]:
    loader = setup.data.loader("train", batch_size=CALIBRATION_BATCH_SIZE, shuffle=True, augment=False, seed=seed,
                               resolution=resolution)
    batches = []
    for x, _ in loader:
        batches.append(x)
        if len(batches) >= CALIBRATION_BATCHES:
            break
    return batches


def _onnx_check(setup: SearchSetup, model: nn.Module, out: Path, files: dict[str, str], input_shape, resolution,
                seed: int) -> dict[str, Any]:
    """Run the exported files in ONNX Runtime: fp32 agreement with PyTorch, and test accuracy of each file."""
    loader = setup.data.loader("test", batch_size=256, shuffle=False, augment=False, seed=seed,
                               resolution=resolution, limit=ONNX_CHECK_LIMIT)
    xs, ys = zip(*loader, strict=True)
    x, y = torch.cat(xs), torch.cat(ys)
    with torch.no_grad():
        reference = deploy_copy(model)(x[:8]).numpy()
    check: dict[str, Any] = {"onnx_check_images": int(len(y))}
    for name, key in (("model.onnx", "fp32"), ("model.int8.onnx", "int8")):
        if name not in files:
            continue
        session = ort_session(out / files[name], threads=1)
        input_name = session.get_inputs()[0].name
        arr = x.numpy().astype(np.float32)
        logits = np.concatenate([session.run(None, {input_name: arr[i:i + 1]})[0] for i in range(len(arr))])
        check[f"onnx_{key}_accuracy_test"] = float((logits.argmax(1) == y.numpy()).mean())
        if key == "fp32":
            check["onnx_fp32_max_abs_diff"] = float(np.abs(logits[:8] - reference).max())
    return check


# -- measuring ----------------------------------------------------------------------------------------


def _measure(runners: dict, profile: HardwareProfile, *, rounds: int, reps: int, sessions: int, seed: int,
             progress: bool) -> tuple[dict[str, dict[str, Any]], str]:
    """Time every runner (``sessions`` sessions each) in one interleaved call, each call paired with the reference.

    ``runners["reference"]`` opens the uncompressed model; every timed call is
    followed by a call of one reference session, and a model's latency is its
    median ratio to the reference times the reference's median over the run
    (see :mod:`autocompress.runtime.timing`: the machine's drift cancels in
    the ratio, which is also what relative budgets compare).
    """
    if profile.runtime not in MEASURABLE_RUNTIMES:
        note = (f"not measured: the profile's runtime {profile.runtime!r} cannot run on this machine "
                f"(measurable: {', '.join(MEASURABLE_RUNTIMES)})")
        log.warning(note)
        return {}, note
    fns = open_sessions(runners, sessions, seed)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=rounds * len(fns), desc="re-measuring latency", leave=False, dynamic_ncols=True)
    try:
        with torch_threads(profile.threads):
            timings: dict[str, Timing] = time_callables(
                fns, rounds=rounds, reps=reps, seed=seed, reference=runners["reference"](),
                progress=(lambda done, total: bar.update(done - bar.n)) if bar is not None else None)
    finally:
        if bar is not None:
            bar.close()
    reference_ms = float(np.median([t.reference_ms for t in timings.values()]))
    out = {}
    for label in runners:
        per_session = [timings[f"{label}#{s}"] for s in range(sessions)]
        values = [t.ratio * reference_ms for t in per_session]
        typical = sorted(per_session, key=lambda t: t.ratio)[sessions // 2]  # the median session's statistics
        out[label] = {
            "latency_ms": across_sessions(values),
            "latency_vs_reference": across_sessions([t.ratio for t in per_session]),
            "latency_median_ms": typical.median_ms,
            "latency_std_ms": typical.std_ms,
            "latency_sessions_ms": values,
            "latency_spread_pct": (max(values) - min(values)) / min(values) * 100 if min(values) > 0 else 0.0,
            "latency_round_medians_ms": list(typical.round_medians_ms),
            "latency_runtime": profile.runtime,
        }
    return out, ""


def _counted(counts) -> dict[str, Any]:
    """What :func:`count_model` counts, under the cost model's names (``macs``: effective, as priced)."""
    return {"size_bytes": counts.size_bytes, "macs": counts.effective_macs, "dense_macs": counts.macs,
            "bitops": counts.bitops, "params": counts.params}


# -- budgets -------------------------------------------------------------------------------------------


def budget_rows(budgets: list[Budget], predicted: dict[str, Any], measured: dict[str, Any],
                reference_measured: dict[str, Any], *, noise_pct: float, energy_method: str,
                timing_note: str = "", device_note: str = "") -> list[dict[str, Any]]:
    """Each budget checked on the prediction and, where measurable, on the measurement.

    Latency: met when measured <= limit * (1 + noise band); a relative latency
    budget's limit is its factor times the *measured* reference. Size, MACs and
    BitOps are counted on the real model (exact, no band); a relative one is
    compared with the counted reference. Energy is modelled (or measured when
    the profile says so); a modelled energy has no measurement here.
    """
    rows = []
    for budget in budgets:
        array, factor = METRICS[budget.metric]
        unit = _unit(budget.metric)
        pred_value = float(predicted[array]) * factor
        met_predicted = pred_value <= budget.limit * (1 + 1e-9)
        row: dict[str, Any] = {"text": budget.text, "metric": budget.metric, "relative": budget.relative,
                               "limit": budget.limit, "predicted": pred_value, "met_predicted": met_predicted,
                               "measured": None, "measured_limit": None, "met_measured": None,
                               "noise_band_pct": None, "note": ""}
        if array == "energy_mj":
            row["energy_method"] = energy_method
            row["note"] = (f"energy is {energy_method}, not measured on this machine: predicted "
                           f"{pred_value:.4g} {unit} ({energy_method}) against the limit {budget.limit:.4g} {unit}")
            rows.append(row)
            continue
        value = measured.get(array)
        ref_value = reference_measured.get(array)
        if value is None or (budget.relative is not None and ref_value is None):
            row["note"] = timing_note or f"not measured ({array} unavailable)"
            rows.append(row)
            continue
        value = float(value) * factor
        if budget.relative is not None:
            limit = budget.relative * float(ref_value) * factor
            basis = f"{budget.relative:g} x measured reference {float(ref_value) * factor:.4g} {unit}"
        else:
            limit = budget.limit
            basis = "the absolute limit"
        band = noise_pct if array == "latency_ms" else 0.0
        met = value <= limit * (1 + band / 100)
        over_pct = (value / limit - 1) * 100 if limit > 0 else math.inf
        row.update(measured=value, measured_limit=limit, met_measured=bool(met), noise_band_pct=band)
        what = "measured" if array == "latency_ms" else "counted"
        if value <= limit:
            row["note"] = f"{what} {value:.4g} {unit} <= {limit:.4g} {unit} ({basis})"
        elif met:
            row["note"] = (f"{what} {value:.4g} {unit} is {over_pct:.1f}% over {limit:.4g} {unit} ({basis}), within "
                           f"the {band:.1f}% noise band: counted as met")
        else:
            band_text = f", more than the {band:.1f}% noise band" if band else " (counted exactly)"
            row["note"] = (f"MISSED: {what} {value:.4g} {unit} exceeds {limit:.4g} {unit} ({basis}) by "
                           f"{over_pct:.1f}%{band_text}; the cost model predicted {pred_value:.4g} {unit}")
        if array == "size_bytes":
            row["note"] += "; counted size keeps BatchNorm unfolded at fp32 (the cost model folds it)"
        if array == "latency_ms" and device_note:
            row["note"] += f"; {device_note}"
        rows.append(row)
    return rows


def _unit(metric: str) -> str:
    return {"latency_ms": "ms", "energy_mj": "mJ", "size_bytes": "B", "size_kb": "KiB", "size_mb": "MiB",
            "macs": "MACs", "flops": "FLOPs", "bitops": "BitOps"}.get(metric, "")


# -- small helpers -------------------------------------------------------------------------------------


def _rel(path: Path, root: Path) -> str:
    return Path(path).resolve().relative_to(Path(root).resolve()).as_posix()


def _maybe_float(value) -> float | None:
    return None if value is None else float(value)


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    return str(value)
