"""autocompress.hardware.energy: the analytic model's numbers, table validation, the estimate's label."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest

from autocompress.hardware.energy import (
    HOROWITZ_45NM,
    EnergyEstimate,
    EnergyTable,
    EnergyTableError,
    layer_energy,
    model_energy,
)
from autocompress.hardware.signature import LayerSignature

UJ = 1e-3  # 1 µJ in mJ


def conv(cin=64, cout=64, hw=8, precision="fp32", sparsity=0.0, k=3) -> LayerSignature:
    return LayerSignature("conv", cin, cout, (k, k), (1, 1), (k // 2, k // 2), 1, (hw, hw), precision, sparsity)


# -- the analytic model ------------------------------------------------------------------------------


def test_horowitz_mac_energies_are_the_published_sums():
    assert HOROWITZ_45NM.mac_pj["fp32"] == pytest.approx(3.7 + 0.9)
    assert HOROWITZ_45NM.mac_pj["int8"] == pytest.approx(0.2 + 0.1)  # int8 mult, int32 accumulate
    assert HOROWITZ_45NM.memory_pj_per_byte["dram"] == pytest.approx(162.5)
    assert HOROWITZ_45NM.memory_pj_per_byte["sram_large"] == pytest.approx(12.5)


def test_fp32_conv_sanity_numbers():
    sig = conv()  # 3x3 64->64 at 8x8: 2.36M MACs
    assert sig.macs == 64 * 64 * 9 * 64
    e = layer_energy(sig, HOROWITZ_45NM)
    assert e.compute_mj == pytest.approx(sig.macs * 4.6e-9)  # ~10.9 µJ
    assert 10 * UJ < e.total_mj < 50 * UJ
    assert e.total_mj == pytest.approx(e.compute_mj + e.memory_mj)
    assert e.method == "modelled:horowitz-45nm" and not e.is_measured


def test_int8_is_10_to_20x_cheaper_in_compute_and_cheaper_overall():
    fp32, int8 = layer_energy(conv(), HOROWITZ_45NM), layer_energy(conv(precision="int8"), HOROWITZ_45NM)
    assert 10 <= fp32.compute_mj / int8.compute_mj <= 20
    assert int8.memory_mj < fp32.memory_mj and int8.total_mj < fp32.total_mj


def test_sub_8_bit_weights_move_fewer_bytes_but_compute_the_same():
    int8 = layer_energy(conv(precision="int8"), HOROWITZ_45NM)
    w4 = layer_energy(conv(precision="int8"), HOROWITZ_45NM, w_bits=4)
    assert w4.compute_mj == int8.compute_mj
    weight_bytes_saved = conv().weight_params * 4 / 8
    assert int8.memory_mj - w4.memory_mj == pytest.approx(weight_bytes_saved * 12.5e-9)


def test_sparsity_lowers_compute_and_weight_bytes():
    dense, sparse = layer_energy(conv(), HOROWITZ_45NM), layer_energy(conv(sparsity=0.5), HOROWITZ_45NM)
    assert sparse.compute_mj == pytest.approx(dense.compute_mj / 2)
    # weights halve (nonzeros only) and register traffic halves; activations stay
    act_bytes = (conv().input_elements + conv().output_elements) * 4
    assert sparse.memory_mj < dense.memory_mj
    assert sparse.memory_mj > act_bytes * 12.5e-9


def test_working_set_over_the_on_chip_buffer_goes_to_dram():
    sig = conv()
    working_set = sig.weight_params * 4 + (sig.input_elements + sig.output_elements) * 4
    big = dataclasses.replace(HOROWITZ_45NM, on_chip_bytes=working_set)
    small = dataclasses.replace(HOROWITZ_45NM, on_chip_bytes=working_set // 2)
    none = dataclasses.replace(HOROWITZ_45NM, on_chip_bytes=0)
    e_big, e_small, e_none = (layer_energy(sig, t) for t in (big, small, none))
    register_mj = sig.macs * 8 * 0.1e-9
    assert e_big.memory_mj == pytest.approx(working_set * 12.5e-9 + register_mj)
    assert e_none.memory_mj == pytest.approx(working_set * 162.5e-9 + register_mj)
    assert e_big.memory_mj < e_small.memory_mj < e_none.memory_mj
    assert e_big.compute_mj == e_none.compute_mj
    # continuous at the boundary: one byte over costs only one byte's difference
    just_over = dataclasses.replace(HOROWITZ_45NM, on_chip_bytes=working_set - 1)
    assert layer_energy(sig, just_over).memory_mj - e_big.memory_mj == pytest.approx((162.5 - 12.5) * 1e-9)


def test_linear_layer_and_model_sum():
    head = LayerSignature("linear", 64, 10, precision="fp32")
    e_head = layer_energy(head, HOROWITZ_45NM)
    assert e_head.compute_mj == pytest.approx(640 * 4.6e-9)
    body = conv(16, 16, 32)
    total = model_energy([(body, 32, 32), (head, 32, 32)], HOROWITZ_45NM)
    e_body = layer_energy(body, HOROWITZ_45NM)
    assert total.total_mj == pytest.approx(e_body.total_mj + e_head.total_mj)
    assert total.compute_mj == pytest.approx(e_body.compute_mj + e_head.compute_mj)
    assert total.method == "modelled:horowitz-45nm"
    assert model_energy([], HOROWITZ_45NM).total_mj == 0.0


def test_layer_energy_rejects_what_it_cannot_price():
    with pytest.raises(EnergyTableError, match="no MAC energy for precision 'bf16'"):
        layer_energy(conv(precision="bf16"), HOROWITZ_45NM)
    with pytest.raises(EnergyTableError, match="no MAC energy for precision 'int4'"):
        layer_energy(conv(precision="int4"), HOROWITZ_45NM)
    with pytest.raises(ValueError, match="w_bits must be a positive integer"):
        layer_energy(conv(), HOROWITZ_45NM, w_bits=0)


# -- the table as data ---------------------------------------------------------------------------------


def test_table_round_trips_through_json():
    data = json.loads(json.dumps(HOROWITZ_45NM.to_dict()))
    assert EnergyTable.from_dict(data) == HOROWITZ_45NM


@pytest.mark.parametrize("patch, message", [
    ({"mac_pj": {"fp32": -1.0}}, r"mac_pj\['fp32'\] must be a finite non-negative number"),
    ({"mac_pj": {"fp8e4": 1.0}}, r"mac_pj has unknown key 'fp8e4'"),
    ({"mac_pj": {"fp32": "4.6"}}, r"mac_pj\['fp32'\] must be a finite non-negative number"),
    ({"mac_pj": {}}, r"mac_pj must be a non-empty mapping"),
    ({"memory_pj_per_byte": {"register": 0.1, "dram": -2.0, "sram_large": 1.0}}, r"memory_pj_per_byte\['dram'\]"),
    ({"memory_pj_per_byte": {"register": 0.1, "dram": 160.0, "l9": 1.0}}, r"unknown key 'l9'"),
    ({"memory_pj_per_byte": {"register": 0.1, "dram": 160.0}}, r"missing \['sram_large'\]"),
    ({"on_chip_bytes": -1}, r"on_chip_bytes must be a non-negative integer"),
    ({"colour": "blue"}, r"unknown field\(s\) \['colour'\]"),
])
def test_table_validation_errors_are_clear(patch, message):
    data = {**HOROWITZ_45NM.to_dict(), **patch}
    with pytest.raises(EnergyTableError, match=message) as info:
        EnergyTable.from_dict(data)
    assert "horowitz-45nm" in str(info.value)


def test_table_missing_field_is_named():
    data = HOROWITZ_45NM.to_dict()
    del data["on_chip_bytes"]
    with pytest.raises(EnergyTableError, match=r"missing field\(s\) \['on_chip_bytes'\]"):
        EnergyTable.from_dict(data)


def test_table_does_not_alias_callers_dicts():
    mac = {"fp32": 4.6}
    table = EnergyTable(name="t", source="s", mac_pj=mac, on_chip_bytes=0,
                        memory_pj_per_byte={"register": 0.1, "dram": 160.0, "sram_large": 12.5})
    mac["fp32"] = 100.0
    assert table.mac_pj["fp32"] == 4.6


def test_measured_estimate_label():
    e = EnergyEstimate(total_mj=2.0, compute_mj=math.nan, memory_mj=math.nan, method="measured:rapl")
    assert e.is_measured
