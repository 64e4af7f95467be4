"""The ONNX Runtime layer: single-layer models, whole-model export, sessions and callables.

The profiler times one-op graphs built from a :class:`LayerSignature`
(:func:`layer_model`) and the validator/exporter times whole compressed models
exported by :func:`export_onnx`; both run in sessions made by
:func:`ort_session`, so both see the same kernels:

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

Module names map to ONNX node names through the TorchScript exporter's scope
naming (see :func:`torchscript_scope`), which is why :func:`export_onnx` uses
that exporter (``dynamo=False``): the dynamo exporter gives a BatchNorm-folded
conv the BatchNorm's scope, and takes seconds longer. :func:`module_scopes`
records the real call stacks (containers that are indexed rather than called,
repeated calls), and every match is checked against the leaf's weight shape.
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
import warnings
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from autocompress.hardware.signature import LayerSignature

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "int8")
INPUT_NAME = "x"  # the input of a layer model
OUTPUT_NAME = "y"  # the output of a layer model
MODEL_INPUT = "input"  # the input of an exported model
MODEL_OUTPUT = "output"  # the output of an exported model
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


class OnnxNodeNotFoundError(LookupError):
    """A Conv2d/Linear leaf of the model has no (or an ambiguous) compute node in the ONNX graph."""


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
        w_scale = (np.maximum(w_absmax, 1e-8) / 127.0).astype(np.float32)
        w_q = np.clip(np.round(weight / w_scale.reshape(-1, *[1] * (weight.ndim - 1))), -127, 127).astype(np.int8)
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


def ort_session(model: onnx.ModelProto | str | Path | bytes, *, threads: int = 1) -> ort.InferenceSession:
    """An ONNX Runtime CPU session: ``threads`` intra-op threads, one inter-op thread,
    sequential execution, every graph optimization (``ORT_ENABLE_ALL``) except
    :data:`DISABLED_OPTIMIZERS` (which would turn float leaves of a mixed model int8)."""
    so = _session_options(threads)
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


# -- whole-model export ------------------------------------------------------------------------------


def _leaves(model):
    from torch import nn

    return {name: m for name, m in model.named_modules() if isinstance(m, nn.Conv2d | nn.Linear)}


def int8_leaves(model) -> dict[str, bool]:
    """Every Conv2d/Linear leaf of a (materialized) model -> whether it deploys as int8.

    A leaf is int8 when its weight and its input are both quantized to <= 8 bits
    (``layer_bits``); anything else deploys as float.
    """
    from autocompress.compress import layer_bits

    out = {}
    for name, leaf in _leaves(model).items():
        w_bits, a_bits = layer_bits(leaf)
        out[name] = w_bits <= 8 and a_bits <= 8
    return out


def _unqualified(qualified: str) -> str:
    """Like the TorchScript exporter: the last non-numeric atom and the numeric atoms after it."""
    atoms = qualified.split(".")
    for i in range(len(atoms) - 1, -1, -1):
        if not atoms[i].isnumeric():
            return ".".join(atoms[i:])
    return qualified


def torchscript_scope(module_name: str, called: Iterable[str] | None = None) -> str:
    """The node-name prefix the TorchScript ONNX exporter gives the ops of module ``module_name``.

    The exporter names a node ``/<scope>/<Op>`` (``_<k>`` appended to repeats),
    where the scope lists the modules being *called* when the op was traced, outer
    first, each by its unqualified name: its last non-numeric atom plus the numeric
    atoms after it (``layer1.0`` -> ``layer1.0``, ``layer1.0.conv1`` -> ``conv1``).
    ``called`` is that call stack (qualified names, root excluded); by default every
    ancestor is assumed called, as when containers run their children:
    ``layer1.0.conv1.0`` -> ``/layer1/layer1.0/conv1/conv1.0/``. A container that is
    indexed instead of called (ModuleDict, ModuleList) does not appear, which is
    why :func:`export_onnx` records the real call stacks (:func:`module_scopes`).
    """
    if called is None:
        atoms = module_name.split(".") if module_name else []
        called = [".".join(atoms[: i + 1]) for i in range(len(atoms))]
    parts = [_unqualified(name) for name in called if name]
    return "/" + "".join(part + "/" for part in parts)


def module_scopes(model, input_shape: tuple[int, ...]) -> dict[str, tuple[str, ...]]:
    """Each Conv2d/Linear leaf -> the TorchScript node-name prefixes of its calls in one batch-1 forward.

    Runs ``model`` once on zeros with forward hooks that track the stack of called
    modules (what the TorchScript tracer builds its scopes from). A leaf called
    twice has two entries (the exporter suffixes a repeated scope: ``/blocks.0_1/``);
    a leaf never called has none.
    """
    import torch

    names = {id(m): n for n, m in model.named_modules()}
    leaves = _leaves(model)
    stack: list[str] = []
    scopes: dict[str, list[str]] = {name: [] for name in leaves}
    seen: dict[str, int] = {}

    def enter(module, args):
        name = names.get(id(module), "")
        stack.append(name)
        if name in scopes:
            # The exporter names each call's scope uniquely: a repeat of the same full
            # scope string gets "_<k>" appended (``/blocks.0/`` then ``/blocks.0_1/``).
            scope = torchscript_scope(name, stack)[:-1]
            k = seen.get(scope, 0)
            seen[scope] = k + 1
            scopes[name].append(f"{scope}_{k}/" if k else scope + "/")

    def leave(module, args, output):
        stack.pop()

    handles = []
    try:
        for module in model.modules():
            handles.append(module.register_forward_pre_hook(enter))
            handles.append(module.register_forward_hook(leave, always_call=True))
        with torch.no_grad():
            model(torch.zeros((1, *input_shape)))
    finally:
        for handle in handles:
            handle.remove()
    return {name: tuple(found) for name, found in scopes.items()}


_COMPUTE_OPS = {"Conv2d": ("Conv",), "Linear": ("Gemm", "MatMul")}


def leaf_node_names(
    onnx_model: onnx.ModelProto,
    leaves: Mapping[str, object],
    scopes: Mapping[str, Iterable[str]] | None = None,
) -> dict[str, tuple[str, ...]]:
    """Map each Conv2d/Linear leaf (qualified name -> module) to its ONNX node names, compute node first.

    A leaf's nodes are those whose name starts with one of its scopes:
    ``scopes[name]`` from :func:`module_scopes` (the real call stacks) or, without
    it, :func:`torchscript_scope` of the name. A prefix, not ``<scope><Op>``
    exactly, because ORT's optimizer renames the nodes it fuses by appending
    (``/tok/MatMul`` + ``Add`` -> ``/tok/MatMul/MatMulAddFusion``, a Gemm); a Conv2d or
    Linear calls no submodule, so no other module's nodes share its prefix. Among them there must be a
    ``Conv`` for a Conv2d, a ``Gemm``/``MatMul`` for a Linear (whose bias ``Add`` on
    3-D inputs is returned too), and where a compute node's weight is an
    initializer its shape must be the leaf's (conv: equal; Gemm/MatMul: [out, in]
    or [in, out]). Raises :class:`OnnxNodeNotFoundError` naming the leaf otherwise.
    A leaf with no scopes (never called) maps to ``()``. Only compute nodes and
    bias ``Add`` nodes are returned (not a QDQ model's Q/DQ nodes).
    """
    from torch import nn

    inits = {i.name: tuple(i.dims) for i in onnx_model.graph.initializer}
    nodes = list(onnx_model.graph.node)
    out = {}
    for name, leaf in leaves.items():
        kind = "Conv2d" if isinstance(leaf, nn.Conv2d) else "Linear" if isinstance(leaf, nn.Linear) else None
        if kind is None:
            raise TypeError(f"leaf {name!r} is a {type(leaf).__name__}, expected Conv2d or Linear")
        leaf_scopes = tuple(scopes.get(name, ())) if scopes is not None else (torchscript_scope(name),)
        if not leaf_scopes:
            out[name] = ()
            continue
        in_scope = [n for n in nodes if n.name.startswith(leaf_scopes)]
        compute = [n for n in in_scope if n.op_type in _COMPUTE_OPS[kind]]
        if not compute:
            near = sorted(n.name for n in onnx_model.graph.node if n.op_type in _COMPUTE_OPS[kind])[:8]
            wanted = " or ".join(f"'{scope}<Op>'" for scope in leaf_scopes)
            raise OnnxNodeNotFoundError(
                f"no {'/'.join(_COMPUTE_OPS[kind])} node for the {kind} {name!r} in the ONNX graph: expected a node "
                f"named {wanted} (TorchScript exporter scope naming); {kind} nodes present include {near}")
        want = tuple(leaf.weight.shape)
        for node in compute:
            got = inits.get(node.input[1]) if len(node.input) > 1 else None
            if got is not None and got not in ((want,) if kind == "Conv2d" else (want, want[::-1])):
                raise OnnxNodeNotFoundError(f"node {node.name!r} matched {name!r} by name, but its weight "
                                            f"{node.input[1]!r} has shape {list(got)}, the module's is {list(want)}")
        out[name] = tuple(n.name for n in compute) + tuple(n.name for n in in_scope if n.op_type == "Add")
    return out


def _calibration_reader(feeds: list[dict[str, np.ndarray]]):
    """A ``CalibrationDataReader`` over a fixed list of feeds (onnxruntime.quantization imports in ~0.8 s: lazily)."""
    from onnxruntime.quantization import CalibrationDataReader

    class FeedReader(CalibrationDataReader):
        def __init__(self) -> None:
            self._next = 0

        def get_next(self) -> dict[str, np.ndarray] | None:
            if self._next >= len(feeds):
                return None
            self._next += 1
            return feeds[self._next - 1]

        def rewind(self) -> None:
            self._next = 0

    return FeedReader()


def _calibration_feeds(calibration, input_shape: tuple[int, int, int], seed: int = 0) -> list[dict[str, np.ndarray]]:
    import torch

    if calibration is None:
        g = torch.Generator().manual_seed(seed)
        calibration = [torch.randn((1, *input_shape), generator=g) for _ in range(8)]
    feeds = []
    for i, batch in enumerate(calibration):
        arr = batch.detach().cpu().numpy() if isinstance(batch, torch.Tensor) else np.asarray(batch)
        if tuple(arr.shape) == tuple(input_shape):
            arr = arr[None]
        if arr.ndim != 4 or tuple(arr.shape[1:]) != tuple(input_shape):
            raise ValueError(f"calibration batch {i}: shape {list(arr.shape)}, expected [N, {', '.join(map(str, input_shape))}] "
                             f"or [{', '.join(map(str, input_shape))}]")
        arr = arr.astype(np.float32, copy=False)
        feeds.extend({MODEL_INPUT: np.ascontiguousarray(arr[j : j + 1])} for j in range(arr.shape[0]))
    if not feeds:
        raise ValueError("calibration is empty: give at least one input batch (or None for random data)")
    return feeds


def _unshare_initializers(model: onnx.ModelProto) -> int:
    """Give every Conv/Gemm/MatMul its own copy of a weight or bias initializer other nodes share.

    The TorchScript exporter deduplicates equal initializers (e.g. the all-zero
    biases of freshly BN-folded convs), and the quantizer then quantizes one shared
    bias with one conv's scales and feeds its DequantizeLinear to every user,
    float leaves included. Returns how many copies were made.
    """
    inits = {i.name: i for i in model.graph.initializer}
    uses: dict[str, int] = {}
    for node in model.graph.node:
        for name in node.input:
            if name in inits:
                uses[name] = uses.get(name, 0) + 1
    copies = 0
    taken = set(inits)
    for node in model.graph.node:
        if node.op_type not in ("Conv", "Gemm", "MatMul"):
            continue
        for slot in range(1, len(node.input)):
            name = node.input[slot]
            if uses.get(name, 0) > 1:
                new_name, k = f"{name}_{copies}", copies
                while new_name in taken:
                    k += 1
                    new_name = f"{name}_{k}"
                tensor = onnx.TensorProto()
                tensor.CopyFrom(inits[name])
                tensor.name = new_name
                model.graph.initializer.append(tensor)
                taken.add(new_name)
                node.input[slot] = new_name
                uses[name] -= 1
                copies += 1
    return copies


def _stamp(path: Path, leaf_precision: dict[str, str]) -> None:
    """Record in the model's metadata what each leaf deploys as and how ORT must run it."""
    model = onnx.load(str(path))
    meta = {"autocompress.leaf_precision": json.dumps(leaf_precision),
            "autocompress.ort_disabled_optimizers": ",".join(DISABLED_OPTIMIZERS)}
    onnx.helper.set_model_props(model, {**{p.key: p.value for p in model.metadata_props}, **meta})
    onnx.save(model, str(path))


def _check_input_shape(input_shape) -> tuple[int, int, int]:
    shape = tuple(input_shape) if isinstance(input_shape, tuple | list) else None
    if shape is None or len(shape) != 3 or not all(
        isinstance(s, int | np.integer) and not isinstance(s, bool) and s > 0 for s in shape
    ):
        raise ValueError(f"input_shape must be (channels, height, width) of positive ints, got {input_shape!r}")
    return tuple(int(s) for s in shape)  # type: ignore[return-value]


def _torchscript_export(model, x, path: Path, opset: int) -> None:
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the legacy exporter announces itself
        warnings.simplefilter("ignore", UserWarning)
        try:
            torch.onnx.export(model, (x,), str(path), dynamo=False, opset_version=opset, input_names=[MODEL_INPUT],
                              output_names=[MODEL_OUTPUT], do_constant_folding=True)
        except TypeError as err:  # a torch without the TorchScript exporter
            raise RuntimeError("this torch has no TorchScript ONNX exporter (dynamo=False), which export_onnx "
                               "needs to map module names to ONNX nodes") from err


def export_onnx(
    model,
    input_shape: tuple[int, int, int],
    path: str | Path,
    *,
    int8: bool | None = None,
    calibration: Iterable | None = None,
    opset: int = 17,
) -> Path:
    """Export a (possibly materialized) model for deployment on ONNX Runtime; returns ``path``.

    The model's :func:`~autocompress.compress.deploy_copy` (masks baked, fake quant
    stripped) is exported at batch 1 with the TorchScript exporter (BatchNorm folds
    into the convs). Then, if quantizing, ORT's ``quant_pre_process`` (shape
    inference + basic optimization) runs and ``quantize_static`` writes a QDQ model:
    activations QUInt8 per tensor, weights QInt8 per channel, MinMax calibration on
    ``calibration`` (an iterable of input tensors ``[N, C, H, W]`` or ``[C, H, W]``;
    default: 8 seeded standard-normal inputs).

    ``int8``: ``None`` quantizes when any Conv2d/Linear leaf is int8 (weight and
    input bits <= 8, see :func:`int8_leaves`) and keeps the other leaves float by
    excluding their nodes (found with :func:`leaf_node_names`); ``True`` quantizes
    every leaf (e.g. an int8 build of the uncompressed model); ``False`` exports
    float only.
    """
    import torch

    from autocompress.compress import deploy_copy

    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    input_shape = _check_input_shape(input_shape)
    if int8 not in (None, True, False):
        raise ValueError(f"int8 must be None, True or False, got {int8!r}")
    if isinstance(opset, bool) or not isinstance(opset, int) or opset < 13:
        raise ValueError(f"opset must be an integer >= 13 (per-channel DequantizeLinear), got {opset!r}")
    path = Path(path)
    if path.suffix != ".onnx":
        raise ValueError(f"path must end in .onnx, got {str(path)!r}")
    path.parent.mkdir(parents=True, exist_ok=True)

    precision = int8_leaves(model)
    quantize = any(precision.values()) if int8 is None else int8
    float_leaves = [] if int8 else [name for name, is_int8 in precision.items() if not is_int8]
    deploy = deploy_copy(model)
    x = torch.zeros((1, *input_shape))

    if not quantize:
        _torchscript_export(deploy, x, path, opset)
        _stamp(path, {name: "fp32" for name in precision})
        log.info("exported float model to %s", path)
        return path

    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    reader = _calibration_reader(_calibration_feeds(calibration, input_shape))
    with tempfile.TemporaryDirectory(prefix="autocompress-export-") as tmp:
        exported, pre = Path(tmp) / "float.onnx", Path(tmp) / "pre.onnx"
        _torchscript_export(deploy, x, exported, opset)
        quant_pre_process(str(exported), str(pre), skip_symbolic_shape=True)
        pre_model = onnx.load(str(pre))
        names = leaf_node_names(pre_model, _leaves(deploy), module_scopes(deploy, input_shape))
        exclude = sorted(n for leaf in float_leaves for n in names[leaf])
        if _unshare_initializers(pre_model):
            onnx.save(pre_model, str(pre))
        quantize_static(
            str(pre), str(path), reader, quant_format=QuantFormat.QDQ, per_channel=True,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, nodes_to_exclude=exclude or None,
        )
    _stamp(path, {name: "fp32" if name in float_leaves else "int8" for name in precision})
    log.info("exported int8 QDQ model to %s (%d of %d leaves float)", path, len(float_leaves), len(precision))
    return path
