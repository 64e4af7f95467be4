"""The ONNX Runtime layer: single-layer models, sessions and callables.

The profiler times one-op graphs built from a :class:`LayerSignature`
(:func:`layer_model`) and the validator/exporter times whole compressed models
exported by :func:`~autocompress.runtime.onnx_export.export_onnx`; both run in
sessions made by :func:`ort_session`, so both see the same kernels:

- fp32 layers are plain ``Conv`` / ``Gemm`` nodes (ORT runs them as NCHWc
  ``com.microsoft.nchwc.Conv`` / MLAS sgemm on AVX-512);
- int8 layers are the QDQ pattern ONNX Runtime's static quantizer writes
  (``QuantizeLinear``/``DequantizeLinear`` around a float op, int8 per-channel
  weights, int32 bias), which ORT fuses into ``com.microsoft.QLinearConv``
  (NHWC; depthwise and grouped convs included) and ``com.microsoft.QGemm`` for
  linear layers (``QLinearMatMul`` for a bias-free linear in an exported model).
  A single int8 layer model also runs its boundary (QuantizeLinear, NCHW<->NHWC
  Transposes, DequantizeLinear) and an fp32 one its NCHWc reorders, which a chain
  of layers pays once: measured here, a 3x3 64->64 int8 conv costs ~11 us inside
  a chain at 8x8 against ~19 us as a layer model (~154 vs ~206 us at 32x32).
- Sessions run without ORT's ``WeightBiasQuantization`` optimizer
  (:data:`DISABLED_OPTIMIZERS`), which would make float leaves of a mixed model int8.
"""

from __future__ import annotations

import functools
import math
import platform
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from autocompress.hardware.signature import LayerSignature

PRECISIONS = ("fp32", "int8")
INPUT_NAME = "x"  # the input of a layer model
OUTPUT_NAME = "y"  # the output of a layer model
LAYER_OPSET = 17
_IR_VERSION = 8  # ONNX IR for opset 17; every ORT >= 1.10 reads it

#: ORT graph optimizers every session here runs without. ``WeightBiasQuantization`` (ORT >= 1.20)
#: quantizes the float weight of any Conv/Gemm whose input comes from a DequantizeLinear, so a
#: float leaf between int8 neighbours would silently run as QLinearConv; it is a no-op for
#: layers the quantizer already quantized. Unknown names are ignored by ORT.
DISABLED_OPTIMIZERS = ("WeightBiasQuantization",)

# Activation ranges a layer model's int8 pattern assumes: inputs are standard normal
# (clipped to +-4 sigma); outputs have std ~ 1/sqrt(3) under the U(+-1/sqrt(fan_in)) init.
_X_RANGE = 8.0
_Y_RANGE = 8.0 / math.sqrt(3.0)
CPUINFO = Path("/proc/cpuinfo")  # where Linux lists the CPU's flags


@functools.cache
def int8_weights_saturate() -> bool:
    """Whether this CPU's u8 x s8 int8 kernels can saturate with full-range int8 weights.

    On x86 without VNNI, ORT's QLinearConv / QGemm multiply u8 activations by s8
    weights with ``vpmaddubsw``, which adds each pair of products into int16 and
    saturates: measured on an AVX2-only CPU, a 1x1 conv's output fell to cosine
    0.98 of the float layer with 8-bit weights and 0.9999 with 7-bit ones. ONNX
    Runtime's quantization guide recommends 7-bit weights (``reduce_range``) on
    such machines. Decided from the CPU flags Linux reports; elsewhere an x86 CPU
    is assumed to lack VNNI (7 bits never saturates, it only costs a little precision).
    """
    if platform.machine().lower() not in ("x86_64", "amd64", "i386", "i686"):
        return False
    try:
        flags = CPUINFO.read_text().split()
    except OSError:
        return True
    return not {"avx512_vnni", "avx_vnni"} & set(flags)


def int8_weight_max() -> int:
    """Largest |int8| weight code this machine's kernels take without saturating (127, or 63)."""
    return 63 if int8_weights_saturate() else 127


# -- single-layer models ---------------------------------------------------------------------------


