"""Pareto set -> real artifacts, re-measured: weights, plan, ONNX (fp32 and int8), a manifest and plots.

``export_front(setup, study, out_dir)`` takes the feasible Pareto front of a
study (or the trials named), and for each member:

1. materializes its candidate from the reference model (the exact model the
   trial scored), fine-tunes it longer with distillation ("full" fidelity) at
   the candidate's input resolution, and measures val and test accuracy;
2. saves ``weights.pt`` (the state_dict), ``plan.json`` (the
   :class:`~autocompress.compress.CompressionPlan` that rebuilds its structure
   with no data: :func:`~autocompress.export.rebuild`), ``probe.pt`` (a few test
   images and the model's logits on them) and ``candidate.json`` (candidate,
   trial number and the search's configuration);
3. exports ``model.onnx`` (float) and, when any layer is <= 8 bits for weights
   and activations, ``model.int8.onnx`` (QDQ, calibrated on real training
   images at the candidate's resolution, quantized with the settings that keep
   accuracy on this CPU: :func:`~autocompress.runtime.onnx_export.quantization_settings`);
   both carry in their metadata how to feed them
   (:mod:`autocompress.export.preprocessing`: resize, scaling, mean/std), as
   does the manifest;
4. scores the PyTorch model and each ONNX file in ONNX Runtime on the same
   test images (``artifact_accuracy``), so an artifact that lost accuracy shows it;
5. counts size, MACs and BitOps on the real model (:mod:`autocompress.counting`).

Then all members **and the uncompressed reference** are timed together
(:func:`~autocompress.export.measure.measure_latency`), so a relative budget
such as ``latency<=0.5x`` compares a measurement with a measurement. Every
budget is checked twice (:mod:`autocompress.export.budgets`); a measured miss
is written out plainly in the member's ``note``.
"""

from __future__ import annotations

import copy
import json
import logging
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from torch import nn

from autocompress.base_model import builder_kwargs
from autocompress.compress import PLAN_NAME, CompressionPlan, materialize
from autocompress.counting import ModelCounts, count_model
from autocompress.export.budgets import budget_rows, noise_band
from autocompress.export.calibration import calibration_batches
from autocompress.export.manifest import (
    MANIFEST_NAME,
    ArtifactAccuracy,
    ExportedMember,
    FineTuneInfo,
    Manifest,
    Preprocessing,
    ProfileInfo,
    ReferenceInfo,
    StudyInfo,
    TimingInfo,
    plain,
    write_manifest,
)
from autocompress.export.measure import (
    REFERENCE,
    artifact_accuracy,
    counted,
    measure_latency,
    timing_note,
)
from autocompress.export.preprocessing import preprocessing
from autocompress.export.rebuild import INFO_NAME, PROBE_NAME, WEIGHTS_NAME, rebuild, save_probe
from autocompress.export.screen import screen_front
from autocompress.export.select import select_trials
from autocompress.files import write_json
from autocompress.hardware.profile import this_machine
from autocompress.runtime import is_registered
from autocompress.runtime.artifact import PREPROCESSING_KEY
from autocompress.runtime.onnx_export import MODEL_INPUT, export_onnx, int8_leaves
from autocompress.search.api import SearchSetup
from autocompress.search.study import TrialRecord, records
from autocompress.train import Evaluator, FitConfig, evaluate
from autocompress.versions import versions

log = logging.getLogger(__name__)

#: test images every artifact is scored on: the whole test split of mnist5k (1,000) and CIFAR-10 (10,000), a
#: seeded subset of larger ones (ONNX Runtime runs the batch-1 files one image at a time)
ACCURACY_TEST_LIMIT = 10_000
#: test images whose logits probe.pt keeps, so rebuild() can prove the round trip
PROBE_IMAGES = 4


@dataclass
class _Reference:
    """The uncompressed model as exported, before it is timed."""

    model: nn.Module
    input_shape: tuple[int, int, int]
    files: dict[str, str]
    counts: ModelCounts
    accuracy_test: float
    same_fine_tune_val: float
    same_fine_tune_test: float
    preprocessing: Preprocessing
    artifact_accuracy: ArtifactAccuracy


