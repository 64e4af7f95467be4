"""Hardware energy counters, and energy per call measured with them.

:func:`rapl_meter` (Linux powercap, Intel/AMD package domains) and
:func:`nvml_meter` (NVIDIA, through ``pynvml``) build an :class:`EnergyMeter`
where this machine exposes one (:func:`detect_energy_counters` lists them);
:func:`measure_energy_j` runs a callable under a meter and
:func:`measure_energies` does it for every callable of a measurement, labelling
each figure ``"measured:rapl"`` / ``"measured:nvml"``. Without a counter the
figures come from the profile's energy model (``autocompress.hardware.energy``),
labelled as modelled there.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

log = logging.getLogger(__name__)

POWERCAP = "/sys/class/powercap"


@runtime_checkable
class EnergyMeter(Protocol):
    """A hardware energy counter: ``start()``, run something, ``stop()`` -> joules consumed in between."""

    method: str  # "measured:rapl" | "measured:nvml"

    def start(self) -> None: ...

    def stop(self) -> float: ...


# top-level RAPL zones only: "intel-rapl:0" (not sub-zones "intel-rapl:0:0", not the "intel-rapl-mmio:0"
# duplicate of the package some kernels add). AMD Zen exposes its package counter under the same driver name.
_RAPL_ZONE = re.compile(r"^intel-rapl:\d+$")


@dataclass(frozen=True)
class _RaplDomain:
    path: Path
    max_range_uj: int

    def read_uj(self) -> int:
        return int((self.path / "energy_uj").read_text().strip())


def _rapl_package_domains(path: str | os.PathLike[str]) -> list[_RaplDomain]:
    root = Path(path)
    if not root.is_dir():
        return []
    domains = []
    for zone in sorted(root.iterdir()):
        if not _RAPL_ZONE.match(zone.name):
            continue
        try:
            name = (zone / "name").read_text().strip()
            if not name.startswith("package"):
                continue
            domain = _RaplDomain(zone, int((zone / "max_energy_range_uj").read_text().strip()))
            domain.read_uj()  # energy_uj is root-only on many kernels (CVE-2020-8694): check we can read it
        except (OSError, ValueError) as err:
            log.debug("RAPL zone %s unusable: %s", zone, err)
            continue
        domains.append(domain)
    return domains


@dataclass
class RaplMeter:
    """Sum of the RAPL package domains' ``energy_uj`` (CPU package: cores, caches, uncore; not DRAM).

    ``energy_uj`` wraps to 0 after ``max_energy_range_uj``; one wrap per start/stop interval is handled,
    so keep an interval shorter than a wrap (minutes at full power on common parts).
    """

    domains: list[_RaplDomain]
    method: str = "measured:rapl"
    _start_uj: list[int] | None = field(default=None, repr=False)

    def start(self) -> None:
        self._start_uj = [d.read_uj() for d in self.domains]

    def stop(self) -> float:
        if self._start_uj is None:
            raise RuntimeError("RaplMeter.stop() called before start()")
        total_uj = 0
        for domain, before in zip(self.domains, self._start_uj, strict=True):
            after = domain.read_uj()
            total_uj += after - before if after >= before else domain.max_range_uj - before + after
        self._start_uj = None
        return total_uj / 1e6


def rapl_meter(path: str | os.PathLike[str] | None = None) -> RaplMeter | None:
    """A meter over the readable RAPL package domains under ``path`` (default :data:`POWERCAP`), or ``None``."""
    domains = _rapl_package_domains(POWERCAP if path is None else path)
    return RaplMeter(domains) if domains else None


@dataclass
class NvmlMeter:
    """``nvmlDeviceGetTotalEnergyConsumption`` (mJ since driver load; Volta and newer) of one GPU."""

    handle: Any
    nvml: Any  # the pynvml module
    method: str = "measured:nvml"
    _start_mj: int | None = field(default=None, repr=False)

    def start(self) -> None:
        self._start_mj = self.nvml.nvmlDeviceGetTotalEnergyConsumption(self.handle)

    def stop(self) -> float:
        if self._start_mj is None:
            raise RuntimeError("NvmlMeter.stop() called before start()")
        end = self.nvml.nvmlDeviceGetTotalEnergyConsumption(self.handle)
        start, self._start_mj = self._start_mj, None
        return (end - start) / 1e3


def _nvml() -> Any | None:
    """The initialised ``pynvml`` module, or ``None`` (not installed, no driver); never raises."""
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except Exception as err:  # NVMLError subclasses; a missing driver library too
        log.debug("NVML unavailable: %s", err)
        return None
    return pynvml


def _nvml_energy_handle(nvml: Any, device_index: int) -> Any | None:
    """Handle of GPU ``device_index`` if its energy counter works (Volta and newer), else ``None``."""
    try:
        handle = nvml.nvmlDeviceGetHandleByIndex(device_index)
        nvml.nvmlDeviceGetTotalEnergyConsumption(handle)
    except Exception as err:  # NVMLError_NotSupported, _InvalidArgument, ...
        log.debug("NVML energy counter unavailable for GPU %d: %s", device_index, err)
        return None
    return handle


def nvml_meter(device_index: int = 0) -> NvmlMeter | None:
    """A meter on GPU ``device_index`` through ``pynvml``; ``None`` when pynvml, the driver, the GPU or
    its energy counter is unavailable."""
    nvml = _nvml()
    handle = None if nvml is None else _nvml_energy_handle(nvml, device_index)
    return None if handle is None else NvmlMeter(handle=handle, nvml=nvml)


def detect_energy_counters(powercap_path: str | os.PathLike[str] = POWERCAP) -> list[str]:
    """Energy counters this machine exposes and we can read, e.g.
    ``["rapl:/sys/class/powercap/intel-rapl:0", "nvml:GPU 0 NVIDIA H100 80GB HBM3"]``; ``[]`` if none."""
    found = [f"rapl:{d.path}" for d in _rapl_package_domains(powercap_path)]
    nvml = _nvml()
    if nvml is not None:
        try:
            count = nvml.nvmlDeviceGetCount()
        except Exception as err:
            log.debug("NVML device count failed: %s", err)
            count = 0
        for index in range(count):
            handle = _nvml_energy_handle(nvml, index)
            if handle is None:
                continue
            try:
                name = nvml.nvmlDeviceGetName(handle)
            except Exception:
                name = "unknown"
            found.append(f"nvml:GPU {index} {name.decode() if isinstance(name, bytes) else name}")
    return found


def measure_energy_j(fn: Callable[[], object], meter: EnergyMeter, *, min_seconds: float = 1.0,
                     idle_power_w: float | None = None, warmup_calls: int = 1) -> tuple[float, int]:
    """Run ``fn`` repeatedly under ``meter`` until ``min_seconds`` have passed: (joules per call, calls).

    The counter measures the whole package / board, so **idle (static) power is included** unless
    ``idle_power_w`` is given, in which case ``idle_power_w * elapsed`` is subtracted (measure it
    separately, e.g. over a ``time.sleep``). Anything else running on the machine is counted too.
    ``fn`` must block until its work is done (on CUDA: synchronize inside it). ``warmup_calls`` run
    before the meter starts. Counters update every ~1 ms (RAPL) to ~100 ms (NVML): keep ``min_seconds``
    well above that.
    """
    if not min_seconds > 0:
        raise ValueError(f"min_seconds must be positive, got {min_seconds!r}")
    if idle_power_w is not None and not idle_power_w >= 0:
        raise ValueError(f"idle_power_w must be non-negative, got {idle_power_w!r}")
    if warmup_calls < 0:
        raise ValueError(f"warmup_calls must be non-negative, got {warmup_calls!r}")
    for _ in range(warmup_calls):
        fn()
    calls = 0
    meter.start()
    t0 = time.perf_counter()
    while True:
        fn()
        calls += 1
        elapsed = time.perf_counter() - t0
        if elapsed >= min_seconds:
            break
    joules = meter.stop()
    if idle_power_w is not None:
        joules -= idle_power_w * elapsed
        if joules < 0:
            log.warning("energy after subtracting idle power %.3g W is negative (%.3g J over %.3g s); "
                        "the idle estimate is too high or the counter too coarse; reporting 0",
                        idle_power_w, joules, elapsed)
            joules = 0.0
    return joules / calls, calls


def measure_energies(fns: Mapping[str, Callable[[], object]], meter: EnergyMeter | None, *,
                     seconds: float = 1.0) -> dict[str, dict[str, Any]]:
    """Energy per call of every callable, one after the other: label -> ``{"energy_mj", "energy_method"}``.

    Each runs under ``meter`` for ``seconds`` (idle power included: the
    counter sees the whole package or board while it runs). Without a meter
    nothing is measured and every label gets ``{"energy_method": "none"}``, so
    a caller records that the figure it reports is the model's.
    """
    if meter is None:
        return {label: {"energy_method": "none"} for label in fns}
    out = {}
    for label, fn in fns.items():
        joules, _ = measure_energy_j(fn, meter, min_seconds=seconds)
        out[label] = {"energy_mj": joules * 1e3, "energy_method": meter.method}
    return out
