"""Operations between layers and the layers in context: timed in the model's own ONNX Runtime graph."""

import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

from autocompress.hardware import CostModel, HardwareProfile
from autocompress.hardware.profile import (
    CALIBRATION_FEATURES,
    Calibration,
    GraphOps,
    calibration_key,
)
from autocompress.runtime.graph_ops import (
    LAYER_NODES,
    between_layers,
    fastest,
    measure_graph_ops,
    node_times,
)
from autocompress.runtime.onnx_export import export_onnx
from autocompress.runtime.validate import Sample, Suite, score_samples
from tests.helpers import lenet_priced, roofline_profile, shipped_space, zoo_model


class _Gated(nn.Module):
    """A conv and a squeeze-excite gate: a reduce and a broadcast multiply that no layer signature holds."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 48, 3, padding=1)
        self.reduce = nn.Conv2d(48, 12, 1)
        self.expand = nn.Conv2d(12, 48, 1)
        self.fc = nn.Linear(48, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv(x))
        gate = torch.sigmoid(self.expand(torch.relu(self.reduce(x.mean((2, 3), keepdim=True)))))
        return self.fc((x * gate).mean((2, 3)))


def test_graph_ops_are_the_non_layer_nodes_of_both_builds():
    ops = measure_graph_ops(_Gated().eval(), (3, 32, 32), 0.01, {"fp32": 0.02, "int8": 0.04}, runs=20, sessions=1)
    assert set(ops.by_op) == {"fp32", "int8"}
    for precision, by_op in ops.by_op.items():
        assert by_op and not set(by_op) & LAYER_NODES, precision  # layers are the table's, not counted twice
    assert {"ReduceMean", "Mul"} <= set(ops.by_op["fp32"])  # the gate's reduce and broadcast multiply
    assert any("Mul" in op for op in ops.by_op["int8"])  # QLinearMul, or a float Mul between Q/DQ
    assert ops.float_ms == pytest.approx(sum(ops.by_op["fp32"].values()))
    assert ops.quant_ms == pytest.approx(sum(ops.by_op["int8"].values()))
    assert ops.float_ms > 0 and ops.quant_ms > 0 and ops.mact == 0.01
    # the unprofiled graph less what runs between layers: the layers in context, against the table alone
    assert ops.table_ms == {"fp32": 0.02, "int8": 0.04} and set(ops.layers_ms) == {"fp32", "int8"}
    for precision in ("fp32", "int8"):
        assert 0 < ops.layers_ms[precision] < 1.0  # the conv, the gate's two 1x1s and the linear: microseconds
        assert ops.layer_factor(precision) == pytest.approx(ops.layers_ms[precision] / ops.table_ms[precision])
    assert ops.layer_factor("w4a8") == 1.0  # a precision the graph did not run


def test_float_only_profile_times_only_the_float_build():
    ops = measure_graph_ops(_Gated().eval(), (3, 32, 32), 0.01, {"fp32": 0.02}, runs=10, sessions=1)
    assert set(ops.by_op) == set(ops.layers_ms) == {"fp32"} and ops.quant_ms == 0.0
    assert ops.layer_factor("int8") == 1.0


def test_node_times_take_the_profilers_own_cost_off_every_node(tmp_path):
    path = export_onnx(_Gated().eval(), (3, 32, 32), tmp_path / "gated.onnx", int8=False)
    times, overhead, wall = node_times(path, (3, 32, 32), runs=30, sessions=1)
    assert {op for _, op in times} >= {"Conv", "ReduceMean", "Mul"} and all(ms > 0 for ms in times.values())
    assert 0 <= overhead < 0.05  # ms per node: microseconds, not a whole model
    assert 0 < wall < 5 and sum(times.values()) - overhead * len(times) <= 1.5 * wall  # the unprofiled graph
    raw, corrected = between_layers(times), between_layers(times, overhead)
    assert set(raw) == set(corrected) and not set(raw) & LAYER_NODES
    for op, ms in corrected.items():
        assert ms == pytest.approx(sum(max(0.0, t - overhead) for (_, o), t in times.items() if o == op))


def test_cost_model_adds_the_models_graph_ops_scaled_by_its_activations(tmp_path):
    _, graph = zoo_model("resnet20")
    space = shipped_space("resnet20", graph)
    plain = CostModel(roofline_profile(), space, model="resnet20")
    identity = space.encoding.encode([space.identity()])
    mact = float(plain.predict_batch(identity)["mact_float"][0])
    ops = GraphOps(float_ms=0.1, quant_ms=0.3, mact=mact)
    profile = roofline_profile().model_copy(update={"graph_ops": {calibration_key("resnet20", (3, 32, 32)): ops}})
    costs = CostModel(profile, space, model="resnet20")
    assert costs.reference().latency_ms == pytest.approx(plain.reference().latency_ms + 0.1)
    int8 = space.uniform(w_bits=8, a_bits=8)
    assert costs.predict(int8).latency_ms == pytest.approx(plain.predict(int8).latency_ms + 0.3)
    pruned = space.uniform(keep=0.5)
    row = plain.predict_batch(space.encoding.encode([pruned]))
    added = costs.predict(pruned).latency_ms - plain.predict(pruned).latency_ms
    assert added == pytest.approx(0.1 * row["mact_float"][0] / mact) and 0 < added < 0.1
    # another model, or none named, gets none of them
    assert CostModel(profile, space, model="resnet32").reference().latency_ms == plain.reference().latency_ms
    assert CostModel(profile, space).reference().latency_ms == plain.reference().latency_ms
    # kept in the file; a profile without any keeps its old layout
    saved = profile.save(tmp_path / "p.json")
    assert HardwareProfile.load(saved).graph_ops == profile.graph_ops
    assert "graph_ops" not in roofline_profile().save(tmp_path / "q.json").read_text()


def test_graph_ops_of_a_candidate_lie_between_the_full_and_the_narrowest_build():
    """With both builds timed, a node's fixed cost stays in narrow candidates; without, the share scales to 0."""
    ops = GraphOps(float_ms=0.10, quant_ms=0.20, mact=1.0, narrow_float_ms=0.06, narrow_quant_ms=0.14, narrow_mact=0.25)
    assert ops.price(1.0, 0.0) == pytest.approx(0.10) and ops.price(0.0, 1.0) == pytest.approx(0.20)
    assert ops.price(0.25, 0.0) == pytest.approx(0.06) and ops.price(0.0, 0.25) == pytest.approx(0.14)
    assert ops.price(0.625, 0.0) == pytest.approx(0.08)  # halfway along the line through both builds
    # a mixed candidate: each precision's build at its total activations, weighed by its share of them
    assert ops.price(0.5, 0.5) == pytest.approx(0.5 * 0.10 + 0.5 * 0.20)
    assert ops.price(np.array([0.25, 0.1]), np.array([0.0, 0.0])) == pytest.approx([0.06, 0.06 - 0.04 * 0.15 / 0.75])
    assert ops.price(0.0, 0.0) == 0.0
    plain = ops.model_copy(update={"narrow_float_ms": None, "narrow_quant_ms": None, "narrow_mact": None})
    assert plain.price(0.25, 0.0) == pytest.approx(0.025)


