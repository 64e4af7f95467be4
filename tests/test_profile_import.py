"""Importing published lookup tables (ProxylessNAS, Once-for-All, APQ, generic) on the real files."""

import hashlib
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from autocompress.cli import main
from autocompress.hardware import (
    CostModel,
    HardwareProfile,
    ProfileError,
    TableImportError,
    import_table,
)

OFA_RESOLUTIONS = (160, 176, 192, 208, 224)
GOLDEN = Path(__file__).parent / "fixtures" / "profile_v1.json"


@pytest.fixture(scope="module")
def apq(luts):
    return import_table(luts / "apq_bitfusion_b1.json", "apq")


def _blocks(profile):
    return {b.key: b for b in profile.imported.blocks}


def test_proxyless_every_key_parses_into_blocks(luts):
    path = luts / "proxylessnas_mobile.yaml"
    source = yaml.safe_load(path.read_text())
    profile = import_table(path, "proxyless")
    blocks = _blocks(profile)
    assert set(blocks) == set(source) and len(profile.imported.blocks) == len(source) == 72
    assert profile.imported.counts() == {"Conv": 1, "Conv_1": 1, "Logits": 1, "expanded_conv": 69}
    for key, value in source.items():  # every figure as published; std from the published variance
        b = blocks[key]
        assert (b.latency_ms, b.count, b.var_ms2) == (value["mean"], value["count"], value["var"])
        assert b.std_ms == pytest.approx(math.sqrt(value["var"]))
    b = blocks["expanded_conv-input:112x112x16-output:56x56x24-expand:3-kernel:5-stride:2-idskip:0"]
    assert (b.type, b.input_hwc, b.output_hwc) == ("expanded_conv", [112, 112, 16], [56, 56, 24])
    assert (b.expand, b.mid_channels, b.kernel, b.stride, b.idskip, b.se, b.hs) == (3, 48, 5, 2, False, None, None)
    assert (b.latency_ms, b.count) == (7.519106918238994, 159)
    logits = blocks["Logits-input:7x7x1280-output:1000"]
    assert (logits.input_hwc, logits.output_hwc, logits.kernel) == ([7, 7, 1280], [1000], None)
    assert profile.kind == "imported" and profile.device.name == "Google Pixel 1" and profile.runtime == "tflite"
    table = profile.imported
    assert (table.format, table.obtained, table.units, table.input_resolution) == ("proxyless", "measured",
                                                                                   {"latency": "ms"}, 224)
    assert table.source_file == "proxylessnas_mobile.yaml"
    assert table.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert profile.energy.method == "none" and not profile.entries


@pytest.mark.parametrize("resolution", OFA_RESOLUTIONS)
def test_ofa_tables_per_resolution(luts, resolution):
    path = luts / f"ofa_note10_{resolution}.yaml"
    source = yaml.safe_load(path.read_text())
    profile = import_table(path, "ofa")
    blocks = _blocks(profile)
    assert set(blocks) == set(source) and len(blocks) == 96
    assert profile.imported.counts() == {"AvgPool2D": 1, "Conv": 1, "Conv_1": 1, "Conv_2": 1, "Logits": 1,
                                         "expanded_conv": 91}
    assert profile.imported.input_resolution == resolution
    assert blocks[next(k for k in source if k.startswith("Conv-"))].input_hwc == [resolution, resolution, 3]
    assert profile.device.name == "Samsung Galaxy Note10" and profile.imported.obtained == "measured"
    for key, value in source.items():
        assert (blocks[key].latency_ms, blocks[key].std_ms, blocks[key].count, blocks[key].var_ms2) == (
            value["mean"], value["std"], value["count"], None)
    convs = [b for b in blocks.values() if b.type == "expanded_conv"]
    assert all(b.se is not None and b.hs is not None and b.mid_channels == b.expand for b in convs)
    # Once-for-All keys give the middle channel count: MobileNetV3's expand ratios 3, 4, 6 (and 1 for the first)
    assert {b.expand / b.input_hwc[2] for b in convs} == {1.0, 3.0, 4.0, 6.0}