@dataclass
class _Built:
    """One member fine-tuned, saved and exported, before it is timed."""

    record: TrialRecord
    label: str
    model: nn.Module
    input_shape: tuple[int, int, int]
    files: dict[str, str]
    deployed_onnx: str
    counts: ModelCounts
    predicted: dict[str, Any]
    accuracy_val: float
    accuracy_test: float
    fine_tune: dict[str, Any]
    preprocessing: Preprocessing
    artifact_accuracy: ArtifactAccuracy


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
    passes: int = 3,
    screen: bool | None = None,
    seed: int = 0,
    progress: bool = True,
) -> Manifest:
    """Export the study's feasible Pareto front (or ``trials``) to ``out_dir``; returns the manifest.

    ``final_epochs``: the longer distillation fine-tune (default ``config.final_epochs``).
    ``rounds``/``reps``/``sessions``/``passes``: the interleaved latency measurement (every
    member and the reference, ``sessions`` runtime sessions each in each of ``passes`` runs, their median
    kept). ``screen``: choose the front again on latency measured here before fine-tuning
    (:func:`~autocompress.export.screen.screen_front`; None: where this machine is the profile's
    device). Writes ``manifest.json``, ``front.png``, ``policy.png``, ``screening.png`` (when screened), the
    reference's ``reference/model.onnx`` and one ``trial-NNNN/`` folder per member.
    """
    config = setup.config
    if sessions < 1 or isinstance(sessions, bool):
        raise ValueError(f"sessions must be an integer >= 1, got {sessions!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    history = records(study)
    if trials is None:
        chosen, screening = screen_front(setup, study, history, screen=screen, seed=seed, progress=progress)
    else:
        chosen, screening = select_trials(study, history, trials, list(config.objective_costs)), None
    epochs = config.final_epochs if final_epochs is None else final_epochs
    evaluator = final_evaluator(setup, final_epochs=epochs, progress=progress)
    log.info("exporting %d model(s) of study %r to %s: trials %s", len(chosen), study.study_name, out,
             [t.number for t in chosen])

    reference = export_reference(setup, evaluator, out)
    built = [build_member(setup, record, out, evaluator, seed=seed) for record in chosen]
    models = {REFERENCE: (reference.model, reference.input_shape, out / reference.files["model.onnx"])}
    models |= {b.label: (b.model, b.input_shape, out / b.deployed_onnx) for b in built}
    timings, not_timed = measure_latency(models, setup.costs.profile, rounds=rounds, reps=reps, sessions=sessions,
                                         passes=passes, seed=seed, progress=progress)
    timing = _timing_info(setup, rounds=rounds, reps=reps, sessions=sessions, passes=passes, seed=seed,
                          not_timed=not_timed)
    reference_measured = {**counted(reference.counts), **timings.get(REFERENCE, {})}
    members = [_member_entry(setup, b, {**counted(b.counts), **timings.get(b.label, {})}, reference_measured, timing)
               for b in built]
    manifest = Manifest(
        date=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        study=StudyInfo(name=study.study_name, storage=config.storage_path, trials=len(history),
                        evaluated=sum(t.evaluated for t in history), filtered=sum(not t.feasible for t in history),
                        selected="given" if trials is not None else "pareto",
                        objective_costs=list(config.objective_costs)),
        config=plain(config.to_dict()),
        base_model=plain(setup.base_info),
        profile=_profile_info(setup),
        energy_method=setup.costs.profile.energy.method,
        measured_on=this_machine().model_dump(),
        timing=timing,
        budgets=[str(b) for b in setup.budgets],
        reference=_reference_info(setup, reference, reference_measured),
        final_fine_tune=FineTuneInfo(epochs=epochs, lr=config.proxy_lr, seed=config.seed,
                                     distillation="from the reference model", fidelity="full"),
        members=members,
        screening=screening,
        all_budgets_met_measured=all(r.met_measured is not False for m in members for r in m.budgets),
        versions=versions(),
    )
    _plot(manifest, history, setup, out)
    write_manifest(manifest, out / MANIFEST_NAME)
    log.info("export written to %s (%d member(s))", out, len(members))
    return manifest


def final_evaluator(setup: SearchSetup, *, final_epochs: float | None = None, progress: bool = True) -> Evaluator:
    """The members' final fine-tune: distillation from the reference on the whole train split, ``final_epochs``
    (default ``config.final_epochs``) at the proxy's learning rate and the search's seed. Baselines that are to
    compare like with like are given this one."""
    config = setup.config
    epochs = config.final_epochs if final_epochs is None else final_epochs
    fit = FitConfig(epochs=epochs, lr=config.proxy_lr, seed=config.seed, progress=progress)
    return Evaluator(teacher=setup.base_model, data=setup.data, fit=fit, fidelity="full", device=config.device)


# -- the reference and the members ----------------------------------------------------------------------


def export_reference(setup: SearchSetup, evaluator: Evaluator, out: Path) -> _Reference:
    """The uncompressed model's ONNX file, counts and test accuracy (of the model and of its ONNX file), and the
    same after the members' final fine-tune."""
    ref_dir = out / "reference"
    ref_dir.mkdir(exist_ok=True)
    model = setup.base_model.eval()
    native = setup.data.input_shape
    feed = feed_of(setup, native)
    onnx_path = export_onnx(model, native, ref_dir / "model.onnx", int8=False, metadata=feed_metadata(feed))
    files = {"model.onnx": _rel(onnx_path, out)}
    device = setup.config.device  # evaluate() hands the model back on the CPU, where it is exported and timed
    accuracy_test = evaluate(model, setup.data.loader("test", batch_size=256), device=device)
    batches, subset = scoring_batches(setup, None, setup.config.seed)
    scored = artifact_accuracy(model, {"fp32": onnx_path}, batches, subset=subset)
    # the reference given the members' final fine-tuning budget too, so accuracy compares like with like
    same_budget = copy.deepcopy(model)
    same_val = evaluator(same_budget).accuracy
    same_test = evaluate(same_budget.eval(), setup.data.loader("test", batch_size=256), device=device)
    return _Reference(model=model, input_shape=native, files=files, counts=count_model(model, native),
                      accuracy_test=float(accuracy_test), same_fine_tune_val=float(same_val),
                      same_fine_tune_test=float(same_test), preprocessing=feed, artifact_accuracy=scored)


def build_member(setup: SearchSetup, record: TrialRecord, out: Path, evaluator: Evaluator, *, seed: int) -> _Built:
    """Materialize, fine-tune and evaluate one trial; save its weights, plan and probe; export its ONNX files."""
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
    accuracy_test = evaluate(model, test_loader, device=config.device)  # back on the CPU for saving and ONNX
    log.info("%s: val %.4f, test %.4f after %d fine-tune steps (proxy %.4f)", label, result.accuracy,
             accuracy_test, result.fine_tune_steps, record.accuracy)

    saved = _save_member(setup, record, model, member_dir, input_shape, resolution)
    files = {name: _rel(path, out) for name, path in saved.items()}
    feed = feed_of(setup, input_shape)
    metadata = feed_metadata(feed)
    files["model.onnx"] = _rel(export_onnx(model, input_shape, member_dir / "model.onnx", int8=False,
                                           metadata=metadata), out)
    onnx_files = {"fp32": out / files["model.onnx"]}
    if any(int8_leaves(model).values()):
        calibration = calibration_batches(setup, resolution, seed)
        files["model.int8.onnx"] = _rel(export_onnx(model, input_shape, member_dir / "model.int8.onnx", int8=None,
                                                    calibration=calibration, metadata=metadata), out)
        onnx_files["int8"] = out / files["model.int8.onnx"]
    profile = setup.costs.profile  # an analytic profile's runtime is no registered one: it deploys the float file
    runs_int8 = is_registered(profile.runtime) and "int8" in profile.precisions
    deployed = files["model.int8.onnx"] if "int8" in onnx_files and runs_int8 else files["model.onnx"]
    batches, subset = scoring_batches(setup, resolution, config.seed)
    scored = artifact_accuracy(model, onnx_files, batches, subset=subset)
    log.info("%s: test top-1 on %d images: torch %.4f, ONNX fp32 %.4f%s", label, scored.images, scored.torch,
             scored.onnx_fp32, "" if scored.onnx_int8 is None else f", ONNX int8 {scored.onnx_int8:.4f}")
    return _Built(
        record=record, label=label, model=model, input_shape=input_shape, files=files, deployed_onnx=deployed,
        counts=count_model(model, input_shape), predicted=plain(setup.costs.predict(candidate).to_dict()),
        accuracy_val=float(result.accuracy), accuracy_test=float(accuracy_test),
        fine_tune={"steps": result.fine_tune_steps, "seconds": round(result.seconds, 2),
                   "train_loss": result.train_loss},
        preprocessing=feed, artifact_accuracy=scored,
    )


def _save_member(setup: SearchSetup, record: TrialRecord, model: nn.Module, member_dir: Path,
                 input_shape: tuple[int, int, int], resolution: int | None) -> dict[str, Path]:
    """weights.pt, probe.pt, plan.json (checked by rebuilding from it) and candidate.json; returns the files."""
    config = setup.config
    files = {WEIGHTS_NAME: member_dir / WEIGHTS_NAME, PROBE_NAME: member_dir / PROBE_NAME}
    torch.save(model.state_dict(), files[WEIGHTS_NAME])
    probe_x = probe_images(setup, resolution)
    save_probe(model, probe_x, files[PROBE_NAME])
    if setup.base_info.get("source") == "given":
        log.warning("%s: no %s: the reference model was given as a module, not built by a named builder",
                    member_dir.name, PLAN_NAME)
    else:
        data = setup.data
        plan = CompressionPlan.create(model=config.model, input_shape=data.input_shape, space=setup.space,
                                      model_kwargs=builder_kwargs(config.model, data.input_shape, data.num_classes),
                                      candidate=record.candidate)
        files[PLAN_NAME] = plan.save(member_dir / PLAN_NAME)
        rebuild(member_dir)  # the plan and the weights must reproduce the probe outputs; a mismatch is a bug
    info = {
        "trial": record.number, "candidate": record.candidate.to_dict(), "model": config.model, "data": config.data,
        "space": config.space or setup.space.name, "input_shape": list(input_shape),
        "study": config.study_name, "storage": config.storage_path, "base_weights": setup.base_info.get("path"),
        "config": plain(config.to_dict()),
        "rebuild": "autocompress.export.rebuild(<this folder>): plan.json + weights.pt, no data"
                   if PLAN_NAME in files else "materialize(<the given model>, candidate, space) + weights.pt",
        # the model's logits on the first test images: rebuild() checks the rebuilt model reproduces them
        "probe": {"split": "test", "images": int(len(probe_x)), "resolution": resolution, "file": PROBE_NAME},
    }
    files[INFO_NAME] = member_dir / INFO_NAME
    write_json(info, files[INFO_NAME])
    return files


def probe_images(setup: SearchSetup, resolution: int | None) -> torch.Tensor:
    """The first test images, in order and not augmented."""
    loader = setup.data.loader("test", batch_size=PROBE_IMAGES, shuffle=False, augment=False, seed=0,
                               resolution=resolution)
    return next(iter(loader))[0]


def scoring_batches(setup: SearchSetup, resolution: int | None,
                  seed: int) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], str]:
    """The test images every artifact is scored on (not augmented), in batches, and which they are."""
    loader = setup.data.loader("test", batch_size=256, shuffle=False, augment=False, seed=seed,
                               resolution=resolution, limit=ACCURACY_TEST_LIMIT)
    total = len(setup.data.test_y)
    subset = (f"the whole test split ({total} images)" if loader.num_samples == total else
              f"a seeded subset of {loader.num_samples} of the {total} test images (seed {seed})")
    return list(loader), subset


