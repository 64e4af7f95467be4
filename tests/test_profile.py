"""HardwareProfile files: the v1 format, round trips and clear errors for malformed files."""

import json
import shutil
from pathlib import Path

import pytest

from autocompress.hardware import HardwareProfile, LayerSignature, ProfileError, SignatureError

GOLDEN = Path(__file__).parent / "fixtures" / "profile_v1.json"


def test_golden_v1_profile_loads():
    profile = HardwareProfile.load(GOLDEN)
    assert profile.kind == "measured" and profile.runtime == "onnxruntime" and profile.threads == 1
    entry = profile.entries["conv:in3:out16:k3x3:s1x1:p1x1:g1:hw32x32:fp32"]
    assert (entry.latency_ms, entry.count) == (0.0412, 100)
    assert profile.precision_for(4, 8) == "int8" and profile.precision_for(8, 32) == "fp32"
    assert profile.energy.method == "modelled"


def test_round_trip(tmp_path):
    profile = HardwareProfile.load(GOLDEN)
    out = profile.save(tmp_path / "copy.json")
    again = HardwareProfile.load(out)
    assert again == profile
    assert not list(tmp_path.glob("*.tmp"))


@pytest.mark.parametrize("key", [
    "conv:in3:out16:k3x3:s1x1:p1x1:g1:hw32x32:fp32",
    "conv:in16:out16:k3x3:s2x2:p1x1:g16:hw31x17:int8:sp0.50",
    "linear:in64:out10:t1:int8",
])
def test_signature_keys_round_trip(key):
    assert LayerSignature.parse(key).key == key


def test_signature_shapes():
    sig = LayerSignature.parse("conv:in16:out32:k3x3:s2x2:p1x1:g1:hw31x31:fp32")
    assert sig.out_hw == (16, 16) and sig.macs == 32 * 16 * 9 * 16 * 16
    with pytest.raises(SignatureError, match="malformed layer signature"):
        LayerSignature.parse("conv:16:32")


def _corrupt(tmp_path, edit):
    data = json.loads(GOLDEN.read_text())
    edit(data)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize(("edit", "expected"), [
    (lambda d: d.pop("runtime"), r"field runtime: Field required"),
    (lambda d: d["entries"]["linear:in64:out10:t1:fp32"].update(latency_ms=-1.0),
     r"field entries\.linear:in64:out10:t1:fp32\.latency_ms: Input should be greater than or equal to 0"),
    (lambda d: d.update(schema_version=7), r"field schema_version: unknown schema version 7"),
    (lambda d: d.update(kind="guessed"), r"field kind: Input should be 'measured', 'analytic' or 'imported'"),
    (lambda d: d["entries"].update({"conv:bad": {"latency_ms": 1.0}}), r"field entries: .*malformed layer signature 'conv:bad'"),
    (lambda d: d.update(threads=0), r"field threads: Input should be greater than or equal to 1"),
    (lambda d: d.update(colour="blue"), r"field colour: Extra inputs are not permitted"),
])
def test_malformed_profiles_name_file_and_field(tmp_path, edit, expected):
    path = _corrupt(tmp_path, edit)
    with pytest.raises(ProfileError, match=expected) as err:
        HardwareProfile.load(path)
    assert str(path) in str(err.value)


def test_truncated_and_missing_files(tmp_path):
    path = tmp_path / "cut.json"
    shutil.copy(GOLDEN, path)
    path.write_text(path.read_text()[:300])
    with pytest.raises(ProfileError, match="not valid JSON"):
        HardwareProfile.load(path)
    with pytest.raises(ProfileError, match="no such profile file"):
        HardwareProfile.load(tmp_path / "absent.json")
