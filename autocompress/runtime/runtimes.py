"""The runtimes that ship with autocompress: ONNX Runtime and PyTorch eager, both on this CPU.

Registered by name in :mod:`autocompress.runtime.base`; callers get them with
``create_runtime(profile.runtime, threads=profile.threads)``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import ClassVar

import numpy as np
from torch import nn

from autocompress.compress import deploy_copy
from autocompress.hardware.profile import PrecisionRule, ProfileError
from autocompress.hardware.signature import LayerSignature
from autocompress.runtime.base import Opener
from autocompress.runtime.energy_meters import EnergyMeter, rapl_meter
from autocompress.runtime.onnx_export import export_onnx
from autocompress.runtime.onnx_runtime import (
    layer_input,
    layer_model,
    ort_callable,
    ort_session,
)
from autocompress.runtime.timing import torch_callable, torch_threads


class CpuRuntime:
    """What the CPU runtimes share: a thread count, torch's pool held at it, and the RAPL package counter.

    Every measurement runs with torch's intra-op pool at ``threads`` and
    restores it after (:func:`~autocompress.runtime.timing.torch_threads`): torch
    eager computes on that pool, and beside ONNX Runtime (which sets its own
    session threads) it bounds any torch work in the process.
    """

    name: ClassVar[str]
    device: ClassVar[str] = "cpu"
    precisions: ClassVar[dict[str, str]]
    precision_rules: ClassVar[tuple[PrecisionRule, ...]] = ()

    def __init__(self, *, threads: int = 1) -> None:
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise ProfileError(f"{self.name}: threads must be an integer >= 1, got {threads!r}")
        self.threads = threads

    def measuring(self) -> AbstractContextManager[None]:
        return torch_threads(self.threads)

    def energy_meter(self) -> EnergyMeter | None:
        return rapl_meter()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(threads={self.threads})"


class OnnxRuntime(CpuRuntime):
    """ONNX Runtime's CPU execution provider: one-op layer models and exported whole models.

    Sessions come from :func:`~autocompress.runtime.onnx_runtime.ort_session`
    (``threads`` intra-op threads) and run through IO binding
    (:func:`~autocompress.runtime.onnx_runtime.ort_callable`).
    """

    name = "onnxruntime"
    precisions = {"fp32": "ONNX Runtime float32 kernels (MLAS)",
                  "int8": "ONNX Runtime QDQ -> fused int8 kernels (u8 activations, s8 weights)"}
    precision_rules = (PrecisionRule(max_w_bits=8, max_a_bits=8, precision="int8"),)

    def open_layer(self, sig: LayerSignature, *, seed: int = 0) -> Callable[[], object]:
        session = ort_session(layer_model(sig, seed=seed), threads=self.threads)
        return ort_callable(session, layer_input(sig, seed=seed))

    def model_opener(self, model: nn.Module, input_shape: Sequence[int], *, path: Path, seed: int = 0,
                     export: bool = True) -> Opener:
        """Sessions run the file at ``path``: exported there from ``model``, or (``export=False``) already there."""
        x = np.random.default_rng(seed).standard_normal((1, *input_shape)).astype(np.float32)
        exported = export_onnx(model, tuple(input_shape), path) if export else path

        def open_session() -> Callable[[], object]:
            session = ort_session(exported, threads=self.threads)
            return ort_callable(session, {session.get_inputs()[0].name: x})
        return open_session


class TorchEager(CpuRuntime):
    """PyTorch eager mode on float32 kernels: layers as ``nn.Conv2d`` / ``nn.Linear``, models as deployed.

    No quantized kernels: a quantized layer runs as float (``precision_rules`` empty).
    """

    name = "torch-eager"
    precisions = {"fp32": "PyTorch eager float32 (oneDNN / MKL)"}

    def open_layer(self, sig: LayerSignature, *, seed: int = 0) -> Callable[[], object]:
        if sig.precision not in self.precisions:
            raise ProfileError(f"torch eager has no {sig.precision} kernels on this CPU; profile fp32 only")
        if sig.op == "conv":
            layer = nn.Conv2d(sig.in_channels, sig.out_channels, sig.kernel_size, sig.stride, sig.padding,
                              groups=sig.groups)
            return torch_callable(layer, (sig.in_channels, *sig.in_hw), seed=seed)
        layer = nn.Linear(sig.in_channels, sig.out_channels)
        return torch_callable(layer, (sig.in_hw[0], sig.in_channels), seed=seed)

    def model_opener(self, model: nn.Module, input_shape: Sequence[int], *, path: Path, seed: int = 0,
                     export: bool = True) -> Opener:
        """Each session runs the model's deploy copy (masks baked, fake quant stripped); ``path`` is not used."""
        deployed = deploy_copy(model)
        return lambda: torch_callable(deployed, tuple(input_shape), seed=seed)
