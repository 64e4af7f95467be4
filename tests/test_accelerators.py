"""Analytic accelerator models: BitFusion-like bit-flexible pricing, Eyeriss-like data movement, their profiles."""

import json
import subprocess
import sys

import pytest

from autocompress.hardware import (
    BitFusionModel,
    CostModel,
    EyerissModel,
    HardwareProfile,
    LayerSignature,
    ProfileError,
    accelerator_model,
    accelerator_profile,
    layer_cost,
    row_stationary_movement,
)
from autocompress.hardware.accelerators import bricks
from autocompress.hardware.profile import find_profile
from tests.helpers import open_space, zoo_model

BITFUSION = BitFusionModel()
EYERISS = EyerissModel()


def conv(cin, cout, k, hw, precision, groups=1, stride=1) -> LayerSignature:
    return LayerSignature("conv", cin, cout, (k, k), (stride, stride), (k // 2, k // 2), groups, (hw, hw), precision)


def linear(cin, cout, precision, tokens=1) -> LayerSignature:
    return LayerSignature("linear", cin, cout, in_hw=(tokens, 1), precision=precision)


# -- BitFusion ------------------------------------------------------------------------------------------
def test_a_mac_costs_ceil_half_bits_squared_bricks():
    assert [bricks(BITFUSION, b, b) for b in (8, 4, 2)] == [16, 4, 1]
    assert bricks(BITFUSION, 8, 4) == 8 and bricks(BITFUSION, 6, 6) == 9 and bricks(BITFUSION, 3, 5) == 6
    padded = BitFusionModel(operand_rounding="power_of_two")  # BitFusion's spatial fusion widths: 6 runs as 8
    assert bricks(padded, 6, 6) == 16 and bricks(padded, 3, 8) == 8


def test_lower_bits_cut_latency_and_energy_of_a_compute_bound_layer_by_the_brick_ratio():
    costs = {b: layer_cost(BITFUSION, conv(256, 48, 3, 28, f"w{b}a{b}")) for b in (8, 4, 2)}
    assert all(c.bound == "compute" for c in costs.values())
    assert costs[8].latency_ms > costs[4].latency_ms > costs[2].latency_ms
    assert costs[8].latency_ms / costs[4].latency_ms == pytest.approx(4.0)  # 16 / 4 bricks, no tiling remainder
    assert costs[4].latency_ms / costs[2].latency_ms == pytest.approx(4.0)
    assert costs[8].energy_mj > costs[4].energy_mj > costs[2].energy_mj
    assert costs[8].energy_pj["bricks"] == pytest.approx(4 * costs[4].energy_pj["bricks"])
    # 16x32 fusion units x 16 bricks at 500 MHz: 8x8 runs 512 MACs a cycle on a layer that fills the array
    sig = conv(256, 48, 3, 28, "w8a8")
    cycles = costs[8].compute_ms * 1e-3 * BITFUSION.clock_hz
    assert cycles == pytest.approx(sig.macs / 512 * 64 / 48)  # 48 output channels take two 32-column passes


def test_every_bit_width_pair_is_priced_on_its_own():
    energies = {(w, a): layer_cost(BITFUSION, conv(64, 64, 3, 16, f"w{w}a{a}")).energy_mj
                for w in range(2, 9) for a in range(2, 9)}
    assert len(set(energies.values())) == 49
    for w in range(2, 8):
        assert energies[(w, 4)] < energies[(w + 1, 4)] and energies[(4, w)] < energies[(4, w + 1)]


def test_a_memory_bound_layer_scales_with_the_bytes_it_moves():
    sig8, sig4 = linear(4096, 4096, "w8a8"), linear(4096, 4096, "w4a8")
    c8, c4 = layer_cost(BITFUSION, sig8), layer_cost(BITFUSION, sig4)
    assert c8.bound == c4.bound == "dram"
    moved8 = sig8.weight_params * 1 + (sig8.input_elements + sig8.output_elements) * 1
    moved4 = sig4.weight_params * 0.5 + (sig4.input_elements + sig4.output_elements) * 1
    assert c8.latency_ms == pytest.approx(moved8 / BITFUSION.dram_bytes_per_s * 1e3)
    assert c8.latency_ms / c4.latency_ms == pytest.approx(moved8 / moved4)
    assert c8.energy_pj["dram"] / c4.energy_pj["dram"] == pytest.approx(moved8 / moved4)
    faster = layer_cost(BitFusionModel(dram_bytes_per_s=2 * BITFUSION.dram_bytes_per_s), sig8)
    assert faster.latency_ms == pytest.approx(c8.latency_ms / 2)


def test_a_layer_over_its_buffers_reads_its_input_again_per_weight_tile():
    small = layer_cost(BITFUSION, conv(64, 64, 3, 8, "w8a8"))  # 36 KiB of weights, 4 KiB of input: both fit
    inputs = 64 * 8 * 8
    # the input still fits: it stays on chip while the weights stream through once
    assert layer_cost(BitFusionModel(weight_buffer_bytes=16 * 1024), conv(64, 64, 3, 8, "w8a8")).energy_pj["dram"] \
        == pytest.approx(small.energy_pj["dram"])
    # neither fits: three weight tiles, the (smaller) input read once per tile
    tight = layer_cost(BitFusionModel(weight_buffer_bytes=16 * 1024, input_buffer_bytes=2 * 1024),
                       conv(64, 64, 3, 8, "w8a8"))
    assert tight.energy_pj["dram"] - small.energy_pj["dram"] == pytest.approx(2 * inputs * BITFUSION.dram_pj_per_byte)


def test_depthwise_layers_run_groups_side_by_side():
    dw = layer_cost(BITFUSION, conv(64, 64, 3, 16, "w8a8", groups=64))
    # 16 single-channel groups at once on the diagonal, 9 cycles a pixel for 9 products of 16 bricks each
    assert dw.compute_ms * 1e-3 * BITFUSION.clock_hz == pytest.approx(4 * 16 * 16 * 9)
    assert layer_cost(BITFUSION, conv(64, 64, 3, 16, "w4a4", groups=64)).compute_ms < dw.compute_ms


def test_unquantized_layers_run_at_16_bits_and_sparsity_saves_energy():
    wide = layer_cost(BITFUSION, conv(256, 48, 3, 28, BITFUSION.precision_for(32, 32)))
    eight = layer_cost(BITFUSION, conv(256, 48, 3, 28, "w8a8"))
    assert BITFUSION.precision_for(32, 32) == "w16a16" and wide.compute_ms == pytest.approx(4 * eight.compute_ms)
    sparse = LayerSignature("conv", 256, 48, (3, 3), (1, 1), (1, 1), 1, (28, 28), "w8a8", sparsity=0.5)
    assert layer_cost(BITFUSION, sparse).energy_mj < eight.energy_mj
    with pytest.raises(ProfileError, match="precision 'int8' is not one an accelerator model prices"):
        layer_cost(BITFUSION, conv(8, 8, 3, 8, "int8"))


# -- Eyeriss ----------------------------------------------------------------------------------------------
def test_without_reuse_dram_dominates_the_data_movement_energy():
    lonely = layer_cost(EYERISS, linear(512, 512, "w8a8"))  # every weight fetched for one MAC
    assert lonely.energy_pj["dram"] > 0.75 * sum(lonely.energy_pj.values())
    assert lonely.energy_pj["dram"] > 10 * lonely.energy_pj["mac"]
    reused = layer_cost(EYERISS, conv(64, 64, 3, 32, "w8a8"))  # each weight used 1024 times, each input 576
    assert reused.energy_pj["dram"] < 0.1 * sum(reused.energy_pj.values())
    assert reused.energy_pj["rf"] == max(reused.energy_pj.values())  # row stationary: most access at the RF


def test_row_stationary_counts_and_bits_scale_words():
    sig = linear(100, 10, "w8a8")
    m = row_stationary_movement(sig, w_bits=8, a_bits=4)
    assert m.macs == 1000
    assert m.words["rf"] == pytest.approx({"weights": 500, "inputs": 250, "psums": 2000})
    assert m.words["dram"] == pytest.approx({"weights": 500, "inputs": 25, "psums": 2.5})
    pj = m.energy_pj(unit_pj=2.0)
    assert pj["dram"] == pytest.approx((500 + 25 + 2.5) * 200 * 2.0) and pj["mac"] == 2000


def test_eyeriss_bits_save_energy_not_cycles():
    c16 = layer_cost(EYERISS, conv(64, 64, 3, 32, EYERISS.precision_for(32, 32)))
    c8, c4 = (layer_cost(EYERISS, conv(64, 64, 3, 32, p)) for p in ("w8a8", "w4a4"))
    assert c16.energy_mj > c8.energy_mj > c4.energy_mj
    assert c16.compute_ms == c8.compute_ms == c4.compute_ms  # 16-bit PEs
    # 3-row PE sets: 4 stack in the 12 rows, 14 columns of output rows -> all 168 PEs busy
    assert c8.compute_ms * 1e-3 * EYERISS.clock_hz == pytest.approx(conv(64, 64, 3, 32, "w8a8").macs / 168)


# -- profiles ---------------------------------------------------------------------------------------------
def test_profile_round_trips_and_names_bad_fields(tmp_path):
    profile = accelerator_profile(accelerator_model("bitfusion", clock_hz=4e8, operand_rounding="power_of_two"),
                                  name="bf", command="test")
    again = HardwareProfile.load(profile.save(tmp_path / "bf.json"))
    assert again == profile and again.kind == "analytic" and again.accelerator.clock_hz == 4e8
    assert again.precision_for(4, 6) == "w4a6" and again.precision_for(32, 8) == "w16a8"
    assert HardwareProfile.load(accelerator_profile("eyeriss", name="ey").save(tmp_path / "ey.json")).accelerator == EYERISS
    data = json.loads((tmp_path / "bf.json").read_text())
    data["accelerator"]["rows"] = 0
    (tmp_path / "bad.json").write_text(json.dumps(data))
    with pytest.raises(ProfileError, match=r"bad.json: field accelerator.bitfusion.rows: Input should be greater"):
        HardwareProfile.load(tmp_path / "bad.json")
    data["accelerator"]["rows"], data["kind"] = 16, "measured"
    with pytest.raises(ProfileError, match="accelerator model belongs to a profile of kind 'analytic'"):
        HardwareProfile.from_data(data, "x.json")
    with pytest.raises(ProfileError, match=r"unknown accelerator model 'tpu'; expected one of \['bitfusion', 'eyeriss'\]"):
        accelerator_model("tpu")
    with pytest.raises(ProfileError, match="field nope: Extra inputs are not permitted"):
        accelerator_model("eyeriss", nope=1)


def test_cli_writes_and_shows_a_bitfusion_profile(tmp_path):
    path = tmp_path / "bitfusion.json"
    done = subprocess.run([sys.executable, "-m", "autocompress.cli", "profile", "analytic", "--model", "bitfusion",
                           "--param", "clock_hz=4e8", "--param", "operand_rounding=power_of_two", "--out", str(path)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    profile = HardwareProfile.load(path)
    assert profile.accelerator.model == "bitfusion" and profile.accelerator.clock_hz == 4e8
    assert profile.accelerator.operand_rounding == "power_of_two"
    shown = subprocess.run([sys.executable, "-m", "autocompress.cli", "profile", "show", str(path)],
                           capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0 and "accelerator model: bitfusion" in shown.stdout
    assert "clock_hz" in shown.stdout and "4e+08" in shown.stdout and "brick_pj" in shown.stdout
    bad = subprocess.run([sys.executable, "-m", "autocompress.cli", "profile", "analytic", "--model", "eyeriss",
                          "--bandwidth-gbs", "3", "--out", str(tmp_path / "x.json")],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "--bandwidth-gbs: roofline options" in bad.stderr
    assert not (tmp_path / "x.json").exists()


# -- the cost model ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def lenet_bits_space():
    """LeNet-5 in a space offering every bit-width (the shipped spaces are left as they are)."""
    _, graph = zoo_model("lenet5")
    return open_space(graph, w_bits=[2, 3, 4, 5, 6, 7, 8, 32], a_bits=[2, 3, 4, 5, 6, 7, 8, 32])


def test_bits_change_bitfusion_pricing_but_not_cpu_int8_pricing(lenet_bits_space):
    space = lenet_bits_space
    low, high = space.uniform(w_bits=4, a_bits=4), space.uniform(w_bits=8, a_bits=8)
    bitfusion = CostModel(accelerator_profile("bitfusion", name="bf"), space)
    cl, ch = bitfusion.predict(low), bitfusion.predict(high)
    assert cl.latency_ms < ch.latency_ms and cl.energy_mj < ch.energy_mj
    assert cl.quantized_layers == ch.quantized_layers > 0 and bitfusion.reference().quantized_layers == 0
    assert cl.energy_method == "modelled"
    cpu = CostModel(find_profile("cpu-onnxruntime-1t"), space, model="lenet5")
    pl, ph = cpu.predict(low), cpu.predict(high)
    assert pl.latency_ms == ph.latency_ms  # both run on int8 kernels
    assert pl.quantized_layers == ph.quantized_layers > 0


def test_each_uniform_bit_width_prices_apart_under_bitfusion_and_eyeriss(lenet_bits_space):
    space = lenet_bits_space
    for name in ("bitfusion", "eyeriss"):
        costs = CostModel(accelerator_profile(name, name=name), space)
        energy = [costs.predict(space.uniform(w_bits=b, a_bits=b)).energy_mj for b in range(2, 9)]
        assert energy == sorted(energy) and len(set(energy)) == 7, name
    bitfusion = CostModel(accelerator_profile("bitfusion", name="bf"), space)
    latency = [bitfusion.predict(space.uniform(w_bits=b, a_bits=b)).latency_ms for b in (2, 4, 6, 8)]
    assert latency == sorted(latency) and len(set(latency)) == 4
    assert bitfusion.reference().latency_ms > latency[-1]  # unquantized: 16-bit operands
