"""Operations between layers, timed inside the model's own ONNX Runtime graph.

A table of isolated layers cannot see what a graph runs between them:
squeeze-excite gates (ReduceMean, a broadcast Mul), adds and activations not
fused into a convolution, pooling, and the NCHWc reorders or
Quantize/DequantizeLinear nodes ONNX Runtime puts around them. On a
squeeze-excite ResNet they were about 11% of the float model's time and a third of its
int8 build's, which no calibration fitted on plain ResNets can know. So, like
nn-Meter's kernels found in the runtime's own graph, they are timed where they
run: each build (uncompressed float, all-int8) runs with ONNX Runtime's
per-node profiler, every node keeps its median kernel time over the runs less
the profiler's own cost per node, and the nodes that are not layers are
summed. Timed a few sessions apart, the fastest session counts, and in
passes over every model, minutes apart, the fastest pass (:func:`fastest`),
as for a table entry. What is left of the unprofiled graph's time is its layers in
context, against what the table says for them alone (``GraphOps.layer_factor``).
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections import defaultdict
from collections.abc import Sequence
from functools import partial
from pathlib import Path

import numpy as np
from torch import nn

from autocompress.hardware.profile import GraphOps
from autocompress.runtime.onnx_export import export_onnx
from autocompress.runtime.onnx_runtime import ort_session
from autocompress.runtime.timing import reference_timed_calls, time_callables

log = logging.getLogger(__name__)

#: passes over every model's graph, one after another, each node at its fastest (see :func:`fastest`)
GRAPH_OPS_PASSES = 3

#: nodes that run a Conv2d/Linear layer (float, fused or int8): the table prices these; everything else is between
LAYER_NODES = frozenset({"Conv", "FusedConv", "Gemm", "FusedGemm", "MatMul", "FusedMatMul", "QLinearConv", "QGemm",
                         "QLinearMatMul", "ConvInteger", "MatMulInteger"})


def node_times(path: Path, input_shape: tuple[int, ...], *, threads: int = 1, runs: int = 200, warmup: int = 20,
               sessions: int = 2, seed: int = 0) -> tuple[dict[tuple[str, str], float], float, float]:
    """(node name, node type) -> ms, the profiler's own cost per node (ms), and the whole graph's ms.

    Each node keeps its median kernel time over ``runs``, the fastest of
    ``sessions``. The profiler adds to every node it times (here 1-2 us a
    node, which on a graph of small nodes summed to 45% more than the
    whole model runs in): every profiled call is paired with a call of an
    unprofiled session of the same file, and the per-node cost is how far the
    nodes' sum exceeds that call's median, spread over the nodes. The two
    sessions take turns in blocks of calls, timed by
    :func:`~autocompress.runtime.timing.time_callables` as a model and its reference;
    a node's median is over the profiled session's timed calls only, not the
    untimed ones that settle it after the plain session's block (each session
    holds its own copy of the weights).
    """
    x = np.random.default_rng(seed).standard_normal((1, *input_shape)).astype(np.float32)
    best: dict[tuple[str, str], float] = {}
    overheads, walls = [], []
    with tempfile.TemporaryDirectory(prefix="autocompress-graph-ops-") as tmp:
        for k in range(sessions):
            session = ort_session(path, threads=threads, profile_prefix=str(Path(tmp) / f"s{k}"))
            plain = ort_session(path, threads=threads)
            feed = {session.get_inputs()[0].name: x}
            # the profiled session as the plain one's reference: both run warmup + runs calls, in blocks
            wall = time_callables({"plain": partial(plain.run, None, feed)}, rounds=1, reps=runs, warmup=warmup,
                                  reference=partial(session.run, None, feed))["plain"].median_ms
            events = json.loads(Path(session.end_profiling()).read_text())
            durations: dict[tuple[str, str], list[float]] = defaultdict(list)
            for event in events:
                if event.get("cat") == "Node" and event.get("name", "").endswith("_kernel_time"):
                    node = (event["name"].removesuffix("_kernel_time"), event["args"]["op_name"])
                    durations[node].append(event["dur"] / 1000.0)  # microseconds
            timed = reference_timed_calls(runs, warmup)  # not its warm-up, nor the calls settling after the plain's
            medians = {node: float(np.median([values[i] for i in timed])) for node, values in durations.items()}
            overheads.append(max(0.0, (sum(medians.values()) - wall) / max(1, len(medians))))
            walls.append(wall)
            for node, median in medians.items():
                best[node] = min(best.get(node, median), median)
    return best, float(np.median(overheads)), min(walls)


def between_layers(times: dict[tuple[str, str], float], overhead_ms: float = 0.0) -> dict[str, float]:
    """Node type -> summed ms of the nodes that are not layers, each less the profiler's ``overhead_ms``."""
    out: dict[str, float] = defaultdict(float)
    for (_, op), ms in times.items():
        if op not in LAYER_NODES:
            out[op] += max(0.0, ms - overhead_ms)
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def _time_builds(model: nn.Module, input_shape: tuple[int, int, int], precisions, *, threads: int, scale: float,
                 runs: int, sessions: int, seed: int) -> tuple[dict[str, dict[str, float]], dict[str, float]]:
    """Per precision build of ``model``: node type -> ms between layers, and the layers in context (ms)."""
    by_op: dict[str, dict[str, float]] = {}
    layers_ms: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="autocompress-graph-ops-") as tmp:
        for precision in precisions:
            path = export_onnx(model, input_shape, Path(tmp) / f"{precision}.onnx", int8=precision == "int8")
            times, overhead, wall = node_times(path, input_shape, threads=threads, runs=runs, sessions=sessions,
                                               seed=seed)
            by_op[precision] = {op: ms * scale for op, ms in between_layers(times, overhead).items()}
            # the unprofiled graph's own time less what runs between layers: per-node figures (whole
            # microseconds, the profiler's cost taken off on average) split it but do not add up to it exactly
            layers_ms[precision] = max(wall * scale - sum(by_op[precision].values()), 1e-6)
    return by_op, layers_ms