def _check_signature(sig: LayerSignature) -> None:
    if not isinstance(sig, LayerSignature):
        raise TypeError(f"sig must be a LayerSignature, got {type(sig).__name__}")
    if sig.op not in ("conv", "linear"):
        raise ValueError(f"{sig.key}: op must be 'conv' or 'linear', got {sig.op!r}")
    if sig.precision not in PRECISIONS:
        raise ValueError(f"{sig.key}: unknown precision {sig.precision!r}; ONNX Runtime layer models "
                         f"support {list(PRECISIONS)}")
    if sig.in_channels < 1 or sig.out_channels < 1:
        raise ValueError(f"{sig.key}: channels must be >= 1, got in={sig.in_channels} out={sig.out_channels}")
    if not 0.0 <= sig.sparsity < 1.0:
        raise ValueError(f"{sig.key}: sparsity must be in [0, 1), got {sig.sparsity}")
    if min(sig.in_hw) < 1:
        raise ValueError(f"{sig.key}: input size must be >= 1, got {sig.in_hw}")
    if sig.op == "conv":
        if sig.groups < 1 or sig.in_channels % sig.groups or sig.out_channels % sig.groups:
            raise ValueError(f"{sig.key}: groups={sig.groups} must divide in_channels={sig.in_channels} "
                             f"and out_channels={sig.out_channels}")
        if min(sig.kernel_size) < 1 or min(sig.stride) < 1 or min(sig.padding) < 0:
            raise ValueError(f"{sig.key}: kernel and stride must be >= 1 and padding >= 0")
        if min(sig.out_hw) < 1:
            raise ValueError(f"{sig.key}: the kernel does not fit the (padded) input; output size {sig.out_hw}")