def test_ofa_spot_checked_block(luts):
    blocks = _blocks(import_table(luts / "ofa_note10_160.yaml", "ofa"))
    b = blocks["expanded_conv-input:10x10x136-output:10x10x136-expand:408-kernel:3-stride:1-idskip:1-se:1-hs:1"]
    assert (b.input_hwc, b.output_hwc, b.expand, b.mid_channels, b.kernel, b.stride) == (
        [10, 10, 136], [10, 10, 136], 408, 408, 3, 1)
    assert (b.idskip, b.se, b.hs) == (True, True, True)
    assert (b.latency_ms, b.std_ms, b.count) == (0.86918, 0.013281099352086765, 100)
    pool = blocks["AvgPool2D-input:5x5x1152-output:1x1x1152"]
    assert (pool.output_hwc, pool.count) == ([1, 1, 1152], 491)


def test_apq_layers_bit_pairs_and_parts(luts, apq):
    source = json.loads((luts / "apq_bitfusion_b1.json").read_text())
    table = apq.imported
    assert len(table.layers) + len(table.parts) == len(source) == 6569
    assert table.counts() == {"layer:conv": 6567, "part:head": 1, "part:tail": 1}
    layers = {e.key: e for e in table.layers}
    assert set(layers) | {p.name for p in table.parts} == set(source)
    for key, e in layers.items():
        assert (e.latency_ms, e.energy_mj) == (source[key]["latency"], source[key]["energy"])
        assert key.endswith(f"-W{e.w_bits}A{e.a_bits}")
    assert {(e.w_bits, e.a_bits) for e in table.layers} == {(w, a) for w in (4, 6, 8) for a in (4, 6, 8)}
    pw = layers["(96, 456, 14, 1, 1, 0, 1)-W4A4"]
    assert (pw.op, pw.in_channels, pw.out_channels, pw.in_hw, pw.kernel, pw.stride, pw.padding, pw.groups) == (
        "conv", 96, 456, (14, 14), 1, 1, 0, 1)
    assert (pw.latency_ms, pw.energy_mj) == (0.062192, 0.10688197403091196)
    dw = layers["(488, 488, 14, 3, 1, 1, 488)-W4A4"]
    assert (dw.kernel, dw.padding, dw.groups) == (3, 1, 488)
    parts = {p.name: p for p in table.parts}
    assert (parts["head"].latency_ms, parts["head"].energy_mj) == (0.295904, 0.5061844841862639)
    assert (parts["tail"].latency_ms, parts["tail"].energy_mj) == (0.081608, 0.15180756309769594)


def test_apq_is_labelled_simulated(apq):
    assert apq.imported.obtained == "simulated" and "simulator" in apq.imported.notes
    assert apq.device.name == "BitFusion bit-flexible accelerator" and apq.batch_size == 1
    assert apq.runtime == "simulator" and apq.imported.units == {"latency": "ms", "energy": "mJ"}
    assert apq.energy.method == "imported" and "simulated" in apq.energy.notes
    assert set(apq.precisions) == {f"w{w}a{a}" for w in (4, 6, 8) for a in (4, 6, 8)}


@pytest.mark.parametrize(("name", "fmt"), [("proxylessnas_mobile.yaml", "proxyless"),
                                           ("ofa_note10_208.yaml", "ofa"), ("apq_bitfusion_b1.json", "apq")])
def test_round_trip_as_plain_json(luts, tmp_path, name, fmt):
    profile = import_table(luts / name, fmt, name="copy")
    out = profile.save(tmp_path / "copy.json")
    assert HardwareProfile.load(out) == profile
    data = json.loads(out.read_text())  # entries are plain JSON objects, nothing to unpickle
    entries = data["imported"]["blocks"] or data["imported"]["layers"]
    assert isinstance(entries, list) and all(isinstance(e, dict) and "latency_ms" in e for e in entries)
    assert data["kind"] == "imported" and data["imported"]["format"] == fmt


