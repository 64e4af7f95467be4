"""Energy counters and where measurement records them: RAPL against a real (fake) powercap tree.

This machine has no RAPL or NVML counter, so the RAPL path runs on a powercap
directory tree made in tmp_path (real files, real reads) whose package counter
another process advances at a fixed power, as the kernel does; the fallback (entries
priced by the energy model, labelled so) runs on this machine as it is.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from autocompress.hardware import CostModel, HardwareProfile, leaf_signatures, required_signatures
from autocompress.hardware.energy import HOROWITZ_45NM, layer_energy
from autocompress.runtime import create_runtime
from autocompress.runtime.energy_meters import (
    EnergyMeter,
    detect_energy_counters,
    measure_energies,
    measure_energy_j,
    nvml_meter,
    rapl_meter,
)
from autocompress.runtime.profiler import ProfileSettings, build_profile, measure_signatures
from autocompress.space import SearchSpace
from tests.helpers import make_zone, zoo_model


@pytest.fixture()
def powercap(tmp_path):
    """A fake /sys/class/powercap: two packages, a core sub-zone and the mmio duplicate of package 0."""
    pkg0 = make_zone(tmp_path, "intel-rapl:0", "package-0", 1_000_000, max_uj=10_000_000)
    pkg1 = make_zone(tmp_path, "intel-rapl:1", "package-1", 5_000_000)
    make_zone(tmp_path, "intel-rapl:0:0", "core", 77)
    make_zone(tmp_path, "intel-rapl-mmio:0", "package-0", 123)
    return tmp_path, pkg0, pkg1


def test_rapl_reads_package_domains_only(powercap):
    root, pkg0, pkg1 = powercap
    meter = rapl_meter(root)
    assert meter is not None and isinstance(meter, EnergyMeter) and meter.method == "measured:rapl"
    assert [d.path for d in meter.domains] == [pkg0, pkg1]
    assert detect_energy_counters(powercap_path=root)[:2] == [f"rapl:{pkg0}", f"rapl:{pkg1}"]
    meter.start()
    (pkg0 / "energy_uj").write_text("1500000\n")  # +0.5 J
    (pkg1 / "energy_uj").write_text("5250000\n")  # +0.25 J
    (root / "intel-rapl:0:0" / "energy_uj").write_text("99999999\n")  # ignored
    assert meter.stop() == pytest.approx(0.75)


def test_rapl_counter_wraparound(powercap):
    root, pkg0, pkg1 = powercap
    (pkg0 / "energy_uj").write_text("9000000\n")
    meter = rapl_meter(root)
    meter.start()
    (pkg0 / "energy_uj").write_text("500000\n")  # wrapped at 10 J: 1 J to the top, then 0.5 J
    assert meter.stop() == pytest.approx(1.5)
    with pytest.raises(RuntimeError, match="before start"):
        meter.stop()


def test_rapl_absent_or_unusable(tmp_path):
    assert rapl_meter(tmp_path / "missing") is None
    assert rapl_meter(tmp_path) is None
    make_zone(tmp_path, "intel-rapl:0", "psys", 1)  # not a package domain
    (tmp_path / "intel-rapl:1").mkdir()  # no files
    bad = make_zone(tmp_path, "intel-rapl:2", "package-2", 1)
    (bad / "energy_uj").write_text("garbage\n")
    assert rapl_meter(tmp_path) is None
    assert not [c for c in detect_energy_counters(powercap_path=tmp_path) if c.startswith("rapl:")]


def test_measure_energy_against_a_fake_counter(powercap):
    root, pkg0, _ = powercap
    energy = {"uj": 1_000_000}

    def work():  # each call "burns" 1 mJ on package 0
        energy["uj"] += 1000
        (pkg0 / "energy_uj").write_text(f"{energy['uj']}\n")

    meter = rapl_meter(root)
    per_call, calls = measure_energy_j(work, meter, min_seconds=0.02)
    assert calls >= 1 and per_call == pytest.approx(1e-3)
    net, calls = measure_energy_j(work, meter, min_seconds=0.02, idle_power_w=1e-3)
    assert net < 1e-3
    with pytest.raises(ValueError, match="min_seconds"):
        measure_energy_j(work, meter, min_seconds=0)


def test_counters_on_this_machine_are_consistent():
    counters = detect_energy_counters()
    assert isinstance(counters, list)
    assert all(c.startswith(("rapl:", "nvml:")) for c in counters)
    assert (rapl_meter() is None) == (not any(c.startswith("rapl:") for c in counters))
    meter = nvml_meter()  # never raises; None without pynvml / driver / GPU
    assert (meter is None) == (not any(c.startswith("nvml:GPU 0 ") for c in counters))
    try:
        import pynvml  # noqa: F401
    except ImportError:
        assert meter is None
        if not Path("/sys/class/powercap").exists():  # e.g. this container: no RAPL, no pynvml
            assert counters == []


#: the kernel's side of a RAPL package counter, in its own process (as the kernel is outside ours):
#: energy_uj advances at a fixed power and is replaced atomically every ~0.5 ms, so a reader sees the old
#: value or the new one, as from sysfs
_COUNTER = """
import os, sys, time
path, power_w = sys.argv[1], float(sys.argv[2])
start = int(open(path).read())
t0 = time.perf_counter()
while True:
    with open(path + ".tmp", "w") as fh:
        fh.write(f"{start + int((time.perf_counter() - t0) * power_w * 1e6)}\\n")
    os.replace(path + ".tmp", path)
    time.sleep(0.0005)
