"""Measure a hardware profile on the machine this runs on.

Enumerates the layer signatures that the given model(s) + space(s) can
produce, builds each as a one-layer model in the chosen runtime, and times them
interleaved (warm-up, repetitions, min of round medians). Work goes in chunks;
each finished chunk is appended to ``<out>.partial.jsonl`` and flushed, so an
interrupted run (even SIGKILL) loses at most one chunk and the same command
resumes where it stopped.

This VM's speed moves by +-15% from one chunk (about a second) to the next
(10th-90th percentile of the chunks' anchor ratios), and a chunk's rounds all
fall inside that second. So the whole table is measured in several *passes*,
each in a fresh random order, and every signature keeps its fastest pass:
its value comes from the machine's fast moments, as a whole model's does
when validation times it over minutes, instead of from one draw of its chunk.

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
from autocompress.runtime.timing import Timing, time_callables, torch_callable

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
    passes: int = 2
    rounds: int = 3
    reps: int = 20
    warmup: int = 3
    chunk: int = 48
    sessions: int = 2
    anchors: int = 4
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("passes", "rounds", "reps", "chunk", "sessions"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ProfileError(f"profile settings: {name} must be an integer >= 1, got {value!r}")

    def describe(self) -> str:
        return (f"{self.passes} passes over the whole table, each in its own order and chunk: {self.sessions} "
                f"sessions x {self.rounds} interleaved rounds x {self.reps} timed runs after {self.warmup} warm-up "
                f"runs; value = min over passes and sessions of the min of round medians, rescaled to the "
                f"profile's scale by {self.anchors} anchor signatures timed in every chunk")


def layer_callable(sig: LayerSignature, settings: ProfileSettings) -> Callable[[], object]:
    """A zero-argument function that runs one signature once in the runtime."""
    if settings.runtime == "onnxruntime":
        from autocompress.runtime.onnx_runtime import layer_model, ort_callable, ort_session

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
    """The records of ``<out>.partial.jsonl``: raw (unscaled) entries per pass and anchor timings per chunk."""

    entries: dict[str, dict[int, Entry]] = field(default_factory=dict)  # key -> pass -> entry
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
                done.entries.setdefault(record["key"], {})[int(record.get("pass", 0))] = Entry(**record["entry"])
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
    factor for the whole run, the median over every chunk's anchors: a single
    chunk's anchors carry the speed of that chunk's second, which the passes
    already damp for the entries.
    """
    out = Path(out)
    partial = partial_path(out)
    partial.parent.mkdir(parents=True, exist_ok=True)
    done = _read_partial(partial)
    keys = list(dict.fromkeys(keys))
    total = len(keys) * settings.passes
    finished = sum(len(done.entries.get(k, {})) for k in keys)
    if finished:
        log.info("resuming: %d of %d signature timings (%d passes) already in %s", finished, total,
                 settings.passes, partial)
    started, timed_now = time.perf_counter(), 0
    with partial.open("a") as fh:
        if finished < total and not done.anchor_keys:
            done.anchor_keys = list(anchors) if anchors else pick_anchors(keys, settings.anchors)
            fh.write(json.dumps({"anchor_keys": done.anchor_keys}) + "\n")
        for pass_ in range(settings.passes):
            todo = [k for k in keys if pass_ not in done.entries.get(k, {})]
            rng = np.random.default_rng([settings.seed, pass_])
            todo = [todo[i] for i in rng.permutation(len(todo))]  # mix sizes so drift spreads over all of them
            for start in range(0, len(todo), settings.chunk):
                chunk = todo[start:start + settings.chunk]
                best = _time_chunk(chunk + [a for a in done.anchor_keys if a not in chunk], settings,
                                   seed=settings.seed + 7919 * pass_ + start)
                for key in chunk:
                    entry = Entry(latency_ms=best[key].value_ms, std_ms=best[key].std_ms,
                                  count=best[key].count * settings.sessions)
                    done.entries.setdefault(key, {})[pass_] = entry
                    fh.write(json.dumps({"key": key, "pass": pass_, "entry": entry.model_dump()}) + "\n")
                if done.anchor_keys:
                    done.chunks.append({a: best[a].value_ms for a in done.anchor_keys})
                    fh.write(json.dumps({"chunk_anchors": done.chunks[-1]}) + "\n")
                fh.flush()
                os.fsync(fh.fileno())
                timed_now += len(chunk)
                if progress is not None:
                    elapsed = time.perf_counter() - started
                    progress(finished + timed_now, total, elapsed / timed_now * (total - finished - timed_now))
    raw = {k: _fastest_pass(done.entries[k]) for k in keys}
    if not done.chunks:  # nothing timed (or no anchors): entries stay as measured
        return Measurement(raw, dict(anchors or {}))
    run = {a: float(np.median([c[a] for c in done.chunks])) for a in done.anchor_keys}
    reference = dict(anchors) if anchors else run
    scale = float(np.median([reference[a] / run[a] for a in done.anchor_keys]))
    chunk_ratios = [float(np.median([reference[a] / c[a] for a in done.anchor_keys])) for c in done.chunks]
    entries = {k: e.model_copy(update={"latency_ms": e.latency_ms * scale, "std_ms": e.std_ms * scale})
               for k, e in raw.items()}
    return Measurement(entries, reference, scale, chunk_ratios)


def _time_chunk(keys: list[str], settings: ProfileSettings, *, seed: int) -> dict[str, Timing]:
    """Each signature's fastest session: a session can stay slower than another of the same layer for life."""
    fns = {f"{k}#{s}": layer_callable(LayerSignature.parse(k), settings)
           for k in keys for s in range(settings.sessions)}
    timings = time_callables(fns, rounds=settings.rounds, reps=settings.reps, warmup=settings.warmup, seed=seed)
    return {k: min((timings[f"{k}#{s}"] for s in range(settings.sessions)), key=lambda t: t.value_ms) for k in keys}


def _fastest_pass(passes: dict[int, Entry]) -> Entry:
    """A signature's value from its fastest pass; the count covers every pass."""
    best = min(passes.values(), key=lambda e: e.latency_ms)
    return best.model_copy(update={"count": sum(e.count for e in passes.values())})


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