def test_a_model_whose_layers_run_unlike_the_calibrations_models_is_flagged(caplog):
    """Its in-graph/table factor against the calibration's models': near 1 carries over; far from 1 the float
    one warns, and the int8 one scales the quantized layer sums."""
    _, graph = zoo_model("resnet20")
    space = shipped_space("resnet20", graph)
    fitted = Calibration(coefficients={"sum_float_ms": 1.0, "sum_quant_ms": 1.0}, models=["resnet20@3x32x32"])

    def ops(fp32: float, int8: float) -> GraphOps:
        return GraphOps(float_ms=0.0, mact=1.0, layers_ms={"fp32": fp32, "int8": int8},
                        table_ms={"fp32": 1.0, "int8": 1.0})

    profile = roofline_profile().model_copy(update={
        "calibration": fitted,
        "graph_ops": {"resnet20@3x32x32": ops(0.85, 0.65), "resnet56@3x32x32": ops(0.88, 0.66),
                      "vgg@3x32x32": ops(1.05, 0.82)}})
    assert profile.context_ratios("resnet20", (3, 32, 32)) == {"fp32": pytest.approx(1.0), "int8": pytest.approx(1.0)}
    assert profile.context_ratios("resnet56", (3, 32, 32))["fp32"] == pytest.approx(0.88 / 0.85)
    assert profile.context_ratios("lenet5", (1, 28, 28)) == {}  # not measured in its graph
    with caplog.at_level("WARNING", logger="autocompress.hardware.cost_model"):
        CostModel(profile, space, model="resnet56")
        assert not caplog.records
        CostModel(profile, space, model="vgg", warn_context=False)  # validation calibrating on it
        assert not caplog.records
        CostModel(profile, space, model="vgg")
    (record,) = caplog.records
    assert "1.24x (fp32)" in record.getMessage() and "int8" not in record.getMessage()  # int8: priced in context
    assert "autocompress profile validate PROFILE --models vgg" in record.getMessage()
    # a calibration takes each model's quantized layer sums scaled by its int8 factor over its fitted models'
    vgg, own = CostModel(profile, space, model="vgg", warn_context=False), CostModel(profile, space, model="resnet20")
    assert vgg.quant_context == pytest.approx(0.82 / 0.65) and own.quant_context == pytest.approx(1.0)
    int8, fp32 = space.uniform(w_bits=8, a_bits=8), space.identity()
    assert vgg.predict(int8).latency_ms == pytest.approx(own.predict(int8).latency_ms * 0.82 / 0.65)
    assert vgg.predict(fp32).latency_ms == pytest.approx(own.predict(fp32).latency_ms)  # float sums as they are
    assert CostModel(profile, space, model="lenet5").quant_context == 1.0  # not measured in its graph