"""


@contextmanager
def package_counter(zone: Path, power_w: float) -> Iterator[None]:
    """The zone's ``energy_uj`` advancing at ``power_w`` watts while the block runs."""
    before = (zone / "energy_uj").read_text()
    proc = subprocess.Popen([sys.executable, "-c", _COUNTER, str(zone / "energy_uj"), str(power_w)])
    try:
        while (zone / "energy_uj").read_text() == before:  # started
            time.sleep(0.001)
        yield
    finally:
        proc.kill()
        proc.wait()


def test_measure_energies_labels_each_figure(powercap):
    root, pkg0, _ = powercap
    fns = {"a": lambda: time.sleep(0.001), "b": lambda: None}
    assert measure_energies(fns, None) == {"a": {"energy_method": "none"}, "b": {"energy_method": "none"}}
    with package_counter(pkg0, power_w=5.0):
        energies = measure_energies(fns, rapl_meter(root), seconds=0.05)
    assert {e["energy_method"] for e in energies.values()} == {"measured:rapl"}
    # 5 W for a call of a bit over 1 ms: a bit over 5 mJ; an empty call costs next to nothing
    assert 4.5 < energies["a"]["energy_mj"] < 15 and energies["b"]["energy_mj"] < 0.5


@pytest.fixture(scope="module")
def lenet_space():
    _, graph = zoo_model("lenet5")
    return SearchSpace.from_yaml(graph, "lenet")


