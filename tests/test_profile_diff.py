"""`autocompress profile diff`: latency ratios per operator type, precision and size, on the shipped table."""

from __future__ import annotations

import json
import subprocess
import sys

from autocompress.hardware.predictor import group_key
from autocompress.hardware.profile import HardwareProfile, find_profile
from autocompress.hardware.profile_diff import diff_profiles
from autocompress.hardware.signature import LayerSignature


def _moved(tmp_path) -> tuple[HardwareProfile, str]:
    """The shipped profile on a 'device' where 1x1 convolutions take twice as long, the rest the same, and
    that lacks every fp32 linear layer."""
    data = json.loads(find_profile("cpu-onnxruntime-1t").model_dump_json())
    data["name"] = "moved"
    entries = {}
    for key, entry in data["entries"].items():
        group = group_key(LayerSignature.parse(key))
        if group == "linear/fp32":
            continue
        if group.startswith("conv1x1/"):
            entry = {**entry, "latency_ms": entry["latency_ms"] * 2}
        entries[key] = entry
    data["entries"] = entries
    path = tmp_path / "moved.json"
    path.write_text(json.dumps(data))
    return HardwareProfile.load(path), str(path)


def test_ratios_per_group_and_size(tmp_path):
    shipped = find_profile("cpu-onnxruntime-1t")
    moved, _ = _moved(tmp_path)
    diff = diff_profiles(shipped, moved)
    lacking = sum(group_key(LayerSignature.parse(k)) == "linear/fp32" for k in shipped.entries)
    assert diff.only_a == lacking > 0 and diff.only_b == 0 and diff.shared == len(shipped.entries) - lacking
    by_group = {r.group: r for r in diff.rows if r.size == "all"}
    assert by_group["conv1x1/fp32"].median == by_group["conv1x1/int8"].median == 2.0
    assert by_group["conv_kxk/fp32"].median == by_group["depthwise/int8"].median == 1.0
    assert "linear/fp32" not in by_group
    sized = [r for r in diff.rows if r.group == "conv1x1/fp32" and r.size != "all"]
    assert len(sized) > 1 and sum(r.n for r in sized) == by_group["conv1x1/fp32"].n
    assert all(r.size.endswith("MACs") for r in sized)


def test_cli_prints_the_table_and_writes_json_and_plot(tmp_path):
    _, path = _moved(tmp_path)
    out = tmp_path / "diff" / "shipped-vs-moved"
    done = subprocess.run([sys.executable, "-m", "autocompress.cli", "profile", "diff", "cpu-onnxruntime-1t", path,
                           "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "moved / cpu-onnxruntime-1t" in done.stdout and "conv1x1/int8" in done.stdout
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["a"] == "cpu-onnxruntime-1t" and report["b"] == "moved" and report["overall"]["n"] > 0
    assert out.with_suffix(".png").stat().st_size > 10_000
