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
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass

import numpy as np

from autocompress.hardware.profile import HardwareProfile, this_machine
from autocompress.hardware.signature import LayerSignature
from autocompress.runtime.base import create_runtime, is_registered
from autocompress.runtime.timing import time_callables

log = logging.getLogger(__name__)

#: how far from 1.0 the anchors' speed ratio may be and still count as the profile's machine. The anchors are
#: tiny layers (10-40 us): re-timed minutes after measuring a profile on the same VM they came out at 1.11-1.23x
#: their table values; the machines this is for are 2x off.
TOLERANCE_PCT = 30.0


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

    @property
    def off_speed(self) -> bool:
        """Whether the anchors ran outside the tolerance band around the profile's own timings."""
        return self.speed_ratio is not None and abs(self.speed_ratio - 1.0) * 100 > self.tolerance_pct

    @property
    def matches(self) -> bool:
        """True unless this machine is measurably not the profile's (another CPU, or off speed)."""
        return not (self.off_speed or self.same_cpu is False)

    def summary(self) -> str:
        """One line for logs and reports."""
        if self.speed_ratio is None:
            return f"machine check: not timed ({self.skipped})"
        return (f"machine check: this machine ({self.here}) runs {self.profile}'s {self.anchors} anchor layers at "
                f"{self.speed_ratio:.2f}x their table latency (tolerance ±{self.tolerance_pct:g}%, "
                f"{self.seconds:.1f} s); the profile was measured on {self.profile_device}")

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
    with runtime.measuring():
        timings = time_callables(fns, rounds=rounds, reps=reps, warmup=5, seed=seed)
    ratios = [min(timings[f"{key}#{k}"].value_ms for k in range(sessions)) / reference
              for key, reference in profile.anchors.items() if reference > 0]
    check = MachineCheck(**base, speed_ratio=float(np.median(ratios)) if ratios else None, anchors=len(ratios),
                         seconds=time.perf_counter() - start)
    log.info(check.summary())
    return check
