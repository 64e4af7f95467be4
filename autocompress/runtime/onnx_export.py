"""Whole-model ONNX export for deployment on ONNX Runtime: float or int8 QDQ, leaves mapped to nodes.

:func:`export_onnx` writes what the validator and the exporter time in
:func:`~autocompress.runtime.onnx_runtime.ort_session`: a float graph, or a QDQ
graph from ORT's static quantizer calibrated on real inputs, where leaves that
deploy as float are kept float by excluding their nodes. The file's metadata
records what each leaf deploys as, which ORT optimizers must stay off and, for
an int8 file, its quantization settings (:func:`quantization_settings`: 7-bit
weights on CPUs whose u8 x s8 kernels saturate).

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
import tempfile
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from autocompress.runtime.onnx_runtime import DISABLED_OPTIMIZERS, int8_weights_saturate

log = logging.getLogger(__name__)

MODEL_INPUT = "input"  # the input of an exported model
MODEL_OUTPUT = "output"  # the output of an exported model
QUANTIZATION_KEY = "autocompress.quantization"  # metadata_props key of an int8 file: its settings, JSON


class OnnxNodeNotFoundError(LookupError):
    """A Conv2d/Linear leaf of the model has no (or an ambiguous) compute node in the ONNX graph."""


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


def quantization_settings() -> dict[str, Any]:
    """The ORT ``quantize_static`` settings :func:`export_onnx` uses on this machine, and why.

    QDQ format, MinMax calibration, activations QUInt8 per tensor, weights QInt8
    per output channel (symmetric), and ``reduce_range`` (7-bit weights, codes
    -64..64) exactly on CPUs whose u8 x s8 kernels saturate
    (:func:`~autocompress.runtime.onnx_runtime.int8_weights_saturate`: x86
    without VNNI). There ORT multiplies u8 activations by s8 weights with
    ``vpmaddubsw``, whose int16 pair sums overflow with full-range weights
    (255 * 127 * 2 > 32767) but not with 7-bit ones (255 * 64 * 2 < 32767).

    Measured on an AVX2-only CPU (1,000 MNIST test images), top-1 of the fp32
    file against the int8 one: a small CNN fine-tuned with 8-bit weights and
    activations at 24x24 scored 0.928 fp32, 0.908 int8 with the default 8-bit
    weights (2 points lost to saturation), 0.925 with 7-bit weights (torch, with
    fake quantization: 0.926). Three trained ResNet-20 members at 1x21x21 with
    weights on an 8-bit grid: 8-bit weights kept a centered logit cosine of
    0.993-0.997 to fp32 and agreed on 97.1-99.2% of the predictions (up to 0.8
    points lost); 7-bit weights kept 0.9998, agreed on 99.7-100% and scored
    within 0.1 point of fp32, every conv on QLinearConv. Signed activations
    (S8S8) scored as well, but only because ORT left 12 of 21 convs as float
    Conv between Q/DQ pairs on this CPU: not an int8 model. u8 weights (U8U8)
    also kept accuracy (0.929 on the CNN) on int8 kernels, but of another family
    than the u8 x s8 one. 7-bit weights are ORT's own advice for such CPUs and
    what the profiler's int8 layer models use there
    (:func:`~autocompress.runtime.onnx_runtime.int8_weight_max`), so the
    exported model runs the kernels its latency was priced with. The price is
    a second rounding of weights already on an 8-bit grid: an untrained net,
    whose logits barely depend on the input, loses more to it (centered cosine
    0.909, against 0.935 with 8-bit weights).

    A file made on a VNNI CPU (8-bit weights) saturates on a CPU without VNNI:
    export on the machine class you deploy to (the settings are in the file's
    metadata under :data:`QUANTIZATION_KEY`).
    """
    seven = int8_weights_saturate()
    return {
        "format": "QDQ", "calibration": "MinMax", "activation_type": "QUInt8", "activations": "per tensor",
        "weight_type": "QInt8", "weights": "per output channel, symmetric", "reduce_range": seven,
        "weight_bits": 7 if seven else 8,
        "why": ("this CPU has no VNNI: ORT's u8 x s8 kernels saturate with 8-bit weights, not with 7-bit ones"
                if seven else "this CPU's u8 x s8 kernels take 8-bit weights without saturating"),
    }


def _stamp(path: Path, leaf_precision: dict[str, str], extra: Mapping[str, str] | None = None) -> None:
    """Record in the model's metadata what each leaf deploys as and how ORT must run it (and ``extra``)."""
    model = onnx.load(str(path))
    meta = {"autocompress.leaf_precision": json.dumps(leaf_precision),
            "autocompress.ort_disabled_optimizers": ",".join(DISABLED_OPTIMIZERS), **(extra or {})}
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
    metadata: Mapping[str, str] | None = None,
) -> Path:
    """Export a (possibly materialized) model for deployment on ONNX Runtime; returns ``path``.

    The model's :func:`~autocompress.compress.deploy_copy` (masks baked, fake quant
    stripped) is exported at batch 1 with the TorchScript exporter (BatchNorm folds
    into the convs). Then, if quantizing, ORT's ``quant_pre_process`` (shape
    inference + basic optimization) runs and ``quantize_static`` writes a QDQ model
    with :func:`quantization_settings` (activations QUInt8 per tensor, weights QInt8
    per channel, 7-bit on CPUs whose u8 x s8 kernels saturate), MinMax calibration on
    ``calibration`` (an iterable of input tensors ``[N, C, H, W]`` or ``[C, H, W]``;
    default: 8 seeded standard-normal inputs); the settings are stored in the file's
    metadata under :data:`QUANTIZATION_KEY`. ``metadata``: more ``metadata_props``
    entries (string keys and values) to write into the file, e.g. how to feed it.

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
    extra = dict(metadata or {})
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in extra.items()):
        raise ValueError(f"metadata must map strings to strings, got {extra!r}")
    path.parent.mkdir(parents=True, exist_ok=True)

    precision = int8_leaves(model)
    quantize = any(precision.values()) if int8 is None else int8
    float_leaves = [] if int8 else [name for name, is_int8 in precision.items() if not is_int8]
    deploy = deploy_copy(model)
    x = torch.zeros((1, *input_shape))

    if not quantize:
        _torchscript_export(deploy, x, path, opset)
        _stamp(path, {name: "fp32" for name in precision}, extra)
        log.info("exported float model to %s", path)
        return path

    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    reader = _calibration_reader(_calibration_feeds(calibration, input_shape))
    settings = quantization_settings()
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
            activation_type=QuantType[settings["activation_type"]], weight_type=QuantType[settings["weight_type"]],
            nodes_to_exclude=exclude or None, reduce_range=settings["reduce_range"],
        )
    _stamp(path, {name: "fp32" if name in float_leaves else "int8" for name in precision},
           {QUANTIZATION_KEY: json.dumps(settings), **extra})
    log.info("exported int8 QDQ model to %s (%d of %d leaves float)", path, len(float_leaves), len(precision))
    return path