def feed_of(setup: SearchSetup, input_shape: tuple[int, int, int]) -> Preprocessing:
    """How to feed a model taking ``input_shape``: the data pipeline's steps from a raw image."""
    data = setup.data
    return preprocessing(raw_shape=data.input_shape, input_shape=input_shape, mean=data.mean, std=data.std,
                         input_name=MODEL_INPUT, data_spec=setup.config.data)


def feed_metadata(feed: Preprocessing) -> dict[str, str]:
    """The ONNX ``metadata_props`` entry that carries ``feed``."""
    return {PREPROCESSING_KEY: json.dumps(feed.model_dump(mode="json"))}


# -- the manifest's parts ---------------------------------------------------------------------------------


def _timing_info(setup: SearchSetup, *, rounds: int, reps: int, sessions: int, passes: int, seed: int,
                 not_timed: str) -> TimingInfo:
    profile = setup.costs.profile
    noise_pct, noise_source = noise_band(profile, setup.config.model, setup.space.graph.input_shape)
    machine = setup.machine  # prepare() timed the profile's anchors here
    device_note = ""
    if not machine.matches:
        device_note = (f"latency measured on this machine ({machine.here}), not on the profile's device "
                       f"({machine.profile_device})")
        if machine.speed_ratio is not None:
            device_note += (f"; the profile's anchor layers ran here at {machine.speed_ratio:.2f}x their table "
                            f"latency, and absolute latency budgets are checked on measured / {machine.speed_ratio:.2f}")
        log.warning(device_note)
    return TimingInfo(runtime=profile.runtime, threads=profile.threads, rounds=rounds, reps=reps, sessions=sessions,
                      passes=passes, seed=seed, measured=not not_timed,
                      note=not_timed or timing_note(sessions=sessions, rounds=rounds, reps=reps, passes=passes),
                      noise_band_pct=noise_pct, noise_band_source=noise_source, device_note=device_note,
                      speed_ratio=None if machine.matches else machine.speed_ratio)


