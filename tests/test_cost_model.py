"""CostModel against the built models it never builds, on an analytic profile."""

import numpy as np
import pytest

from autocompress.compress import materialize
from autocompress.counting import count_model
from autocompress.graph import ModelGraph
from autocompress.hardware import (
    HOROWITZ_45NM,
    CostModel,
    LayerSignature,
    ProfileError,
    analytic_profile,
    leaf_signatures,
    required_signatures,
    roofline_ms,
)
from autocompress.hardware.energy import layer_energy
from autocompress.hardware.profile import Entry, calibration_key
from autocompress.space import Candidate, SearchSpace
from tests.helpers import shipped_space, zoo_model
from tests.zoo_models import TOYS

RATES = {"fp32": 2e10, "int8": 8e10}


def _profile(**kwargs):
    return analytic_profile(name="test-roofline", device="test accelerator", peak_macs_per_s=RATES,
                            bandwidth_bytes_per_s=2e10, energy_table=HOROWITZ_45NM, layer_overhead_ms=0.002, **kwargs)


def _tabulated(profile, space):
    """The same device as a lookup table, as a measured profile would hold it."""
    r = profile.roofline
    entries = {k: Entry(latency_ms=roofline_ms(LayerSignature.parse(k), peak_macs_per_s=r.peak_macs_per_s,
                                               bandwidth_bytes_per_s=r.bandwidth_bytes_per_s,
                                               layer_overhead_ms=r.layer_overhead_ms))
               for k in required_signatures(space, ["fp32", "int8"])}
    return profile.model_copy(update={"roofline": None, "entries": entries})


def _residual_concat_space():
    """A toy with residual adds and concats, where no dimension and no width offers the identity."""
    graph = ModelGraph.from_model(TOYS["residual_concat"]().eval(), (3, 32, 32))
    return SearchSpace.from_dict(graph, {"name": "t", "defaults": {
        "keep": [0.5, 0.75], "w_bits": [4, 8], "a_bits": [8], "rank": [0.5], "sparsity": [0.25, 0.5]},
        "scaling": {"mode": "explicit", "width": [0.5, 0.75]}})


@pytest.mark.parametrize(("space_of", "sparse_kernels"), [
    (lambda: shipped_space("resnet20", zoo_model("resnet20")[1]), False),
    (lambda: shipped_space("mobilenetv2_cifar", zoo_model("mobilenetv2_cifar")[1]), False),
    (_residual_concat_space, True),
], ids=["resnet20", "mobilenetv2_cifar", "residual_concat"])
def test_required_signatures_hold_every_signature_the_cost_model_looks_up(space_of, sparse_kernels):
    space = space_of()
    profile = _profile(sparse_kernels=sparse_kernels)
    keys = required_signatures(space, ["fp32", "int8"], sparse_kernels=sparse_kernels)
    # exactly the listed signatures at 1 ms each, nothing to fall back on: a lookup outside the list fails
    listed = profile.model_copy(update={"roofline": None, "entries": {k: Entry(latency_ms=1.0) for k in keys}})
    costs = CostModel(listed, space)
    assert not costs.interpolated
    candidates = [space.identity(), space.uniform(keep=0.5, w_bits=8, a_bits=8)] + [space.sample(i) for i in range(5)]
    leaves = [sum(len(leaf_signatures(cfg, "fp32")) for cfg in space.layer_configs(c)) for c in candidates]
    np.testing.assert_array_equal(costs.predict_batch(space.encoding.encode(candidates))["latency_sum_ms"], leaves)


@pytest.fixture(scope="module")
def resnet20_costs():
    model, graph = zoo_model("resnet20")
    space = shipped_space("resnet20", graph)
    profile = _tabulated(_profile(), space)
    return model, space, profile, CostModel(profile, space)


def _by_hand(space, profile, candidate):
    """Walk the candidate's layers one by one: what the tables must add up to."""
    latency = energy = 0.0
    for cfg in space.layer_configs(candidate):
        precision = profile.precision_for(cfg.w_bits, cfg.a_bits)
        for leaf in leaf_signatures(cfg, precision):
            latency += roofline_ms(leaf, peak_macs_per_s=RATES, bandwidth_bytes_per_s=2e10, layer_overhead_ms=0.002)
            energy += layer_energy(LayerSignature(**{**leaf.__dict__, "sparsity": cfg.sparsity}), HOROWITZ_45NM,
                                   w_bits=cfg.w_bits, a_bits=cfg.a_bits).total_mj
    return latency, energy


