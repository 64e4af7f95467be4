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

Layers are opened in the runtime registered under ``settings.runtime``
(:func:`~autocompress.runtime.base.create_runtime`). Where the machine has the
energy counter that sees that runtime's work (RAPL for the CPU runtimes),
each signature also runs under it once and its entry records the energy per
call and the counter (``measured:rapl``); otherwise the profile's energy is
modelled, and says so.
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

from autocompress.hardware.energy import HOROWITZ_45NM
from autocompress.hardware.profile import (
    EnergySpec,
    Entry,
    HardwareProfile,
    ProfileError,
    Provenance,
    this_machine,
)
from autocompress.hardware.signature import LayerSignature
from autocompress.runtime.base import (
    Runtime,
    UnknownRuntimeError,
    create_runtime,
    is_registered,
    runtime_names,
)
from autocompress.runtime.energy_meters import EnergyMeter, measure_energies
from autocompress.runtime.timing import Timing, time_callables

log = logging.getLogger(__name__)


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
    #: seconds each signature runs under the machine's energy counter, where it has one (0: no energy)
    energy_seconds: float = 0.2

    def __post_init__(self) -> None:
        for name in ("passes", "rounds", "reps", "chunk", "sessions", "threads"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ProfileError(f"profile settings: {name} must be an integer >= 1, got {value!r}")
        if not self.energy_seconds >= 0:
            raise ProfileError(f"profile settings: energy_seconds must be >= 0, got {self.energy_seconds!r}")
        if not is_registered(self.runtime):  # fails here, before anything is measured
            raise UnknownRuntimeError(f"unknown runtime {self.runtime!r}; registered runtimes: "
                                      f"{', '.join(runtime_names())}")

    def open_runtime(self) -> Runtime:
        """The registered runtime these settings measure in."""
        return create_runtime(self.runtime, threads=self.threads)

    def describe(self) -> str:
        return (f"{self.passes} passes over the whole table, each in its own order and chunk: {self.sessions} "
                f"sessions x {self.rounds} interleaved rounds x {self.reps} timed runs after {self.warmup} warm-up "
                f"runs; value = min over passes and sessions of the min of round medians, rescaled to the "
                f"profile's scale by {self.anchors} anchor signatures timed in every chunk")


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

    @property
    def energy_method(self) -> str | None:
        """The counter that measured the entries' energy (``"measured:rapl"``), or None if none did."""
        methods = {e.energy_method for e in self.entries.values() if e.energy_method is not None}
        if len(methods) > 1:
            raise ProfileError(f"entries measured with different energy counters {sorted(methods)}: "
                               "measure a profile's energy on one kind of counter")
        return methods.pop() if methods else None


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
    meter: EnergyMeter | None = None,
) -> Measurement:
    """Time every signature, resuming from ``<out>.partial.jsonl``; where there is a meter, its energy too.

    ``meter``: the energy counter read (default: the runtime's, where this
    machine exposes one). Each signature runs under it for
    ``settings.energy_seconds`` once, in the first pass that times it; its
    entry then carries ``energy_mj`` (per call, idle power included) and the
    counter in ``energy_method``. Without a counter entries carry no energy and
    the profile's energy model prices them.

    ``anchors``: reference anchor latencies of the profile being extended; the
    run's entries are multiplied by the median of reference / this run's anchor
    timings. Without them this run's anchor medians become the reference. One
    factor for the whole run, the median over every chunk's anchors: a single
    chunk's anchors carry the speed of that chunk's second, which the passes
    already damp for the entries.
    """
    out = Path(out)
    runtime = settings.open_runtime()
    if settings.energy_seconds == 0:
        meter = None
    elif meter is None:
        meter = runtime.energy_meter()
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
                unmetered = [] if meter is None else [k for k in chunk if not any(
                    e.energy_mj is not None for e in done.entries.get(k, {}).values())]
                best, energies = _time_chunk(chunk + [a for a in done.anchor_keys if a not in chunk], runtime,
                                             settings, seed=settings.seed + 7919 * pass_ + start,
                                             meter=meter, metered=unmetered)
                for key in chunk:
                    entry = Entry(latency_ms=best[key].value_ms, std_ms=best[key].std_ms,
                                  count=best[key].count * settings.sessions, **energies.get(key, {}))
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


def _time_chunk(keys: list[str], runtime: Runtime, settings: ProfileSettings, *, seed: int,
                meter: EnergyMeter | None, metered: list[str]) -> tuple[dict[str, Timing], dict[str, dict]]:
    """Each signature's fastest session (a session can stay slower than another of the same layer for life),
    and the energy per call of the ``metered`` signatures' first sessions, measured after the timing."""
    fns = {f"{k}#{s}": runtime.open_layer(LayerSignature.parse(k), seed=settings.seed)
           for k in keys for s in range(settings.sessions)}
    with runtime.measuring():
        timings = time_callables(fns, rounds=settings.rounds, reps=settings.reps, warmup=settings.warmup, seed=seed)
        energies = measure_energies({k: fns[f"{k}#0"] for k in metered}, meter, seconds=settings.energy_seconds)
    best = {k: min((timings[f"{k}#{s}"] for s in range(settings.sessions)), key=lambda t: t.value_ms) for k in keys}
    return best, {k: e for k, e in energies.items() if "energy_mj" in e}


def _fastest_pass(passes: dict[int, Entry]) -> Entry:
    """A signature's latency from its fastest pass, its energy from the pass that measured it; the count
    covers every pass."""
    best = min(passes.values(), key=lambda e: e.latency_ms)
    metered = next((e for e in passes.values() if e.energy_mj is not None), best)
    return best.model_copy(update={"count": sum(e.count for e in passes.values()), "energy_mj": metered.energy_mj,
                                   "energy_method": metered.energy_method})


def energy_spec(method: str | None, settings: ProfileSettings) -> EnergySpec:
    """How a measured profile's energy is obtained: the counter that measured its entries, else the model.

    The 45 nm table is kept either way: it prices the entries a counter did not
    measure (a profile extended on a machine without one).
    """
    table = HOROWITZ_45NM.to_dict()
    if method is None:
        return EnergySpec(method="modelled", table=table,
                          notes="no energy counter on this machine: energy is modelled from 45 nm per-operation "
                                "and per-byte figures, not measured")
    counter = {"measured:rapl": "the CPU package counter (RAPL)", "measured:nvml": "the GPU's counter (NVML)"}
    return EnergySpec(method=method, table=table,
                      notes=f"energy per call measured with {counter.get(method, method)} while each layer ran "
                            f"for {settings.energy_seconds:g} s, idle power included; entries without a "
                            f"measurement are modelled from 45 nm per-operation and per-byte figures")


def build_profile(
    name: str,
    measured: Measurement,
    settings: ProfileSettings,
    *,
    command: str,
    versions: dict[str, str],
    device: str | None = None,
) -> HardwareProfile:
    runtime = settings.open_runtime()
    return HardwareProfile(
        name=name, kind="measured", device=this_machine(device or ""), runtime=runtime.name,
        threads=settings.threads, batch_size=1, repetitions=settings.describe(),
        precisions=dict(runtime.precisions), precision_rules=list(runtime.precision_rules),
        sparse_kernels=False, interpolation="channels", entries=measured.entries, anchors=measured.anchors,
        energy=energy_spec(measured.energy_method, settings),
        provenance=Provenance(command=command, date=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                              versions=versions),
    )