def test_calibration_fits_what_the_graph_ops_leave():
    """Whole-model latencies = calibrated layer sums + graph ops: the fit recovers the sums' formula."""
    model, costs = lenet_priced()
    space = costs.space
    rng = np.random.default_rng(0)
    candidates = [space.sample(rng) for _ in range(24)]
    raw = costs.predict_batch(space.encoding.encode(candidates))
    ops = GraphOps(float_ms=0.05, quant_ms=0.08, mact=float(np.max(raw["mact_float"] + raw["mact_quant"])))
    key = calibration_key("lenet5", (1, 28, 28))
    profile = costs.profile.model_copy(update={"graph_ops": {key: ops}})
    truth = Calibration(coefficients={"sum_float_ms": 0.8, "sum_quant_ms": 0.6}, offset_ms=0.01)
    samples = []
    for i, candidate in enumerate(candidates):
        features = np.array([raw[f][i] for f in CALIBRATION_FEATURES])
        named = dict(zip(CALIBRATION_FEATURES, features, strict=True))
        measured = float(truth.apply(named) + ops.price(named["mact_float"], named["mact_quant"]))
        samples.append(Sample("lenet5", "calibrate" if i < 16 else "validate", "fp32-only", candidate, features,
                              measured, (measured, measured)))
    updated, report = score_samples(profile, [Suite("lenet5", model, space)], samples, ["fp32-only"])
    fitted = updated.model_calibrations[key]
    assert fitted.coefficients["sum_float_ms"] == pytest.approx(0.8, rel=1e-3)
    for row in report["samples"]:
        assert row["graph_ops_ms"] > 0 and row["predicted_ms"] == pytest.approx(row["measured_ms"], rel=1e-3)


def test_profile_measure_times_the_graph_ops_once(tmp_path):
    out = tmp_path / "lenet.json"
    cmd = [sys.executable, "-m", "autocompress.cli", "profile", "measure", "--models", "lenet5", "--input-shape",
           "1x28x28", "--rounds", "1", "--reps", "2", "--passes", "1", "--out", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    ops = HardwareProfile.load(out).graph_ops["lenet5@1x28x28"]
    assert ops.float_ms > 0 and ops.quant_ms > 0 and "between layers[lenet5@1x28x28]" in done.stdout
    # the layers in context, against the same profile's table for the float and the all-int8 build
    assert set(ops.layers_ms) == set(ops.table_ms) == {"fp32", "int8"}
    # and the narrowest uniform build's operations, between none and the full build's activations
    assert ops.narrow_float_ms is not None and ops.narrow_quant_ms is not None and 0 < ops.narrow_mact < ops.mact
    assert "layers in context[lenet5@1x28x28]" in done.stdout
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=600)  # nothing new: the file is untouched
    assert again.returncode == 0 and HardwareProfile.load(out).graph_ops["lenet5@1x28x28"] == ops


def test_graph_ops_timed_in_passes_keep_every_node_at_its_fastest():
    """A pass in a slow spell does not count: each node type, build and layer time at its fastest pass."""
    quiet = GraphOps(float_ms=0.09, quant_ms=0.19, mact=1.0, by_op={"fp32": {"Mul": 0.04, "ReduceMean": 0.05},
                                                                   "int8": {"QuantizeLinear": 0.19}},
                     layers_ms={"fp32": 1.4, "int8": 0.6}, table_ms={"fp32": 1.5, "int8": 0.6},
                     narrow_float_ms=0.05, narrow_quant_ms=0.1, narrow_mact=0.25)
    slow = quiet.model_copy(update={"float_ms": 0.23, "by_op": {"fp32": {"Mul": 0.03, "ReduceMean": 0.2},
                                                                "int8": {"QuantizeLinear": 0.25}},
                                    "layers_ms": {"fp32": 1.7, "int8": 0.5}, "narrow_float_ms": 0.12})
    merged = fastest([slow, quiet])
    assert merged.by_op == {"fp32": {"Mul": 0.03, "ReduceMean": 0.05}, "int8": {"QuantizeLinear": 0.19}}
    assert merged.float_ms == pytest.approx(0.08) and merged.quant_ms == pytest.approx(0.19)
    assert merged.layers_ms == {"fp32": 1.4, "int8": 0.5} and merged.table_ms == quiet.table_ms
    assert merged.narrow_float_ms == 0.05 and merged.narrow_quant_ms == 0.1 and merged.narrow_mact == 0.25
    assert fastest([quiet]) == quiet
    with pytest.raises(ValueError, match="no passes"):
        fastest([])