def test_costs_match_layer_by_layer_pricing_and_the_built_model(resnet20_costs):
    model, space, profile, costs = resnet20_costs
    rng = np.random.default_rng(0)
    for candidate in [space.identity(), space.uniform(keep=0.5, w_bits=8, a_bits=8)] + [space.sample(rng) for _ in range(4)]:
        predicted = costs.predict(candidate)
        latency, energy = _by_hand(space, profile, candidate)
        assert predicted.latency_ms == pytest.approx(latency, rel=1e-9)
        assert predicted.energy_mj == pytest.approx(energy, rel=2e-3)  # masks round to whole weights
        counted = count_model(materialize(model, candidate, space), (3, *space.input_resolution(candidate)))
        assert predicted.macs == pytest.approx(counted.effective_macs, rel=1e-6)
        assert predicted.bitops == pytest.approx(counted.bitops, rel=1e-6)
        # size: deployable weights with BN folded into a per-channel bias of every layer, priced and counted alike
        assert predicted.size_bytes == pytest.approx(counted.size_bytes)


def test_analytic_profile_prices_without_a_table(resnet20_costs):
    _, space, tabulated, costs = resnet20_costs
    analytic = CostModel(_profile(), space)
    for seed in range(5):
        candidate = space.sample(seed)
        assert analytic.predict(candidate).latency_ms == pytest.approx(costs.predict(candidate).latency_ms)


def test_vectorized_equals_one_by_one(resnet20_costs):
    _, space, _, costs = resnet20_costs
    candidates = [space.sample(i) for i in range(30)]
    batch = costs.predict_batch(space.encoding.encode(candidates))
    for i, candidate in enumerate(candidates):
        one = costs.predict(candidate)
        assert batch["latency_ms"][i] == pytest.approx(one.latency_ms)
        assert batch["size_bytes"][i] == pytest.approx(one.size_bytes)
    random_batch = costs.predict_batch(space.encoding.random(500, rng=1))
    reference = costs.reference()
    assert (random_batch["latency_ms"] <= reference.latency_ms + 1e-9).all()
    assert (random_batch["macs"] <= reference.macs).all()


def test_compression_lowers_every_cost(resnet20_costs):
    _, space, _, costs = resnet20_costs
    ref = costs.reference()
    small = costs.predict(space.uniform(keep=0.5, w_bits=8, a_bits=8, sparsity=0.5))
    assert small.quantized_layers > 0 and ref.quantized_layers == 0
    for field in ("latency_ms", "energy_mj", "size_bytes", "macs", "bitops"):
        assert getattr(small, field) < getattr(ref, field), field
    assert small.energy_method == "modelled"


def test_missing_signature_is_named(resnet20_costs):
    _, space, profile, _ = resnet20_costs
    entries = dict(profile.entries)
    victim = next(k for k in entries if k.startswith("conv:in16:out16:k3x3") and k.endswith("int8"))
    del entries[victim]
    with pytest.raises(ProfileError, match=r"no entry for 1 layer signature.*" + victim):
        CostModel(profile.model_copy(update={"entries": entries}), space)


def test_declared_interpolation_fills_gaps(resnet20_costs):
    _, space, profile, full = resnet20_costs
    # drop every third 3x3 convolution: each dropped one keeps measured neighbours of other widths
    entries = {k: v for i, (k, v) in enumerate(sorted(profile.entries.items())) if i % 3 or ":k3x3:" not in k}
    sparse = CostModel(profile.model_copy(update={"entries": entries, "interpolation": "channels"}), space)
    assert sparse.interpolated
    indices = space.encoding.random(200, rng=2)
    exact, approx = full.predict_batch(indices)["latency_ms"], sparse.predict_batch(indices)["latency_ms"]
    assert np.median(np.abs(approx - exact) / exact) < 0.05