def measure_graph_ops(model: nn.Module, input_shape: tuple[int, int, int], mact: float,
                      table_ms: dict[str, float], *, narrow: tuple[nn.Module, float] | None = None,
                      threads: int = 1, scale: float = 1.0, runs: int = 200, sessions: int = 2, seed: int = 0,
                      command: str = "") -> GraphOps:
    """Time what ``model``'s builds run between their layers, and their layers in context.

    ``table_ms``: precision (``fp32``, and ``int8`` for the all-int8 build where the profile has int8
    kernels) -> what the table says the build's layers take alone. ``mact``: the uncompressed model's layer
    output activations (millions, the cost model's ``mact_float``), what a candidate's share is scaled by.
    ``narrow``: the narrowest uniform build of the model and its activations, timed the same way, so a
    candidate's share is interpolated between the two builds. ``scale``: multiplies every time onto the
    profile's table scale (its anchors' reference latency over their latency now).
    """
    options = {"threads": threads, "scale": scale, "runs": runs, "sessions": sessions, "seed": seed}
    by_op, layers_ms = _time_builds(model, input_shape, table_ms, **options)
    narrow_fields = {}
    if narrow is not None:
        narrow_ops, _ = _time_builds(narrow[0], input_shape, table_ms, **options)
        narrow_fields = {"narrow_float_ms": sum(narrow_ops["fp32"].values()),
                         "narrow_quant_ms": sum(narrow_ops.get("int8", {}).values()), "narrow_mact": narrow[1]}
    ops = GraphOps(float_ms=sum(by_op["fp32"].values()), quant_ms=sum(by_op.get("int8", {}).values()), mact=mact,
                   by_op=by_op, layers_ms=layers_ms, table_ms=dict(table_ms), command=command, **narrow_fields)
    log.debug("between layers: %.4f ms float, %.4f ms int8 (%s)%s; layers in the graph at %s their table time",
             ops.float_ms, ops.quant_ms,
             ", ".join(f"{op} {ms * 1e3:.0f} us" for op, ms in list(by_op["fp32"].items())[:4]),
             f"; narrowest build {ops.narrow_float_ms:.4f} / {ops.narrow_quant_ms:.4f} ms" if narrow else "",
             ", ".join(f"{ops.layer_factor(p):.2f}x ({p})" for p in table_ms))
    return ops


def fastest(passes: Sequence[GraphOps]) -> GraphOps:
    """One model's graph timed in several passes, minutes apart: every node type and build at its fastest pass.

    The fastest counts, as for a table entry (the minimum of its round medians), so both sit on the quiet
    machine's scale. One pass on a shared VM can land in a slow spell: in one profile the squeeze-excite model's
    float build ran 0.23 ms between its layers against 0.09 ms an hour before, which came out as 19% of
    over-prediction on every candidate of it.
    """
    if not passes:
        raise ValueError("no passes to take the fastest of")
    first = passes[0]
    by_op = {precision: {op: min(p.by_op.get(precision, {}).get(op, ms) for p in passes) for op, ms in ops.items()}
             for precision, ops in first.by_op.items()}

    def least(values: list[float | None]) -> float | None:
        present = [v for v in values if v is not None]
        return min(present) if present else None

    return first.model_copy(update={
        "float_ms": sum(by_op.get("fp32", {}).values()),
        "quant_ms": sum(by_op.get("int8", {}).values()),
        "by_op": by_op,
        "layers_ms": {precision: min(p.layers_ms.get(precision, ms) for p in passes)
                      for precision, ms in first.layers_ms.items()},
        "narrow_float_ms": least([p.narrow_float_ms for p in passes]),
        "narrow_quant_ms": least([p.narrow_quant_ms for p in passes]),
    })
