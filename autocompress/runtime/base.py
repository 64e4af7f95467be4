"""The :class:`Runtime` protocol and the registry that names runtimes.

A runtime is what the profiler, validation and the exporter time things in:
it opens one layer (a :class:`~autocompress.hardware.signature.LayerSignature`)
or a whole model as a zero-argument callable, says which precisions run on
real kernels, and sets up the threads a measurement runs with. Callers look a
runtime up by the name a profile stores (``profile.runtime``) with
:func:`create_runtime`, so adding one is a module with its class and one entry
in :data:`_BUILTIN` (or a :func:`register_runtime` call from outside).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from autocompress.hardware.profile import PrecisionRule, ProfileError
from autocompress.hardware.signature import LayerSignature

if TYPE_CHECKING:
    from torch import nn

    from autocompress.runtime.energy_meters import EnergyMeter

Opener = Callable[[], Callable[[], object]]


class UnknownRuntimeError(ProfileError):
    """A runtime name that no registered runtime answers to."""


@runtime_checkable
class Runtime(Protocol):
    """One way of running layers and models on this machine, at a fixed thread count."""

    name: str  # the registry name, stored in profiles as ``runtime``
    device: str  # where it computes ("cpu"): which energy counter sees its work
    precisions: Mapping[str, str]  # precision -> the kernels that run it
    precision_rules: Sequence[PrecisionRule]  # which (w_bits, a_bits) run on which precision; else fp32
    threads: int

    def open_layer(self, sig: LayerSignature, *, seed: int = 0) -> Callable[[], object]:
        """A zero-argument callable running one layer of signature ``sig`` once on a seeded input."""

    def model_opener(self, model: nn.Module, input_shape: Sequence[int], *, path: Path, seed: int = 0,
                     export: bool = True) -> Opener:
        """A function that opens a fresh timed session of ``model`` at batch 1 each time it is called.

        Work done once per model (an export to ``path``, or reading the
        artifact already there with ``export=False``) happens here; each
        session is opened by calling the result.
        """

    def measuring(self) -> AbstractContextManager[None]:
        """The context every timed call of this runtime runs in (its threads set, and restored after)."""

    def energy_meter(self) -> EnergyMeter | None:
        """The hardware energy counter that sees this runtime's work, or ``None`` where there is none."""


#: runtimes that ship with autocompress: name -> "module:class", imported on first use
_BUILTIN: dict[str, str] = {
    "onnxruntime": "autocompress.runtime.runtimes:OnnxRuntime",
    "torch-eager": "autocompress.runtime.runtimes:TorchEager",
}
_REGISTRY: dict[str, Callable[..., Runtime] | str] = dict(_BUILTIN)


def register_runtime(name: str, factory: Callable[..., Runtime]) -> Callable[..., Runtime]:
    """Make ``create_runtime(name, threads=...)`` call ``factory(threads=...)``; returns ``factory``."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"runtime name must be a non-empty string, got {name!r}")
    if name in _REGISTRY:
        raise ValueError(f"runtime {name!r} is already registered")
    _REGISTRY[name] = factory
    return factory


def runtime_names() -> list[str]:
    """The names :func:`create_runtime` knows, sorted."""
    return sorted(_REGISTRY)


def is_registered(name: str) -> bool:
    """Whether this machine can measure in the runtime ``name`` (an analytic device, e.g., it cannot)."""
    return name in _REGISTRY


def create_runtime(name: str, *, threads: int = 1) -> Runtime:
    """The runtime registered as ``name``, running with ``threads`` threads."""
    factory = _REGISTRY.get(name)
    if factory is None:
        raise UnknownRuntimeError(f"unknown runtime {name!r}; registered runtimes: {', '.join(runtime_names())}")
    if isinstance(factory, str):
        module, _, attr = factory.partition(":")
        factory = _REGISTRY[name] = getattr(importlib.import_module(module), attr)
    return factory(threads=threads)