def _member_entry(setup: SearchSetup, b: _Built, measured: dict[str, Any], reference_measured: dict[str, Any],
                  timing: TimingInfo) -> ExportedMember:
    """The member's manifest row: its budgets checked on prediction and measurement, and a one-line verdict."""
    rows = budget_rows(setup.budgets, b.predicted, measured, reference_measured, noise_pct=timing.noise_band_pct,
                       energy_method=b.predicted.get("energy_method", "none"),
                       timing_note="" if timing.measured else timing.note, device_note=timing.device_note,
                       speed_ratio=timing.speed_ratio)
    missed = [r.text for r in rows if r.met_measured is False]
    unmeasured = [r.text for r in rows if r.met_measured is None]
    if missed:
        note = f"MISSED on measurement: {', '.join(missed)} (see budgets)"
        log.warning("trial %d: %s", b.record.number, note)
    else:
        note = "every measurable budget met on measurement"
        if unmeasured:
            note += f"; not measurable here: {', '.join(unmeasured)}"
    return ExportedMember(
        trial=b.record.number, candidate=b.record.candidate.to_dict(), accuracy_proxy=float(b.record.accuracy),
        accuracy_val=b.accuracy_val, accuracy_test=b.accuracy_test, predicted=b.predicted, measured=plain(measured),
        budgets=rows, files=b.files, dir=b.label, input_shape=list(b.input_shape), fine_tune=plain(b.fine_tune),
        note=note, artifact_accuracy=b.artifact_accuracy, preprocessing=b.preprocessing,
    )


