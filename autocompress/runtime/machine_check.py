"""Is this machine the profile's? Time the profile's anchor layers here and compare them with its table.

A measured profile is valid for the machine it was measured on. The same CPU
name has run the same ONNX Runtime model 2x faster on one VM than on another,
and then every absolute figure the cost model gives is off by that factor
while nothing says so. Every measured profile keeps a few *anchor* signatures,
the scale all its entries are on; timing them here takes about a second and
gives this machine's speed relative to the profile's device.

Relative budgets (``latency<=0.5x``) are ratios to the reference priced on the
same table, so a uniform speed difference cancels in them; absolute ones
(``latency_ms<=2``) are priced for the profile's device, and a measurement here
only says something about that device after dividing by the speed ratio.

The anchors are small layers whose weights stay in the core's own cache. A
model whose weights do not (a VGG-like network with a 4096->512 Linear head
holds 13 MB of float weights) reads them from the shared cache or from memory
on every call, and on a shared VM that bandwidth moves with the neighbours: on
the VM of the committed results such a model ran anywhere from 0.65 to 1.13 ms
within four minutes while ResNet-20 stayed within 0.44-0.61 ms, and 16% slower
in one validation run than in the one eleven minutes before
(``experiments/generalization/memory_state.py``). So the check also times a
*memory probe*, :class:`WeightStream`: two Linear layers reading one input, 16 MB
of weights no core cache holds. Its time against the anchors' says how memory
runs against compute here compared with when the profile was measured (the
profile keeps the probe on its table's scale, ``memory_probe_ms``), and its
spread over the check's rounds how steady memory is right now.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from autocompress.hardware.profile import HardwareProfile, this_machine
from autocompress.hardware.signature import LayerSignature
from autocompress.runtime.base import create_runtime, is_registered
from autocompress.runtime.timing import time_callables

log = logging.getLogger(__name__)

#: how far from 1.0 the anchors' speed ratio may be and still count as the profile's machine. The anchors are
#: tiny layers (10-40 us): re-timed minutes after measuring a profile on the same VM they came out at 1.11-1.23x
#: their table values; the machines this is for are 2x off.
TOLERANCE_PCT = 30.0
#: how far the memory probe may run from the anchors' pace at the profile's measurement (memory_ratio), and how
#: widely its rounds may spread, before models whose weights miss the caches are said to time off their prediction
MEMORY_TOLERANCE_PCT = 15.0
#: float weight bytes per multiply-accumulate above which a model's latency follows memory more than compute.
#: ResNet-20 and ResNet-56 hold 0.03 (3x3 convolutions reuse each weight over a whole map) and their latency held
#: within 1% between runs; CIFAR MobileNetV2 holds 0.10 and validated as well as they do; the VGG-like user
#: model, at 0.24 (a 4096->512 Linear head, convolutions on 4x4 maps), moved 16%
MEMORY_BOUND_BYTES_PER_MAC = 0.15


def memory_bound(weight_bytes: float, macs: float) -> bool:
    """Whether a model reads so many weight bytes per multiply-accumulate that memory's pace sets its latency."""
    return macs > 0 and weight_bytes / macs > MEMORY_BOUND_BYTES_PER_MAC


class WeightStream(nn.Module):
    """The memory probe: ``copies`` Linear(4096 -> 512) layers on one input, summed. Each call reads
    ``copies`` x 8 MB of float weights and does little arithmetic on them, so its time is memory bandwidth.
    Its input is a 4096x1x1 map (what runtimes time models on), flattened."""

    features, outputs = 4096, 512
    input_shape = (features, 1, 1)

    def __init__(self, copies: int = 2, seed: int = 0):
        super().__init__()
        with torch.random.fork_rng(devices=[]):  # seeded, and the caller's generator left as it was
            torch.manual_seed(seed)
            self.layers = nn.ModuleList(nn.Linear(self.features, self.outputs) for _ in range(copies))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(x, 1)
        return torch.stack([layer(x) for layer in self.layers]).sum(0)

    @property
    def weight_mb(self) -> float:
        return sum(p.numel() for p in self.parameters()) * 4 / 1e6


