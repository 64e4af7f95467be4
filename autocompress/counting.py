"""Hardware-independent cost of a real (materialized) model: MACs, BitOps, size.

``count_model(model, input_shape)`` traces the model once with fvcore's
``FlopCountAnalysis`` and reads, for every Conv2d/Linear leaf, its dense
multiply-accumulates together with the weight bits, activation bits and
sparsity the compression transforms left on it. It is the measured side of a
contract: the cost model prices a ``Candidate`` from ``LayerConfig`` alone and
must agree with what this module counts on the model ``materialize`` builds.

What is counted on what:

* The analysis runs on a *deploy view*: a deep copy of the model in eval mode
  whose weight parametrizations (fake quantization, sparsity masks) are baked
  into plain weights and whose activation fake-quant pre-hooks (``input_quant``)
  are removed. So the rounding/clamping arithmetic of fake quantization and the
  mask multiply never show up as work; a deployed model does not run them.
  Bits are read from the original layers (``layer_bits``) and sparsity from
  their ``MagnitudeMask`` (the exact count of zeroed weights). The model itself
  is not touched (not even its injected parametrization classes, which a plain
  ``remove_parametrizations`` on a deep copy would damage: see
  :func:`autocompress.compress.deploy.deploy_copy`).
* fvcore counts one multiply-accumulate as one "flop"; we call it a MAC.
  ``macs`` counts the matrix ops only (convolution, linear, matmul, ...).
* Element-wise work (adds, activations, feature-map multiplies, pooling,
  eval-mode BatchNorm as scale + shift = 2 ops per element, upsampling) goes
  into ``elementwise_ops``, one op per output element unless said otherwise
  (pooling/mean: one per input element; max-pool: one compare per window
  element). Nothing of it is in ``macs``.
* Ops fvcore skipped that no handler covers are reported in ``uncounted``
  (op name -> occurrences) and logged at info level; fvcore's own warnings are
  silenced.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize

with warnings.catch_warnings():  # fvcore.nn scripts a loss at import: torch.jit.script is deprecated
    warnings.simplefilter("ignore", DeprecationWarning)
    from fvcore.nn import FlopCountAnalysis

from autocompress.compress.deploy import deploy_copy
from autocompress.compress.quantization import FLOAT_BITS, layer_bits
from autocompress.compress.sparsity import MagnitudeMask

log = logging.getLogger(__name__)

LEAF_TYPES = (nn.Conv2d, nn.Linear)
#: fvcore operator names (namespace stripped) that are multiply-accumulates
MAC_OPS = frozenset({"conv", "linear", "addmm", "matmul", "mm", "bmm", "einsum"})
#: buffers a deployed model does not keep
_TRAINING_ONLY_BUFFERS = ("num_batches_tracked",)


@dataclass(frozen=True)
class LayerCount:
    """One Conv2d/Linear leaf as deployed (a LowRank layer gives two: ``<name>.0``, ``<name>.1``)."""

    name: str
    params: int  # weight + bias elements (dense)
    macs: int  # dense multiply-accumulates (fvcore)
    effective_macs: int  # macs * (1 - sparsity): what a sparse kernel would do
    w_bits: int
    a_bits: int
    sparsity: float  # fraction of the weights a sparsity mask holds at zero
    bitops: int  # effective_macs * w_bits * a_bits (32 for float)
    size_bytes: float  # ceil(nnz * w_bits / 8) + (ceil(numel / 8) bitmap if sparse) + 4 * bias (folded BN's too)


@dataclass(frozen=True)
class ModelCounts:
    """What a compressed model costs, independent of hardware.

    ``params``: every parameter element the deployed model keeps (layers and
    BatchNorm affine terms; buffers are not parameters). ``macs``: dense
    multiply-accumulates of all matrix ops (the leaves' sum, plus any functional
    matmul outside a Conv2d/Linear, which is then priced as float in
    ``effective_macs`` and ``bitops``). ``flops = 2 * macs`` (a MAC is a
    multiply and an add). ``size_bytes``: what the deployed model stores, the
    figure the cost model prices: every leaf's ``size_bytes``, where a
    BatchNorm right after a leaf of its width is folded into that leaf (its
    weights, and a per-channel fp32 bias the leaf gains when it has none), plus
    4 bytes per element of every other parameter and buffer the deployed model
    keeps (a BatchNorm that folds into nothing: weight/bias/running stats) —
    but not the training-only state: fake-quant observers, sparsity masks and
    the weights they parametrize, BN's ``num_batches_tracked``.
    ``elementwise_ops`` is broken down by operator in ``elementwise_by_op`` (ops
    counted as zero work, such as ``cat``, do not appear there nor in ``uncounted``).
    """

    params: int
    macs: int
    flops: int
    effective_macs: int
    bitops: int
    size_bytes: float
    elementwise_ops: int
    layers: tuple[LayerCount, ...]
    uncounted: dict[str, int]
    elementwise_by_op: dict[str, int] = field(default_factory=dict)

    def layer(self, name: str) -> LayerCount:
        for count in self.layers:
            if count.name == name:
                return count
        raise KeyError(f"no counted layer named {name!r}; layers: {[c.name for c in self.layers]}")


# -- fvcore handlers ------------------------------------------------------------------

Handle = Callable[[list[Any], list[Any]], Counter]


def _numel(value: Any) -> int:
    """Elements of a traced tensor value (0 when its shape is unknown, e.g. a scalar)."""
    try:
        if not value.isCompleteTensor():
            return 0
        return math.prod(value.type().sizes())
    except RuntimeError:
        return 0


def _per_output(op: str, scale: int = 1) -> Handle:
    def handle(inputs: list[Any], outputs: list[Any]) -> Counter:
        return Counter({op: scale * _numel(outputs[0])})
    return handle


def _per_input(op: str) -> Handle:
    def handle(inputs: list[Any], outputs: list[Any]) -> Counter:
        return Counter({op: _numel(inputs[0])})
    return handle


def _max_pool(inputs: list[Any], outputs: list[Any]) -> Counter:
    """One compare per window element and output element."""
    try:
        kernel = inputs[1].toIValue()
        window = math.prod(kernel) if isinstance(kernel, (list, tuple)) else int(kernel) ** 2
        return Counter({"max_pool2d": window * _numel(outputs[0])})
    except (RuntimeError, TypeError, ValueError):
        return Counter({"max_pool2d": _numel(inputs[0])})


def _zero(op: str) -> Handle:
    def handle(inputs: list[Any], outputs: list[Any]) -> Counter:
        return Counter({op: 0})
    return handle


def _elementwise_handles() -> dict[str, Handle]:
    """Element-wise handlers; in-place variants count under the plain op name."""
    handles: dict[str, Handle] = {}
    per_output = ("add", "sub", "mul", "div", "relu", "hardtanh", "sigmoid", "silu", "hardswish",
                  "hardsigmoid", "tanh", "gelu", "leaky_relu", "elu", "clamp")
    for op in per_output:
        handles[f"aten::{op}"] = _per_output(op)
        handles[f"aten::{op}_"] = _per_output(op)
    handles["aten::rsub"] = _per_output("sub")
    handles["aten::softmax"] = _per_output("softmax", 3)  # exp, sum, divide
    handles["aten::adaptive_avg_pool2d"] = _per_input("adaptive_avg_pool2d")
    handles["aten::avg_pool2d"] = _per_input("avg_pool2d")
    handles["aten::mean"] = _per_input("mean")
    handles["aten::sum"] = _per_input("sum")
    handles["aten::max_pool2d"] = _max_pool
    handles["aten::cat"] = _zero("cat")
    return handles


# -- deploy view ------------------------------------------------------------------------



def _folded_norms(view: nn.Module) -> dict[str, str]:
    """BatchNorms that fold into the Conv2d/Linear registered just before them, by name -> that leaf's name.

    Module order is definition order: every zoo block (``conv, bn``; a LowRank
    pair ``conv.0, conv.1`` then ``bn``; MobileNetV2's ``Sequential``) defines a
    norm right after the layer it follows. A norm whose width is not the
    previous leaf's output width folds into nothing and is counted as stored.
    """
    folded: dict[str, str] = {}
    previous: tuple[str, int] | None = None
    for name, module in view.named_modules():
        if isinstance(module, LEAF_TYPES):
            previous = (name, module.out_channels if isinstance(module, nn.Conv2d) else module.out_features)
        elif isinstance(module, nn.modules.batchnorm._BatchNorm) and previous is not None:
            if module.num_features == previous[1]:
                folded[name] = previous[0]
            previous = None
    return folded


def _kept_weights(layer: nn.Module) -> int:
    """Weights a sparsity mask leaves nonzero (all of them without a mask)."""
    if parametrize.is_parametrized(layer, "weight"):
        for p in layer.parametrizations.weight:
            if isinstance(p, MagnitudeMask):
                return int(torch.count_nonzero(p.mask))
    return layer.weight.numel()


def _example(model: nn.Module, input_shape: tuple[int, ...] | torch.Tensor) -> torch.Tensor:
    if isinstance(input_shape, torch.Tensor):
        return input_shape
    shape = tuple(int(s) for s in input_shape)
    if len(shape) == 0 or any(s < 1 for s in shape):
        raise ValueError(f"input_shape must be positive sizes without the batch dimension, e.g. (3, 32, 32); "
                         f"got {input_shape!r}")
    tensor = next(iter(model.parameters()), None)
    if tensor is None:
        tensor = next(iter(model.buffers()), torch.zeros(()))
    return torch.zeros((1, *shape), device=tensor.device)


# -- counting ---------------------------------------------------------------------------

def count_model(model: nn.Module, input_shape: tuple[int, int, int] | torch.Tensor) -> ModelCounts:
    """Count ``model`` on one zero input of ``input_shape`` (C, H, W), batch 1.

    ``input_shape`` may instead be an example tensor, used exactly as given
    (batch dimension included; counts then cover that whole batch). The model
    is analysed through a deploy view (see the module docstring) in eval mode
    without gradients; ``model`` itself, its mode and its parametrizations are
    left as they were.
    """
    view = deploy_copy(model)
    example = _example(view, input_shape)
    analysis = (
        FlopCountAnalysis(view, example)
        .set_op_handle(**_elementwise_handles())
        .unsupported_ops_warnings(False)
        .uncalled_modules_warnings(False)
    )
    with torch.no_grad():
        by_module = analysis.by_module_and_operator()  # runs the trace
    by_operator = by_module[""]
    uncounted = dict(sorted(analysis.unsupported_ops().items()))
    if uncounted:
        log.info("fvcore counted no work for these ops (occurrences): %s", uncounted)

    originals = dict(model.named_modules())
    folded = _folded_norms(view)
    gains_bias = set(folded.values())
    layers: list[LayerCount] = []
    leaf_tensors: set[int] = {id(t) for name in folded for t in view.get_submodule(name).state_dict(
        keep_vars=True).values()}  # a folded norm's tensors live on in its leaf's weights and bias
    for name, leaf in view.named_modules():
        if not isinstance(leaf, LEAF_TYPES):
            continue
        original = originals.get(name)
        if original is None:  # cannot happen for a deepcopy, but say so rather than misattribute
            raise RuntimeError(f"layer {name!r} of the deploy view has no counterpart in the model")
        w_bits, a_bits = layer_bits(original)
        numel = leaf.weight.numel()
        nnz = _kept_weights(original)
        sparsity = (numel - nnz) / numel if numel else 0.0  # layer_sparsity, without float32 rounding
        bias = leaf.bias.numel() if leaf.bias is not None else 0
        stored_bias = bias or (leaf.weight.shape[0] if name in gains_bias else 0)  # a folded BN's bias
        macs = int(sum(v for op, v in by_module.get(name, {}).items() if op in MAC_OPS))
        effective = macs * nnz // numel if numel else 0
        size = math.ceil(nnz * w_bits / 8) + (math.ceil(numel / 8) if nnz < numel else 0) + 4 * stored_bias
        layers.append(LayerCount(
            name=name, params=numel + bias, macs=macs, effective_macs=effective,
            w_bits=w_bits, a_bits=a_bits, sparsity=sparsity,
            bitops=effective * w_bits * a_bits, size_bytes=float(size),
        ))
        leaf_tensors.update(id(t) for t in (leaf.weight, leaf.bias) if t is not None)

    total_macs = int(sum(v for op, v in by_operator.items() if op in MAC_OPS))
    outside = total_macs - sum(c.macs for c in layers)  # functional matmuls outside any leaf
    if outside:
        log.info("%d MACs run outside Conv2d/Linear layers; counted as float", outside)
    elementwise = {op: int(v) for op, v in sorted(by_operator.items()) if op not in MAC_OPS}

    other_bytes = 0
    for name, tensor in [*view.named_parameters(), *view.named_buffers()]:
        if id(tensor) in leaf_tensors or name.rsplit(".", 1)[-1] in _TRAINING_ONLY_BUFFERS:
            continue
        other_bytes += 4 * tensor.numel()

    return ModelCounts(
        params=sum(p.numel() for p in view.parameters()),
        macs=total_macs,
        flops=2 * total_macs,
        effective_macs=sum(c.effective_macs for c in layers) + outside,
        bitops=sum(c.bitops for c in layers) + outside * FLOAT_BITS * FLOAT_BITS,
        size_bytes=float(sum(c.size_bytes for c in layers) + other_bytes),
        elementwise_ops=sum(elementwise.values()),
        layers=tuple(layers),
        uncounted=uncounted,
        elementwise_by_op=elementwise,
    )