def _profile_info(setup: SearchSetup) -> ProfileInfo:
    profile = setup.costs.profile
    return ProfileInfo(name=profile.name, kind=profile.kind, runtime=profile.runtime, threads=profile.threads,
                       batch_size=profile.batch_size, device=profile.device.model_dump(),
                       energy_method=profile.energy.method, energy_notes=profile.energy.notes)


def _reference_info(setup: SearchSetup, reference: _Reference, measured: dict[str, Any]) -> ReferenceInfo:
    val = setup.base_info.get("val_accuracy")
    return ReferenceInfo(accuracy_val=None if val is None else float(val), accuracy_test=reference.accuracy_test,
                         accuracy_val_same_fine_tune=reference.same_fine_tune_val,
                         accuracy_test_same_fine_tune=reference.same_fine_tune_test,
                         predicted=plain(setup.reference), measured=plain(measured), files=reference.files,
                         input_shape=list(reference.input_shape), artifact_accuracy=reference.artifact_accuracy,
                         preprocessing=reference.preprocessing)


def _plot(manifest: Manifest, history: list[TrialRecord], setup: SearchSetup, out: Path) -> None:
    from autocompress.export.plots import plot_front, plot_policy, plot_screening

    manifest.plots["front"] = _rel(plot_front(manifest, history, out / "front.png"), out)
    manifest.plots["policy"] = _rel(plot_policy(manifest, setup.space, out / "policy.png"), out)
    if manifest.screening is not None and manifest.screening.trials:
        manifest.plots["screening"] = _rel(plot_screening(manifest, out / "screening.png"), out)


def _rel(path: Path, root: Path) -> str:
    return Path(path).resolve().relative_to(Path(root).resolve()).as_posix()