def test_boundaries_count_float_int8_switches_between_running_units():
    _, graph = zoo_model("resnet56")  # deep enough for phi -2 to drop blocks
    space = shipped_space("resnet56", graph)
    profile = _profile()
    costs = CostModel(profile, space)
    for uniform in (space.identity(), space.uniform(w_bits=8, a_bits=8), space.uniform(phi=-2, w_bits=8, a_bits=8)):
        out = costs.predict_batch(space.encoding.encode([uniform]))
        assert out["boundaries"][0] == 0 and out["boundary_mact"][0] == 0
    # every third unit float where its space allows it, at a scaling that drops blocks
    data = space.uniform(phi=-2, w_bits=8, a_bits=8).to_dict()
    for i, unit in enumerate(data["layers"]):
        if i % 3 == 0 and 32 in space.choices[unit]["w_bits"] and 32 in space.choices[unit]["a_bits"]:
            data["layers"][unit].update(w_bits=32, a_bits=32)
        if i % 2 == 0 and min(space.choices[unit]["rank"]) < 1:  # factorized units: two leaves, one input
            data["layers"][unit].update(rank=min(space.choices[unit]["rank"]))
    mixed = space.validate(Candidate.from_dict(data))
    assert len(space.layer_configs(mixed)) < len(space.graph.units)  # the scaling drops blocks
    switches, converted, previous = 0, 0.0, None
    for cfg in space.layer_configs(mixed):  # the running units, in execution order
        quant = profile.precision_for(cfg.w_bits, cfg.a_bits) != "fp32"
        if previous is not None and quant != previous:
            switches += 1
            converted += cfg.in_channels * cfg.in_hw[0] * cfg.in_hw[1] / 1e6
        previous = quant
    out = costs.predict_batch(space.encoding.encode([mixed]))
    assert switches > 4 and out["boundaries"][0] == switches
    assert out["boundary_mact"][0] == pytest.approx(converted)


def test_calibration_applies_per_precision(resnet20_costs):
    _, space, profile, _ = resnet20_costs
    from autocompress.hardware.profile import Calibration

    pooled = Calibration(coefficients={"sum_float_ms": 0.5, "sum_quant_ms": 2.0}, offset_ms=1.0)
    own = Calibration(coefficients={"sum_float_ms": 0.9, "layers_float": -0.001, "layers_quant": -0.002})
    calibrated = profile.model_copy(update={"calibration": pooled, "model_calibrations": {"resnet20": own}})
    base, cal = CostModel(profile, space), CostModel(calibrated, space)
    mine = CostModel(calibrated, space, model="resnet20")
    fp32, int8 = space.uniform(keep=0.5), space.uniform(keep=0.5, w_bits=8, a_bits=8)
    assert cal.predict(fp32).latency_ms == pytest.approx(0.5 * base.predict(fp32).latency_ms + 1.0)
    assert cal.predict(int8).latency_ms == pytest.approx(2.0 * base.predict(int8).latency_ms + 1.0)
    layers = sum(len(leaf_signatures(c, "fp32")) for c in space.layer_configs(fp32))
    assert mine.predict(fp32).latency_ms == pytest.approx(0.9 * base.predict(fp32).latency_ms - 0.001 * layers)
    # a calibration fitted at this input shape wins over the model's shape-less one; another shape's does not
    shaped = Calibration(coefficients={"sum_float_ms": 0.7})
    here, there = calibration_key("resnet20", space.graph.input_shape), calibration_key("resnet20", (1, 28, 28))
    assert here == "resnet20@3x32x32"

    def with_calibrations(calibrations):
        return calibrated.model_copy(update={"model_calibrations": calibrations})

    assert with_calibrations({"resnet20": own, here: shaped}).calibration_for("resnet20", (3, 32, 32)) == shaped
    assert with_calibrations({"resnet20": own, there: shaped}).calibration_for("resnet20", (3, 32, 32)) == own
    assert with_calibrations({there: shaped}).calibration_for("resnet20", (3, 32, 32)) == pooled
    shaped_costs = CostModel(with_calibrations({here: shaped}), space, model="resnet20")
    assert shaped_costs.predict(fp32).latency_ms == pytest.approx(0.7 * base.predict(fp32).latency_ms)
