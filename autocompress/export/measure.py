"""What an export measures on this machine: latency of every member beside the reference, each artifact's accuracy.

Kept apart from the exporter's bookkeeping so the runtime that opens sessions
and the meters that read energy plug in here only.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from autocompress.compress import deploy_copy
from autocompress.export.manifest import ArtifactAccuracy
from autocompress.hardware.profile import HardwareProfile
from autocompress.runtime import create_runtime, is_registered, onnx_accuracy, runtime_names
from autocompress.runtime.artifact import onnx_metadata
from autocompress.runtime.energy_meters import measure_energies
from autocompress.runtime.onnx_export import QUANTIZATION_KEY
from autocompress.runtime.onnx_runtime import ort_session
from autocompress.runtime.timing import BLOCK, SETTLE, across_sessions, time_in_passes

log = logging.getLogger(__name__)

REFERENCE = "reference"
#: an int8 file scoring more than this below its fp32 file is reported (top-1, as a fraction)
INT8_LOSS_WARN = 0.01
#: test images on which the fp32 file's logits are compared with the float model's
DIFF_IMAGES = 8


def timing_note(*, sessions: int, rounds: int, reps: int, passes: int) -> str:
    """What :func:`measure_latency` does, for the manifest."""
    return (f"every member and the reference timed together, interleaved: {passes} pass(es) of {sessions} fresh "
            f"session(s) x {rounds} rounds x {reps} runs each, in blocks of {BLOCK} calls each followed by {BLOCK} of "
            f"the reference, every block after {SETTLE} untimed calls; latency = median over every pass's sessions "
            "of the median round ratio to the reference x the reference's median")


def measure_latency(models: Mapping[str, tuple[nn.Module, Sequence[int], Path]], profile: HardwareProfile, *,
                    rounds: int, reps: int, sessions: int, seed: int,
                    progress: bool, passes: int = 1) -> tuple[dict[str, dict[str, Any]], str]:
    """Time every model in ``passes`` interleaved runs of ``sessions`` fresh sessions each; ``(timings by label,
    why not)``.

    ``models``: label -> (model, input shape, its exported ONNX file), with
    :data:`REFERENCE` the uncompressed model. Every timed call is followed by a
    call of one reference session, and a model's latency is its median ratio
    to the reference times the reference's median over the run (see
    :mod:`autocompress.runtime.timing`: the machine's drift cancels in the
    ratio, which is also what relative budgets compare). When the profile's
    runtime cannot run here, nothing is timed and the second value says so.

    Why passes: the ratio cancels drift that slows a model and its reference
    alike, not drift that slows small models more than the big reference, or
    int8 kernels more than float ones. On a shared VM, of three 20-second runs
    of the same CIFAR-10 table back to back, the third put its 15 int8 files a
    median 25% higher against the float reference than the first two did (its
    small float files up to 25%; float files of half the reference or more
    moved 3% at most). A figure from several runs, each with fresh sessions in
    a new order, is the machine's typical one; each pass's own figure is kept
    (``latency_passes_vs_reference``) with their spread.
    """
    if passes < 1 or isinstance(passes, bool):
        raise ValueError(f"passes must be an integer >= 1, got {passes!r}")
    if not is_registered(profile.runtime):
        note = (f"not measured: the profile's runtime {profile.runtime!r} cannot run on this machine "
                f"(measurable: {', '.join(runtime_names())})")
        log.warning(note)
        return {}, note
    runtime = create_runtime(profile.runtime, threads=profile.threads)
    runners = {label: runtime.model_opener(model, shape, path=onnx, seed=seed, export=False)
               for label, (model, shape, onnx) in models.items()}
    bar = None
    if progress:
        from autocompress.progress import progress_bar

        bar = progress_bar(total=passes * rounds * len(runners) * sessions, desc="re-measuring latency", leave=False)
    energies: dict[str, dict[str, Any]] = {}

    def read_energy(fns: dict) -> None:  # energy per call where this machine has the runtime's counter
        energies.update(measure_energies({label: fns[f"{label}#0"] for label in runners}, runtime.energy_meter()))

    try:
        with runtime.measuring():
            runs = time_in_passes(runners, runners[REFERENCE](), passes=passes, sessions=sessions, rounds=rounds,
                                  reps=reps, seed=seed, first_pass=read_energy,
                                  progress=(lambda n, _: bar.update(n - bar.n)) if bar is not None else None)
    finally:
        if bar is not None:
            bar.close()
    reference_ms = float(np.median([t.reference_ms for run in runs for t in run.values()]))
    out = {}
    for label in runners:
        per_pass = [[run[f"{label}#{s}"] for s in range(sessions)] for run in runs]
        per_session = [t for timings in per_pass for t in timings]
        values = [t.ratio * reference_ms for t in per_session]
        pass_ratios = [across_sessions([t.ratio for t in timings]) for timings in per_pass]
        typical = sorted(per_session, key=lambda t: t.ratio)[len(per_session) // 2]  # the median session's statistics
        out[label] = {
            "latency_ms": across_sessions(values),
            "latency_vs_reference": across_sessions([t.ratio for t in per_session]),
            "latency_passes_vs_reference": pass_ratios,
            "latency_pass_spread_pct": (max(pass_ratios) - min(pass_ratios)) / min(pass_ratios) * 100,
            "latency_median_ms": typical.median_ms,
            "latency_std_ms": typical.std_ms,
            "latency_sessions_ms": values,
            "latency_spread_pct": (max(values) - min(values)) / min(values) * 100 if min(values) > 0 else 0.0,
            "latency_round_medians_ms": list(typical.round_medians_ms),
            "latency_runtime": profile.runtime,
            **energies[label],
        }
    return out, ""


def artifact_accuracy(model: nn.Module, onnx_files: Mapping[str, Path],
                      batches: Sequence[tuple[torch.Tensor, torch.Tensor]], *, subset: str) -> ArtifactAccuracy:
    """Test top-1 of ``model`` (as scored: eval mode, fake quantization as trained) and of each ONNX file
    in ONNX Runtime (:func:`~autocompress.runtime.onnx_accuracy`), all on the same ``batches``.

    ``onnx_files``: precision (``fp32``, ``int8``) -> file; ``subset`` says which
    test images ``batches`` hold. Also records how far the fp32 file's logits are
    from the float model's on the first images, the int8 file's quantizer settings,
    and a note (and a warning) when the int8 file loses more than
    :data:`INT8_LOSS_WARN` against the fp32 file.
    """
    if "fp32" not in onnx_files:
        raise ValueError(f"onnx_files needs an 'fp32' file, got {sorted(onnx_files)}")
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for x, y in batches:
            correct += int((model(x).argmax(1) == y).sum())
            total += len(y)
    scores = {key: onnx_accuracy(path, batches) for key, path in onnx_files.items()}
    x = torch.cat([b[0] for b in batches])[:DIFF_IMAGES]
    with torch.no_grad():
        reference = deploy_copy(model)(x).numpy()
    session = ort_session(onnx_files["fp32"], threads=1)
    name = session.get_inputs()[0].name
    logits = np.concatenate([session.run(None, {name: x[i:i + 1].numpy()})[0] for i in range(len(x))])
    int8 = scores.get("int8")
    note = ""
    if int8 is not None and scores["fp32"] - int8 > INT8_LOSS_WARN:
        note = (f"the int8 file scores {int8:.4f}, {100 * (scores['fp32'] - int8):.1f} points below the fp32 file "
                f"({scores['fp32']:.4f}) on this CPU")
        log.warning("%s: %s", onnx_files["int8"], note)
    return ArtifactAccuracy(
        images=total, subset=subset, torch=correct / total, onnx_fp32=scores["fp32"], onnx_int8=int8,
        fp32_max_abs_logit_diff=float(np.abs(logits - reference).max()),
        int8_quantization=(json.loads(onnx_metadata(onnx_files["int8"])[QUANTIZATION_KEY])
                           if "int8" in onnx_files else None),
        note=note,
    )


def counted(counts) -> dict[str, Any]:
    """What :func:`~autocompress.counting.count_model` counts, under the cost model's names
    (``macs``: effective, as priced)."""
    return {"size_bytes": counts.size_bytes, "macs": counts.effective_macs, "dense_macs": counts.macs,
            "bitops": counts.bitops, "params": counts.params}
