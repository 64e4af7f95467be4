"""Measure a hardware profile on the machine this runs on.

Enumerates the layer signatures that the given model(s) + space(s) can
produce, builds each as a one-layer model in the chosen runtime, and times them
interleaved (warm-up, repetitions, min of round medians). Work goes in chunks;
each finished chunk is appended to ``<out>.partial.jsonl`` and flushed, so an
interrupted run (even SIGKILL) loses at most one chunk and the same command
resumes where it stopped.

A shared machine changes speed over minutes and hours (here whole models ran
30% apart between two afternoons), and a table assembled from runs on
different days then mixes scales. Every chunk therefore also times a few fixed
*anchor* signatures, and a run's entries are rescaled by how far the anchors
moved from their reference values, the ones stored in the profile when it was
first measured. An extension run weeks later lands on the same scale.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from autocompress.hardware.energy import HOROWITZ_45NM
from autocompress.hardware.profile import (
    EnergySpec,
    Entry,
    HardwareProfile,
    PrecisionRule,
    ProfileError,
    Provenance,
    this_machine,
)
from autocompress.hardware.signature import LayerSignature
from autocompress.hardware.timing import Timing, time_callables, torch_callable

log = logging.getLogger(__name__)

RUNTIMES = {
    "onnxruntime": {"precisions": {"fp32": "ONNX Runtime float32 kernels (MLAS)",
                                   "int8": "ONNX Runtime QDQ -> fused int8 kernels (u8 activations, s8 weights)"},
                    "rules": [PrecisionRule(max_w_bits=8, max_a_bits=8, precision="int8")]},
    "torch-eager": {"precisions": {"fp32": "PyTorch eager float32 (oneDNN / MKL)"}, "rules": []},
}


@dataclass(frozen=True)
class ProfileSettings:
    runtime: str = "onnxruntime"
    threads: int = 1
    rounds: int = 5
    reps: int = 20
    warmup: int = 3
    chunk: int = 48
    sessions: int = 2
    anchors: int = 4
    seed: int = 0

    def describe(self) -> str:
        return (f"{self.sessions} sessions x {self.rounds} interleaved rounds x {self.reps} timed runs after "
                f"{self.warmup} warm-up runs; value = min over sessions of the min of round medians, "
                f"rescaled to the profile's scale by {self.anchors} anchor signatures timed in every chunk")


def layer_callable(sig: LayerSignature, settings: ProfileSettings) -> Callable[[], object]:
    """A zero-argument function that runs one signature once in the runtime."""
    if settings.runtime == "onnxruntime":
        from autocompress.hardware.onnx_runtime import layer_model, ort_callable, ort_session

        session = ort_session(layer_model(sig, seed=settings.seed), threads=settings.threads)
        rng = np.random.default_rng(settings.seed)
        shape = (1, sig.in_channels, *sig.in_hw) if sig.op == "conv" else (sig.in_hw[0], sig.in_channels)
        name = session.get_inputs()[0].name
        return ort_callable(session, {name: rng.standard_normal(shape).astype(np.float32)})
    if settings.runtime == "torch-eager":
        torch.set_num_threads(settings.threads)  # the profile's thread count, not torch's default
        if sig.precision != "fp32":
            raise ProfileError(f"torch eager has no {sig.precision} kernels on this CPU; profile fp32 only")
        if sig.op == "conv":
            layer = torch.nn.Conv2d(sig.in_channels, sig.out_channels, sig.kernel_size, sig.stride, sig.padding,
                                    groups=sig.groups)
            return torch_callable(layer, (sig.in_channels, *sig.in_hw))
        layer = torch.nn.Linear(sig.in_channels, sig.out_channels)
        return torch_callable(layer, (sig.in_hw[0], sig.in_channels))
    raise ProfileError(f"unknown runtime {settings.runtime!r}; known: {sorted(RUNTIMES)}")


def partial_path(out: Path) -> Path:
    """Where finished chunks of an interrupted measurement are kept."""
    return out.with_name(out.name + ".partial.jsonl")


@dataclass
class Measurement:
    """What a profiling run produced."""

    entries: dict[str, Entry]  # on the reference scale
    anchors: dict[str, float]  # anchor signature -> reference latency (ms): the scale every entry is on
    scale: float = 1.0  # what this run's timings were multiplied by: reference / this run's anchors
    chunk_ratios: list[float] = field(default_factory=list)  # per chunk: reference / its anchors (spread: noise)


def pick_anchors(keys: Iterable[str], n: int) -> list[str]:
    """``n`` signatures spread over the range of MACs (small layers drift differently from big ones)."""
    ordered = sorted(dict.fromkeys(keys), key=lambda k: (LayerSignature.parse(k).macs, k))
    if n <= 0 or not ordered:
        return []
    picks = [ordered[min(len(ordered) - 1, int((i + 0.5) * len(ordered) / n))] for i in range(n)]
    return list(dict.fromkeys(picks))


@dataclass
class _Partial:
    """The records of ``<out>.partial.jsonl``: raw (unscaled) entries and anchor timings per chunk."""

    entries: dict[str, Entry] = field(default_factory=dict)
    anchor_keys: list[str] = field(default_factory=list)
    chunks: list[dict[str, float]] = field(default_factory=list)


def _read_partial(path: Path) -> _Partial:
    """What an interrupted run finished; a torn last line (killed mid-write) is ignored."""
    done = _Partial()
    if not path.exists():
        return done
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
            if "anchor_keys" in record:
                done.anchor_keys = [str(k) for k in record["anchor_keys"]]
            elif "chunk_anchors" in record:
                done.chunks.append({str(k): float(v) for k, v in record["chunk_anchors"].items()})
            else:
                done.entries[record["key"]] = Entry(**record["entry"])
        except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
            log.warning("%s: skipping an unreadable line (interrupted write)", path)
    return done


def measure_signatures(
    keys: Iterable[str],
    out: str | Path,
    settings: ProfileSettings,
    *,
    anchors: dict[str, float] | None = None,
    progress: Callable[[int, int, float], None] | None = None,
) -> Measurement:
    """Time every signature, resuming from ``<out>.partial.jsonl``.

    ``anchors``: reference anchor latencies of the profile being extended; the
    run's entries are multiplied by the median of reference / this run's anchor
    timings. Without them this run's anchor medians become the reference. One
    factor for the whole run, taken over every chunk's anchors, because drift
    within minutes is small and a single chunk's anchors are noisy.
    """
    out = Path(out)
    partial = partial_path(out)
    partial.parent.mkdir(parents=True, exist_ok=True)
    done = _read_partial(partial)
    todo = [k for k in dict.fromkeys(keys) if k not in done.entries]
    total = len(done.entries) + len(todo)
    if done.entries:
        log.info("resuming: %d of %d signatures already measured in %s", len(done.entries), total, partial)
    rng = np.random.default_rng(settings.seed)
    order = list(rng.permutation(len(todo)))  # mix sizes so drift spreads over all of them
    todo = [todo[i] for i in order]
    started = time.perf_counter()
    with partial.open("a") as fh:
        if todo and not done.anchor_keys:
            done.anchor_keys = list(anchors) if anchors else pick_anchors(todo, settings.anchors)
            fh.write(json.dumps({"anchor_keys": done.anchor_keys}) + "\n")
        for start in range(0, len(todo), settings.chunk):
            chunk = todo[start:start + settings.chunk]
            timed = chunk + [a for a in done.anchor_keys if a not in chunk]
            # a session can stay slower than another of the same model for its whole life: take the fastest
            fns = {f"{k}#{s}": layer_callable(LayerSignature.parse(k), settings)
                   for k in timed for s in range(settings.sessions)}
            timings: dict[str, Timing] = time_callables(fns, rounds=settings.rounds, reps=settings.reps,
                                                        warmup=settings.warmup, seed=settings.seed + start)
            best = {k: min((timings[f"{k}#{s}"] for s in range(settings.sessions)), key=lambda t: t.value_ms)
                    for k in timed}
            for key in chunk:
                done.entries[key] = Entry(latency_ms=best[key].value_ms, std_ms=best[key].std_ms,
                                          count=best[key].count * settings.sessions)
                fh.write(json.dumps({"key": key, "entry": done.entries[key].model_dump()}) + "\n")
            if done.anchor_keys:
                done.chunks.append({a: best[a].value_ms for a in done.anchor_keys})
                fh.write(json.dumps({"chunk_anchors": done.chunks[-1]}) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
            if progress is not None:
                done_now = start + len(chunk)
                elapsed = time.perf_counter() - started
                progress(len(done.entries), total, elapsed / done_now * (len(todo) - done_now))
    if not done.chunks:  # nothing timed (or no anchors): entries stay as measured
        return Measurement(done.entries, dict(anchors or {}))
    run = {a: float(np.median([c[a] for c in done.chunks])) for a in done.anchor_keys}
    reference = dict(anchors) if anchors else run
    scale = float(np.median([reference[a] / run[a] for a in done.anchor_keys]))
    chunk_ratios = [float(np.median([reference[a] / c[a] for a in done.anchor_keys])) for c in done.chunks]
    entries = {k: e.model_copy(update={"latency_ms": e.latency_ms * scale, "std_ms": e.std_ms * scale})
               for k, e in done.entries.items()}
    return Measurement(entries, reference, scale, chunk_ratios)


def build_profile(
    name: str,
    measured: Measurement,
    settings: ProfileSettings,
    *,
    command: str,
    versions: dict[str, str],
    device: str | None = None,
) -> HardwareProfile:
    runtime = RUNTIMES[settings.runtime]
    return HardwareProfile(
        name=name, kind="measured", device=this_machine(device or ""), runtime=settings.runtime,
        threads=settings.threads, batch_size=1, repetitions=settings.describe(),
        precisions=runtime["precisions"], precision_rules=runtime["rules"],
        sparse_kernels=False, interpolation="channels", entries=measured.entries, anchors=measured.anchors,
        energy=EnergySpec(method="modelled", table=HOROWITZ_45NM.to_dict(),
                          notes="no energy counter on this machine: energy is modelled from 45 nm per-operation "
                                "and per-byte figures, not measured"),
        provenance=Provenance(command=command, date=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                              versions=versions),
    )