def test_profiler_records_rapl_energy_per_entry(powercap, lenet_space, tmp_path):
    root, pkg0, _ = powercap
    keys = required_signatures(lenet_space, ["fp32"])
    # torch eager: fp32 kernels only, so the fp32 table is the whole table the cost model needs
    settings = ProfileSettings(runtime="torch-eager", rounds=1, reps=2, warmup=1, energy_seconds=0.05)
    with package_counter(pkg0, power_w=10.0):
        measured = measure_signatures(keys, tmp_path / "p.json", settings, meter=rapl_meter(root))
    assert measured.energy_method == "measured:rapl"
    entries = measured.entries.values()
    # every entry metered; one short window may see no counter update when the 2 cores are busy, so
    # the figures are checked summed
    assert all(e.energy_method == "measured:rapl" and e.energy_mj >= 0 for e in entries)
    # 10 W while the layers run: energy per call ~ 10 W x time per call. Summed over the table, because one
    # 50 ms window holds only tens of counter updates (the timed figure is the fastest round's median, the
    # metered one a mean over the window, with the calls' overhead)
    assert 0.7 < sum(e.energy_mj for e in entries) / sum(10.0 * e.latency_ms for e in entries) < 3

    # resumed from the finished partial file with the counter frozen: nothing is metered again
    again = measure_signatures(keys, tmp_path / "p.json", settings, meter=rapl_meter(root))
    assert again.entries == measured.entries

    profile = build_profile("t", measured, settings, command="test", versions={})
    assert profile.energy.method == "measured:rapl" and "RAPL" in profile.energy.notes
    loaded = HardwareProfile.load(profile.save(tmp_path / "t.json"))
    assert loaded.entries == profile.entries and loaded.energy == profile.energy

    # the cost model prices energy from the entries, and from the table where an entry has none
    reference = lenet_space.identity()
    leaves = [leaf for cfg in lenet_space.layer_configs(reference) for leaf in leaf_signatures(cfg, "fp32")]
    by_hand = sum(loaded.entries[leaf.key].energy_mj for leaf in leaves)
    assert CostModel(loaded, lenet_space).reference().energy_mj == pytest.approx(by_hand)
    first = leaves[0].key
    entries = dict(loaded.entries)
    entries[first] = entries[first].model_copy(update={"energy_mj": None, "energy_method": None})
    partly = loaded.model_copy(update={"entries": entries})
    modelled = layer_energy(leaves[0], HOROWITZ_45NM).total_mj
    expected = by_hand - loaded.entries[first].energy_mj + modelled
    assert CostModel(partly, lenet_space).reference().energy_mj == pytest.approx(expected)


def test_this_machine_falls_back_to_the_labelled_model(lenet_space, tmp_path):
    """What a profile measured here records: the counter's figures where there is one, the model's otherwise."""
    keys = required_signatures(lenet_space, ["fp32"])[:6]
    settings = ProfileSettings(rounds=1, reps=2, warmup=1, passes=1, energy_seconds=0.01)
    meter = create_runtime(settings.runtime).energy_meter()
    measured = measure_signatures(keys, tmp_path / "p.json", settings)
    assert all((e.energy_method is not None) == (meter is not None) for e in measured.entries.values())
    profile = build_profile("t", measured, settings, command="test", versions={})
    assert profile.energy.method == (meter.method if meter else "modelled")
    assert profile.energy.table == HOROWITZ_45NM.to_dict()
    if meter is None:  # this container: every entry is priced by the 45 nm model, and says so
        assert all(e.energy_mj is None for e in measured.entries.values())
        assert "no energy counter" in profile.energy.notes


def test_an_entry_names_its_counter_only_beside_a_figure():
    from autocompress.hardware.profile import Entry

    assert Entry(latency_ms=1.0).energy_method is None  # older files: no field, still valid
    with pytest.raises(ValueError, match="without an energy_mj"):
        Entry(latency_ms=1.0, energy_method="measured:rapl")
    with pytest.raises(ValueError):
        Entry(latency_ms=1.0, energy_mj=1.0, energy_method="measured:thermometer")


def test_export_re_measurement_records_its_energy_source(tmp_path):
    from autocompress.export.measure import REFERENCE, measure_latency
    from autocompress.hardware.profile import find_profile
    from autocompress.runtime.onnx_export import export_onnx
    from tests.conftest import tiny_bn_cnn

    profile = find_profile("cpu-onnxruntime-1t")
    models = {}
    for label, seed in ((REFERENCE, 0), ("member", 1)):
        model = tiny_bn_cnn(seed=seed).eval()
        models[label] = (model, (1, 12, 12), export_onnx(model, (1, 12, 12), tmp_path / f"{label}.onnx"))
    measured, note = measure_latency(models, profile, rounds=1, reps=3, sessions=1, seed=0, progress=False)
    assert not note
    meter = create_runtime(profile.runtime).energy_meter()
    for label in models:
        assert measured[label]["latency_ms"] > 0
        if meter is None:  # this container: nothing measured, and the record says so
            assert measured[label]["energy_method"] == "none" and "energy_mj" not in measured[label]
        else:
            assert measured[label]["energy_method"] == meter.method and measured[label]["energy_mj"] > 0