def test_profiles_of_other_kinds_keep_their_layout(tmp_path):
    original = json.loads(GOLDEN.read_text())
    profile = HardwareProfile.load(GOLDEN)
    assert profile.imported is None
    saved = json.loads(profile.save(tmp_path / "again.json").read_text())
    assert "imported" not in saved and "imported" not in original
    original["imported"] = {"format": "generic", "source_file": "t.csv", "sha256": "0" * 64,
                            "obtained": "measured", "units": {"latency": "ms"}}
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(original))
    with pytest.raises(ProfileError, match="an imported table belongs to a profile of kind 'imported'") as err:
        HardwareProfile.load(bad)
    assert str(bad) in str(err.value)


# -- corrupted copies -----------------------------------------------------------------------------------
def _copy(luts, tmp_path, name, edit) -> Path:
    path = tmp_path / name
    text = (luts / name).read_text()
    edited = edit(text)
    assert edited != text
    path.write_text(edited)
    return path


PROXYLESS_KEY = "expanded_conv-input:112x112x16-output:56x56x24-expand:3-kernel:5-stride:2-idskip:0"
OFA_KEY = "expanded_conv-input:10x10x136-output:10x10x136-expand:408-kernel:3-stride:1-idskip:1-se:1-hs:1"


@pytest.mark.parametrize(("name", "fmt", "edit", "key", "expected"), [
    ("proxylessnas_mobile.yaml", "proxyless", lambda t: t.replace(PROXYLESS_KEY, PROXYLESS_KEY.replace("kernel:5", "kernel:x")),
     PROXYLESS_KEY.replace("kernel:5", "kernel:x"), "field kernel: expected a positive integer, got 'x'"),
    ("proxylessnas_mobile.yaml", "proxyless", lambda t: t.replace(PROXYLESS_KEY, PROXYLESS_KEY.replace("112x112x16", "112x16")),
     PROXYLESS_KEY.replace("112x112x16", "112x16"), "field input: expected HxWxC with positive integers"),
    ("proxylessnas_mobile.yaml", "proxyless", lambda t: t.replace(PROXYLESS_KEY, "Squeeze" + PROXYLESS_KEY[13:]),
     "Squeeze" + PROXYLESS_KEY[13:], "block type 'Squeeze' is not one of"),
    ("ofa_note10_160.yaml", "ofa", lambda t: t.replace(OFA_KEY, OFA_KEY.replace("-hs:1", "")),
     OFA_KEY.replace("-hs:1", ""), r"expanded_conv blocks of a ofa table have fields \['input', 'output', 'expand', "
                                  r"'kernel', 'stride', 'idskip', 'se', 'hs'\]"),
    ("ofa_note10_160.yaml", "ofa", lambda t: t.replace(OFA_KEY, OFA_KEY.replace("se:1", "se:2")),
     OFA_KEY.replace("se:1", "se:2"), "field se: expected 0 or 1, got '2'"),
    ("ofa_note10_160.yaml", "ofa", lambda t: t.replace(f"{OFA_KEY}:\n  count: 100\n  mean: 0.86918",
                                                       f"{OFA_KEY}:\n  count: 100\n  mean: fast"),
     OFA_KEY, "mean: expected a finite number >= 0, got 'fast'"),
    ("apq_bitfusion_b1.json", "apq", lambda t: t.replace('"(96, 456, 14, 1, 1, 0, 1)-W4A4"', '"(96, 456, 14, 1)-W4A4"'),
     "(96, 456, 14, 1)-W4A4", r"expected '\(Cin, Cout, Hin, k, stride, pad, groups\)-W\{w\}A\{a\}'"),
    ("apq_bitfusion_b1.json", "apq", lambda t: t.replace('"(96, 456, 14, 1, 1, 0, 1)-W4A4": {"energy": 0.10688197403091196, ',
                                                         '"(96, 456, 14, 1, 1, 0, 1)-W4A4": {'),
     "(96, 456, 14, 1, 1, 0, 1)-W4A4", r"expected an object \{\"latency\": ms, \"energy\": mJ\}"),
    ("apq_bitfusion_b1.json", "apq", lambda t: t.replace('"(96, 456, 14, 1, 1, 0, 1)-W4A4"', '"(96, 456, 14, 1, 1, 0, 5)-W4A4"'),
     "(96, 456, 14, 1, 1, 0, 5)-W4A4", "groups 5 must divide in_channels 96 and out_channels 456"),
])
def test_corrupted_tables_name_file_and_key(luts, tmp_path, name, fmt, edit, key, expected):
    path = _copy(luts, tmp_path, name, edit)
    with pytest.raises(TableImportError, match=expected) as err:
        import_table(path, fmt)
    message = str(err.value)
    assert message.startswith(f"{path}: key {key!r}: "), message