@dataclass(frozen=True)
class MachineCheck:
    """This machine against the profile's device: the CPUs' names and the anchors' speed ratio."""

    profile: str
    profile_device: str  # "name (cpu)" as the profile records it
    here: str  # this machine's CPU
    same_cpu: bool | None  # None where the profile names no CPU
    speed_ratio: float | None  # median over anchors of (latency here / the profile's table); < 1: faster here
    anchors: int = 0
    seconds: float = 0.0
    tolerance_pct: float = TOLERANCE_PCT
    skipped: str = ""  # why nothing was timed (an analytic or imported profile, a runtime this machine lacks)
    memory_probe_ms: float | None = None  # the memory probe here (fastest session's minimum round median)
    #: the probe here against the profile's, over the anchors' speed_ratio: > 1, memory runs slower against
    #: compute than when the profile was measured. None where the profile records no probe
    memory_ratio: float | None = None
    memory_spread_pct: float | None = None  # (slowest - fastest) / median of the probe's round medians, in %
    memory_tolerance_pct: float = MEMORY_TOLERANCE_PCT

    @property
    def off_speed(self) -> bool:
        """Whether the anchors ran outside the tolerance band around the profile's own timings."""
        return self.speed_ratio is not None and abs(self.speed_ratio - 1.0) * 100 > self.tolerance_pct

    @property
    def memory_off_pace(self) -> bool:
        """Whether memory runs off its pace against compute when the profile was measured, past the tolerance."""
        return self.memory_ratio is not None and abs(self.memory_ratio - 1.0) * 100 > self.memory_tolerance_pct

    @property
    def memory_unsteady(self) -> bool:
        """Whether the memory probe's rounds spread wider than the tolerance."""
        return self.memory_spread_pct is not None and self.memory_spread_pct > self.memory_tolerance_pct

    @property
    def memory_off(self) -> bool:
        """Either of the two: models whose weights do not stay in the core's cache then time off their prediction."""
        return self.memory_off_pace or self.memory_unsteady

    @property
    def matches(self) -> bool:
        """True unless this machine is measurably not the profile's (another CPU, or off speed)."""
        return not (self.off_speed or self.same_cpu is False)

    def summary(self) -> str:
        """One line for logs and reports."""
        if self.speed_ratio is None:
            return f"machine check: not timed ({self.skipped})"
        memory = ""
        if self.memory_probe_ms is not None:
            against = ("" if self.memory_ratio is None else
                       f", {self.memory_ratio:.2f}x its pace against the anchors when the profile was measured")
            memory = (f"; the memory probe ran at {self.memory_probe_ms:.3f} ms{against}, rounds spread "
                      f"{self.memory_spread_pct:.0f}%")
        return (f"machine check: this machine ({self.here}) runs {self.profile}'s {self.anchors} anchor layers at "
                f"{self.speed_ratio:.2f}x their table latency (tolerance ±{self.tolerance_pct:g}%, "
                f"{self.seconds:.1f} s){memory}; the profile was measured on {self.profile_device}")

    def memory_warning(self) -> str:
        """What to tell a user when memory runs off the profile's pace or unsteadily; empty when it does not.
        Re-profiling does not help where the cause is the neighbours on a shared machine."""
        if not self.memory_off:
            return ""
        what = []
        if self.memory_off_pace:
            what.append(f"memory runs at {self.memory_ratio:.2f}x its pace against compute when {self.profile} "
                        f"was measured")
        if self.memory_unsteady:
            what.append(f"the memory probe's rounds spread {self.memory_spread_pct:.0f}% within seconds")
        return (f"{' and '.join(what)} (tolerance ±{self.memory_tolerance_pct:g}%): models whose weights do not "
                "fit in a core's cache (several MB of float weights, a large Linear head) time off their predicted "
                "latency by about as much here, and unsteadily; models whose weights fit (ResNet-20) do not. Compare "
                "such models only as ratios to a reference timed interleaved with them")

    def warning(self, model: str) -> str:
        """What to tell a user whose machine is not the profile's, naming the command that re-profiles it;
        empty when it is."""
        if self.matches:
            return ""
        if self.off_speed:
            what = (f"this machine runs {self.profile}'s anchor layers at {self.speed_ratio:.2f}x their table "
                    f"latency (outside ±{self.tolerance_pct:g}%): every absolute latency the cost model predicts is "
                    f"off by about that factor here")
        else:
            what = (f"this machine ({self.here}) is not the profile's device ({self.profile_device}); its anchor "
                    f"layers ran at {self.speed_ratio:.2f}x their table latency"
                    if self.speed_ratio is not None else
                    f"this machine ({self.here}) is not the profile's device ({self.profile_device})")
        out = f"{self.profile}-this-machine.json"  # a new file: a shipped profile is never overwritten
        return (f"{what}. Relative budgets (latency<=0.5x) still rank candidates as on that device; absolute ones "
                f"are priced for it, and a measurement here is rescaled by this ratio before it is checked against "
                f"them. To price for this machine, re-profile it (about 3 minutes for a zoo model's space): "
                f"autocompress profile measure --models {model} --out {out} && "
                f"autocompress profile validate {out} --models {model} --out {out}   then search with --profile {out}")

    def to_dict(self) -> dict:
        return asdict(self)