def _weight_shape(sig: LayerSignature) -> tuple[int, ...]:
    if sig.op == "linear":
        return (sig.out_channels, sig.in_channels)
    return (sig.out_channels, sig.in_channels // sig.groups, *sig.kernel_size)


def layer_input_shape(sig: LayerSignature) -> tuple[int, ...]:
    """Shape of a layer model's input: ``[1, C_in, H, W]`` for conv, ``[tokens, C_in]`` for linear."""
    if sig.op == "linear":
        return (sig.in_hw[0], sig.in_channels)
    return (1, sig.in_channels, *sig.in_hw)


def layer_weights(sig: LayerSignature, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The float32 ``(weight, bias)`` that ``layer_model(sig, seed=seed)`` uses.

    Weight shapes follow PyTorch: conv ``[out, in/groups, kh, kw]``, linear ``[out, in]``.
    Values are U(+-1/sqrt(fan_in)) like PyTorch's default init; with ``sig.sparsity``
    the smallest-magnitude fraction of the weight is zeroed (as a magnitude mask does).
    """
    _check_signature(sig)
    shape = _weight_shape(sig)
    fan_in = int(np.prod(shape[1:]))
    bound = 1.0 / math.sqrt(fan_in)
    rng = np.random.default_rng(seed)
    weight = rng.uniform(-bound, bound, size=shape).astype(np.float32)
    bias = rng.uniform(-bound, bound, size=sig.out_channels).astype(np.float32)
    n_zero = int(round(sig.sparsity * weight.size))
    if n_zero:
        flat = weight.reshape(-1)
        flat[np.argsort(np.abs(flat), kind="stable")[:n_zero]] = 0.0
    return weight, bias


def layer_input(sig: LayerSignature, *, seed: int = 0) -> dict[str, np.ndarray]:
    """A seeded standard-normal input feed ``{"x": ...}`` for ``layer_model(sig)``."""
    _check_signature(sig)
    x = np.random.default_rng(seed).standard_normal(layer_input_shape(sig), dtype=np.float32)
    return {INPUT_NAME: x}


def _compute_node(sig: LayerSignature, x: str, w: str, b: str, y: str) -> onnx.NodeProto:
    if sig.op == "linear":
        return helper.make_node("Gemm", [x, w, b], [y], name="linear", transB=1)
    (ph, pw) = sig.padding
    return helper.make_node("Conv", [x, w, b], [y], name="conv", kernel_shape=list(sig.kernel_size),
                            strides=list(sig.stride), pads=[ph, pw, ph, pw], group=sig.groups,
                            dilations=[1, 1])


def layer_model(sig: LayerSignature, *, seed: int = 0) -> onnx.ModelProto:
    """A one-op ONNX graph for ``sig``: input ``x`` (see :func:`layer_input_shape`), output ``y``.

    ``fp32``: a single ``Conv`` (pads, strides, group) or ``Gemm`` (``transB=1``) with bias.
    ``int8``: the QDQ pattern of ORT's static quantizer around that op: ``x`` ->
    QuantizeLinear(uint8) -> DequantizeLinear; int8 weight with per-output-channel scales
    -> DequantizeLinear(axis=0); int32 bias with scale ``x_scale * w_scale`` ->
    DequantizeLinear(axis=0); the op; then QuantizeLinear(uint8) -> DequantizeLinear on the
    output (what the next layer would consume). ORT fuses it into QLinearConv / QGemm.
    Weights come from :func:`layer_weights` with the same seed.
    """
    weight, bias = layer_weights(sig, seed=seed)
    x_info = helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, list(layer_input_shape(sig)))
    y_shape = [sig.in_hw[0], sig.out_channels] if sig.op == "linear" else [1, sig.out_channels, *sig.out_hw]
    y_info = helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, y_shape)

    if sig.precision == "fp32":
        inits = [numpy_helper.from_array(weight, "W"), numpy_helper.from_array(bias, "B")]
        nodes = [_compute_node(sig, INPUT_NAME, "W", "B", OUTPUT_NAME)]
    else:  # int8 (validated)
        x_scale = np.float32(_X_RANGE / 255.0)
        y_scale = np.float32(_Y_RANGE / 255.0)
        zp_u8 = np.uint8(128)
        w_absmax = np.abs(weight.reshape(sig.out_channels, -1)).max(axis=1)
        w_max = int8_weight_max()
        w_scale = (np.maximum(w_absmax, 1e-8) / w_max).astype(np.float32)
        w_q = np.clip(np.round(weight / w_scale.reshape(-1, *[1] * (weight.ndim - 1))), -w_max, w_max).astype(np.int8)
        b_scale = (x_scale * w_scale).astype(np.float32)
        b_q = np.round(bias / b_scale).astype(np.int32)
        inits = [
            numpy_helper.from_array(np.array(x_scale), "x_scale"),
            numpy_helper.from_array(np.array(zp_u8), "x_zero_point"),
            numpy_helper.from_array(w_q, "W_quantized"),
            numpy_helper.from_array(w_scale, "W_scale"),
            numpy_helper.from_array(np.zeros(sig.out_channels, np.int8), "W_zero_point"),
            numpy_helper.from_array(b_q, "B_quantized"),
            numpy_helper.from_array(b_scale, "B_scale"),
            numpy_helper.from_array(np.zeros(sig.out_channels, np.int32), "B_zero_point"),
            numpy_helper.from_array(np.array(y_scale), "y_scale"),
            numpy_helper.from_array(np.array(zp_u8), "y_zero_point"),
        ]
        nodes = [
            helper.make_node("QuantizeLinear", [INPUT_NAME, "x_scale", "x_zero_point"], ["x_q"], name="x_QuantizeLinear"),
            helper.make_node("DequantizeLinear", ["x_q", "x_scale", "x_zero_point"], ["x_dq"], name="x_DequantizeLinear"),
            helper.make_node("DequantizeLinear", ["W_quantized", "W_scale", "W_zero_point"], ["W"],
                             name="W_DequantizeLinear", axis=0),
            helper.make_node("DequantizeLinear", ["B_quantized", "B_scale", "B_zero_point"], ["B"],
                             name="B_DequantizeLinear", axis=0),
            _compute_node(sig, "x_dq", "W", "B", "y_float"),
            helper.make_node("QuantizeLinear", ["y_float", "y_scale", "y_zero_point"], ["y_q"], name="y_QuantizeLinear"),
            helper.make_node("DequantizeLinear", ["y_q", "y_scale", "y_zero_point"], [OUTPUT_NAME],
                             name="y_DequantizeLinear"),
        ]
    graph = helper.make_graph(nodes, sig.key.replace(":", "_"), [x_info], [y_info], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", LAYER_OPSET)],
                              producer_name="autocompress")
    model.ir_version = _IR_VERSION
    return model


# -- sessions and callables -------------------------------------------------------------------------


def _session_options(threads: int) -> ort.SessionOptions:
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be an integer >= 1, got {threads!r}")
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3  # errors only: the "optimized model is hardware specific" warning is expected
    return so


def _model_source(model: onnx.ModelProto | str | Path | bytes) -> str | bytes:
    if isinstance(model, onnx.ModelProto):
        return model.SerializeToString()
    if isinstance(model, bytes | bytearray):
        return bytes(model)
    if isinstance(model, str | Path):
        path = Path(model)
        if not path.is_file():
            raise FileNotFoundError(f"ONNX model file not found: {path}")
        return str(path)
    raise TypeError(f"model must be an onnx.ModelProto, a path or serialized bytes, got {type(model).__name__}")


def ort_session(model: onnx.ModelProto | str | Path | bytes, *, threads: int = 1,
                profile_prefix: str | None = None) -> ort.InferenceSession:
    """An ONNX Runtime CPU session: ``threads`` intra-op threads, one inter-op thread,
    sequential execution, every graph optimization (``ORT_ENABLE_ALL``) except
    :data:`DISABLED_OPTIMIZERS` (which would turn float leaves of a mixed model int8).
    ``profile_prefix``: record ORT's per-node profile to a JSON file of that prefix (``end_profiling``)."""
    so = _session_options(threads)
    if profile_prefix is not None:
        so.enable_profiling = True
        so.profile_file_prefix = profile_prefix
    return ort.InferenceSession(_model_source(model), so, providers=["CPUExecutionProvider"],
                                disabled_optimizers=list(DISABLED_OPTIMIZERS))


def optimized_model(model: onnx.ModelProto | str | Path | bytes, *, threads: int = 1) -> onnx.ModelProto:
    """The graph ORT actually runs for ``model`` (after the fusions of :func:`ort_session`'s settings on this CPU).

    Useful to see which kernels a layer or a model ends up on, e.g.
    ``{n.op_type for n in optimized_model(m).graph.node}``. Hardware specific.
    """
    so = _session_options(threads)
    with tempfile.TemporaryDirectory(prefix="autocompress-ort-") as tmp:
        out = Path(tmp) / "optimized.onnx"
        so.optimized_model_filepath = str(out)
        ort.InferenceSession(_model_source(model), so, providers=["CPUExecutionProvider"],
                             disabled_optimizers=list(DISABLED_OPTIMIZERS))
        return onnx.load(str(out))


_ORT_TO_NUMPY = {
    "tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(float16)": np.float16,
    "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(int8)": np.int8, "tensor(uint8)": np.uint8,
    "tensor(bool)": np.bool_,
}


def ort_callable(session: ort.InferenceSession, inputs: Mapping[str, np.ndarray]) -> Callable[[], object]:
    """A zero-argument callable running ``session`` once on fixed, preallocated ``inputs``.

    The inputs are bound once with IO binding and every call is
    ``session.run_with_iobinding``: on this CPU (1 thread) that is 3-8 us a call
    faster than ``session.run`` with the same numpy feed (7 -> 4 us for a 64->10
    linear), which matters for tiny layers. The callable returns None (it is for
    timing); use ``session.run`` for outputs. Inputs are checked against the
    session's inputs by name, dtype and static shape.
    """
    if not isinstance(session, ort.InferenceSession):
        raise TypeError(f"session must be an onnxruntime.InferenceSession, got {type(session).__name__}")
    if not isinstance(inputs, Mapping):
        raise TypeError(f"inputs must be a mapping of input name -> numpy array, got {type(inputs).__name__}")
    expected = {i.name: i for i in session.get_inputs()}
    missing, unknown = sorted(set(expected) - set(inputs)), sorted(set(inputs) - set(expected))
    if missing or unknown:
        raise ValueError(f"inputs do not match the session: missing {missing}, unknown {unknown} "
                         f"(the session takes {sorted(expected)})")
    feed = {}
    for name, spec in expected.items():
        arr = np.asarray(inputs[name])
        dtype = _ORT_TO_NUMPY.get(spec.type)
        if dtype is not None and arr.dtype != dtype:
            raise ValueError(f"input {name!r}: dtype {arr.dtype}, the session expects {spec.type}")
        if len(spec.shape) != arr.ndim or any(
            isinstance(want, int) and want != got for want, got in zip(spec.shape, arr.shape, strict=True)
        ):
            raise ValueError(f"input {name!r}: shape {list(arr.shape)}, the session expects {spec.shape}")
        feed[name] = np.ascontiguousarray(arr)
    binding = session.io_binding()
    for name, arr in feed.items():
        binding.bind_cpu_input(name, arr)
    for out in session.get_outputs():
        binding.bind_output(out.name, "cpu")
    run = session.run_with_iobinding

    def call(_keep_alive: dict = feed) -> None:  # the binding points at ``feed``'s arrays: hold them
        run(binding)

    return call