def test_unknown_format_missing_file_and_truncated_json(luts, tmp_path):
    with pytest.raises(TableImportError, match=r"unknown table format 'tflite'; expected one of "
                                               r"\['proxyless', 'ofa', 'apq', 'generic'\]"):
        import_table(luts / "proxylessnas_mobile.yaml", "tflite")
    with pytest.raises(TableImportError, match="no such table file"):
        import_table(tmp_path / "absent.yaml", "ofa")
    cut = _copy(luts, tmp_path, "apq_bitfusion_b1.json", lambda t: t[:5000])
    with pytest.raises(TableImportError, match=f"{cut}: not valid JSON"):
        import_table(cut, "apq")
    with pytest.raises(TableImportError, match="a ofa table have fields"):  # the wrong format for the file
        import_table(luts / "proxylessnas_mobile.yaml", "ofa")


# -- the command line -----------------------------------------------------------------------------------
def test_cli_import_writes_a_loadable_profile(luts, tmp_path):
    out = tmp_path / "profiles" / "pixel1.json"
    done = subprocess.run([sys.executable, "-m", "autocompress.cli", "profile", "import",
                           str(luts / "proxylessnas_mobile.yaml"), "--format", "proxyless", "--out", str(out),
                           "--name", "pixel1"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    profile = HardwareProfile.load(out)
    assert profile.name == "pixel1" and profile.kind == "imported" and len(profile.imported.blocks) == 72
    assert "autocompress profile import" in profile.provenance.command
    assert "imported profile (proxyless table), measured" in done.stdout and f"wrote {out}" in done.stdout


def test_cli_show_summarises_an_imported_profile(luts, tmp_path, capsys):
    out = tmp_path / "bitfusion.json"
    assert main(["profile", "import", str(luts / "apq_bitfusion_b1.json"), "--format", "apq", "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["profile", "show", str(out)]) == 0
    shown = capsys.readouterr().out
    assert "bitfusion: imported profile (apq table), simulated, batch 1" in shown
    assert "device: BitFusion bit-flexible accelerator" in shown
    assert "entries: 6569 (6567 layer:conv, 1 part:head, 1 part:tail)" in shown
    assert "units: latency in ms, energy in mJ" in shown
    assert "W4A4 W4A6 W4A8 W6A4 W6A6 W6A8 W8A4 W8A6 W8A8" in shown


def test_cli_import_error_names_file_and_key(luts, tmp_path, capsys):
    path = _copy(luts, tmp_path, "ofa_note10_176.yaml", lambda t: t.replace("-idskip:1-se:1", "-idskip:1-se:yes", 1))
    assert main(["profile", "import", str(path), "--format", "ofa", "--out", str(tmp_path / "x.json")]) == 2
    err = capsys.readouterr().err
    assert f"autocompress: error: {path}: key 'expanded_conv-input:" in err and "field se: expected 0 or 1" in err
    assert not (tmp_path / "x.json").exists()


# -- generic tables -------------------------------------------------------------------------------------
GENERIC_CSV = """op,in_channels,out_channels,in_h,kernel,stride,groups,w_bits,a_bits,latency_ms,energy_mj
conv,3,16,32,3,1,1,8,8,0.041,0.002
conv,16,16,32,3,2,16,8,8,0.012,
conv,16,32,16,1,1,1,4,8,0.020,0.001
linear,64,10,1,1,1,1,8,8,0.003,0.0002
"""


def test_generic_csv(tmp_path):
    path = tmp_path / "my_npu.csv"
    path.write_text(GENERIC_CSV)
    profile = import_table(path, "generic", device="my NPU", obtained="measured")
    table = profile.imported
    assert (profile.name, profile.device.name, table.obtained, table.format) == ("my_npu", "my NPU", "measured",
                                                                                 "generic")
    assert table.counts() == {"layer:conv": 3, "layer:linear": 1} and table.units == {"latency": "ms",
                                                                                        "energy": "mJ"}
    first, dw, pw, fc = table.layers
    assert (first.key, first.in_hw, first.padding, first.latency_ms, first.energy_mj) == ("row 1", (32, 32), 1,
                                                                                          0.041, 0.002)
    assert (dw.groups, dw.stride, dw.energy_mj) == (16, 2, None)
    assert (pw.w_bits, pw.a_bits, pw.padding) == (4, 8, 0)
    assert (fc.op, fc.in_hw, fc.padding) == ("linear", (1, 1), 0)
    assert profile.energy.method == "imported" and set(profile.precisions) == {"w8a8", "w4a8"}
    again = HardwareProfile.load(profile.save(tmp_path / "p.json"))
    assert again == profile
    assert import_table(path, "generic").imported.obtained == "unknown"  # not said: not claimed


def test_generic_json_rows(tmp_path):
    path = tmp_path / "rows.json"
    path.write_text(json.dumps([{"op": "conv", "in_channels": 8, "out_channels": 8, "in_h": 14, "in_w": 7,
                                 "kernel": 3, "stride": 1, "groups": 1, "padding": 0, "w_bits": 6, "a_bits": 6,
                                 "latency_ms": 0.5, "std_ms": 0.01, "count": 20}]))
    (e,) = import_table(path, "generic").imported.layers
    assert (e.in_hw, e.padding, e.std_ms, e.count, e.energy_mj) == ((14, 7), 0, 0.01, 20, None)


@pytest.mark.parametrize(("text", "expected"), [
    (GENERIC_CSV.replace("latency_ms", "latency_us"), r"missing column\(s\) \['latency_ms'\]; "
                                                      r"unknown column\(s\) \['latency_us'\]; expected \['op'"),
    (GENERIC_CSV.replace("0.012", "fast"), r"row 2 \(line 3\): column latency_ms: expected a number, got 'fast'"),
    (GENERIC_CSV.replace("conv,16,32,16", "pool,16,32,16"), r"row 3 \(line 4\): column op: expected 'conv' or 'linear'"),
    (GENERIC_CSV.replace("linear,64,10,1,1,1,1", "linear,64,10,1,3,1,1"),
     "row 4 .*a linear layer has kernel, stride and groups 1"),
    (GENERIC_CSV + "conv,3,16,32,3,1,1,8,8,0.05,\n", r"row 5 \(line 6\): the same layer and bit-widths as row 1"),
    (GENERIC_CSV.replace("0.041,0.002", "0.041,0.002,7"), r"row 1 \(line 2\): more cells than the header"),
    (GENERIC_CSV.replace("conv,16,16,32,3,2,16", "conv,16,16,32,3,2,3"), "row 2 .*groups 3 must divide"),
])
def test_generic_errors_name_file_row_and_column(tmp_path, text, expected):
    path = tmp_path / "table.csv"
    path.write_text(text)
    with pytest.raises(TableImportError, match=expected) as err:
        import_table(path, "generic")
    assert str(err.value).startswith(f"{path}: ")
    other = tmp_path / "table.txt"
    other.write_text(GENERIC_CSV)
    with pytest.raises(TableImportError, match="a generic table is a .csv or .json file"):
        import_table(other, "generic")


def test_cost_model_refuses_an_imported_profile_clearly(luts, apq):
    from tests.helpers import shipped_space, zoo_model

    _, graph = zoo_model("lenet5")
    with pytest.raises(ProfileError, match=f"profile {apq.name!r} has no entry for .* layer signature"):
        CostModel(apq, shipped_space("lenet5", graph))