def check_machine(profile: HardwareProfile, *, rounds: int = 3, reps: int = 20, sessions: int = 2,
                  seed: int = 0) -> MachineCheck:
    """Time ``profile``'s anchor layers on this machine in its runtime and compare them with its table.

    Timed as the profiler times a table entry: ``sessions`` sessions per layer, interleaved rounds, and the
    fastest session's minimum round median counts (a table entry is a minimum too; a median here would read
    high against it).

    Profiles that cannot be re-timed here (analytic or imported ones, a runtime this
    machine does not have, no anchors) are returned with ``skipped`` set and no ratio.
    """
    here = this_machine()
    device = profile.device
    same_cpu = None if not (device.cpu and here.cpu) else device.cpu == here.cpu
    base = dict(profile=profile.name, profile_device=f"{device.name} ({device.cpu or 'CPU not recorded'})",
                here=here.cpu or here.name, same_cpu=same_cpu)
    if profile.kind != "measured":
        return MachineCheck(**{**base, "same_cpu": None}, speed_ratio=None,
                            skipped=f"a {profile.kind} profile: nothing to re-time")
    if not profile.anchors:
        return MachineCheck(**base, speed_ratio=None, skipped="the profile records no anchor layers")
    if not is_registered(profile.runtime):
        return MachineCheck(**base, speed_ratio=None, skipped=f"runtime {profile.runtime!r} is not available here")
    start = time.perf_counter()
    runtime = create_runtime(profile.runtime, threads=profile.threads)
    fns = {f"{key}#{k}": runtime.open_layer(LayerSignature.parse(key), seed=seed)
           for key in profile.anchors for k in range(sessions)}
    with tempfile.TemporaryDirectory(prefix="autocompress-memory-probe-") as tmp:
        probe = WeightStream(seed=seed).eval()
        opener = runtime.model_opener(probe, WeightStream.input_shape, path=Path(tmp) / "probe.onnx", seed=seed)
        fns.update({f"memory-probe#{k}": opener() for k in range(sessions)})
        with runtime.measuring():
            timings = time_callables(fns, rounds=rounds, reps=reps, warmup=5, seed=seed)
    ratios = [min(timings[f"{key}#{k}"].value_ms for k in range(sessions)) / reference
              for key, reference in profile.anchors.items() if reference > 0]
    speed = float(np.median(ratios)) if ratios else None
    probe_ms = min(timings[f"memory-probe#{k}"].value_ms for k in range(sessions))
    rounds_ms = [m for k in range(sessions) for m in timings[f"memory-probe#{k}"].round_medians_ms]
    memory_ratio = (probe_ms / (profile.memory_probe_ms * speed)
                    if profile.memory_probe_ms and speed else None)
    check = MachineCheck(**base, speed_ratio=speed, anchors=len(ratios), seconds=time.perf_counter() - start,
                         memory_probe_ms=probe_ms, memory_ratio=memory_ratio,
                         memory_spread_pct=100 * (max(rounds_ms) - min(rounds_ms)) / float(np.median(rounds_ms)))
    log.info(check.summary())
    return check


