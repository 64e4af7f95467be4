"""The Runtime contract, run by every registered runtime: a runtime added to the registry is tested here."""

from __future__ import annotations

import pytest
import torch

from autocompress.hardware.signature import LayerSignature
from autocompress.runtime import (
    Runtime,
    UnknownRuntimeError,
    create_runtime,
    is_registered,
    register_runtime,
    runtime_names,
)
from autocompress.runtime.base import _REGISTRY
from autocompress.runtime.timing import time_callables
from tests.conftest import tiny_bn_cnn
from tests.helpers import make_zone

CONV = LayerSignature("conv", 8, 16, (3, 3), (1, 1), (1, 1), 1, (8, 8), "fp32", 0.0)
DEPTHWISE = LayerSignature("conv", 16, 16, (3, 3), (2, 2), (1, 1), 16, (8, 8), "fp32", 0.0)
LINEAR = LayerSignature("linear", 32, 10, (1, 1), (1, 1), (0, 0), 1, (1, 1), "fp32", 0.0)


@pytest.fixture(params=runtime_names())
def runtime(request) -> Runtime:
    return create_runtime(request.param, threads=1)


def test_describes_itself(runtime):
    assert isinstance(runtime, Runtime) and is_registered(runtime.name) and runtime.threads == 1
    assert runtime.device == "cpu"
    assert "fp32" in runtime.precisions and all(isinstance(v, str) and v for v in runtime.precisions.values())
    # every precision a rule sends layers to runs on the runtime's own kernels
    assert {rule.precision for rule in runtime.precision_rules} <= set(runtime.precisions)


@pytest.mark.parametrize("sig", [CONV, DEPTHWISE, LINEAR], ids=["conv", "depthwise", "linear"])
def test_opens_a_layer_in_every_precision_it_reports(runtime, sig):
    for precision in runtime.precisions:
        fn = runtime.open_layer(LayerSignature(**{**sig.__dict__, "precision": precision}), seed=0)
        with runtime.measuring():
            fn()
            timing = time_callables({"layer": fn}, rounds=1, reps=3, warmup=1)["layer"]
        assert timing.count == 3 and timing.value_ms > 0


def test_refuses_a_precision_it_does_not_report(runtime):
    missing = next(p for p in ("int8", "fp16", "int4") if p not in runtime.precisions)
    with pytest.raises(ValueError, match=missing):
        runtime.open_layer(LayerSignature(**{**CONV.__dict__, "precision": missing}))


def test_opens_fresh_sessions_of_a_whole_model(runtime, tmp_path):
    model = tiny_bn_cnn(in_channels=1).eval()
    opener = runtime.model_opener(model, (1, 12, 12), path=tmp_path / "model.onnx", seed=0)
    first, second = opener(), opener()
    assert first is not second
    with runtime.measuring():
        first()
        timings = time_callables({"a": first, "b": second}, rounds=2, reps=3, warmup=1, reference=first)
    assert all(t.value_ms > 0 and t.ratio > 0 for t in timings.values())
    # a second opener on the artifact the first one left (export=False) runs the same model
    assert runtime.model_opener(model, (1, 12, 12), path=tmp_path / "model.onnx", export=False)() is not None


def test_measuring_sets_the_threads_and_restores_them(runtime):
    before = torch.get_num_threads()
    busy = create_runtime(runtime.name, threads=before + 1)
    with busy.measuring():
        assert torch.get_num_threads() == before + 1
    assert torch.get_num_threads() == before


def test_energy_meter_is_the_machines_counter(runtime, tmp_path, monkeypatch):
    """A CPU runtime meters with the RAPL package counters under /sys/class/powercap, and has none without them."""
    import autocompress.runtime.energy_meters as energy_meters

    monkeypatch.setattr(energy_meters, "POWERCAP", str(tmp_path))
    assert runtime.energy_meter() is None  # no zone
    zone = make_zone(tmp_path, "intel-rapl:0", "package-0", 1000)
    meter = runtime.energy_meter()
    assert meter is not None and meter.method == "measured:rapl" and [d.path for d in meter.domains] == [zone]


def test_unknown_names_and_bad_threads_are_clear():
    with pytest.raises(UnknownRuntimeError, match=r"'tflite'; registered runtimes: onnxruntime, torch-eager"):
        create_runtime("tflite")
    assert not is_registered("tflite")
    with pytest.raises(ValueError, match="threads must be an integer >= 1"):
        create_runtime("onnxruntime", threads=0)


def test_a_runtime_is_one_registry_entry():
    from autocompress.runtime.runtimes import TorchEager

    class TwoThreadEager(TorchEager):
        name = "torch-eager-2t"

        def __init__(self, *, threads: int = 1) -> None:
            super().__init__(threads=2 * threads)

    register_runtime(TwoThreadEager.name, TwoThreadEager)
    try:
        assert "torch-eager-2t" in runtime_names()
        assert create_runtime("torch-eager-2t", threads=1).threads == 2
        with pytest.raises(ValueError, match="already registered"):
            register_runtime("torch-eager-2t", TwoThreadEager)
    finally:
        del _REGISTRY["torch-eager-2t"]