#: how near its table a validation waits for the anchors to run before it times anything and between its rounds,
#: % (:class:`Settler`): of seven held-out validations on one shared VM, the four whose check before the timing read
#: 1.00x came out 91-97% within +-10%, the three that read 1.18-1.23x (a slow spell, well inside TOLERANCE_PCT) 56-90%
SETTLE_PCT = 10.0


def in_slow_spell(check: MachineCheck, within_pct: float) -> bool:
    """Whether the anchors ran more than ``within_pct`` off their table on a machine that is the profile's (within
    TOLERANCE_PCT): what :class:`Settler` waits out and a validation warns about when it did not pass."""
    return check.speed_ratio is not None and not check.off_speed and abs(check.speed_ratio - 1.0) * 100 > within_pct


class Settler:
    """Checks the machine until the profile's anchors run within ``within_pct`` of their table, before each stage
    of a timing, waiting out slow spells from one budget of ``wait_s`` seconds; each call returns the last check.

    A shared machine goes through slow spells of minutes: a validation that times in one times its models off
    the state the table was measured in, and models whose weights leave the cache drift most. A spell can
    begin after the start, so a validation checks again between its rounds (a check takes a fraction of a
    second). Only a machine that is the profile's (within TOLERANCE_PCT) is waited for; one far off it will not
    come back by waiting. ``checks`` records every stage's last speed ratio and how long it waited.
    """

    def __init__(self, profile: HardwareProfile, *, within_pct: float = SETTLE_PCT, wait_s: float = 300.0,
                 poll_s: float = 30.0, seed: int = 0, sleep: Callable[[float], None] = time.sleep,
                 check: Callable[..., MachineCheck] = check_machine):
        self.profile, self.within_pct, self.poll_s, self.seed, self.sleep = profile, within_pct, poll_s, seed, sleep
        self.check = check  # called as check(profile, seed=seed)
        self.left_s = wait_s
        self.checks: list[dict] = []

    def __call__(self, stage: str = "start") -> MachineCheck:
        check = self.check(self.profile, seed=self.seed)
        waited = 0.0
        while in_slow_spell(check, self.within_pct) and self.left_s >= self.poll_s:  # polls left in the budget
            log.info("%s: anchors at %.2fx their table: waiting %.0f s for the machine to settle", stage,
                     check.speed_ratio, self.poll_s)
            self.sleep(self.poll_s)
            self.left_s -= self.poll_s
            waited += self.poll_s
            check = self.check(self.profile, seed=self.seed)
        self.checks.append({"stage": stage, "speed_ratio": check.speed_ratio, "waited_s": waited,
                            "slow": in_slow_spell(check, self.within_pct)})
        return check


def with_memory_probe(profile: HardwareProfile, check: MachineCheck) -> HardwareProfile:
    """``profile`` keeping the memory probe of ``check`` (timed just after measuring it) on its table's scale:
    what later checks compare memory's pace with. Unchanged where the check timed no probe."""
    if check.memory_probe_ms is None or not check.speed_ratio:
        return profile
    return profile.model_copy(update={"memory_probe_ms": check.memory_probe_ms / check.speed_ratio})
