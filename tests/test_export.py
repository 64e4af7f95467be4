"""The exporter for real: a tiny LeNet-5 search on a profile measured here, exported, re-measured, rebuilt."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from autocompress.compress import PLAN_NAME, CompressionPlan
from autocompress.export import (
    DEFAULT_NOISE_PCT,
    ExportError,
    budget_rows,
    export_front,
    load_manifest,
    noise_band,
    rebuild,
)
from autocompress.export.screen import ScreenSettings, screen_front, screen_pool
from autocompress.hardware import HardwareProfile
from autocompress.hardware.profile import Calibration, ValidationResult, find_profile
from autocompress.runtime.artifact import read_preprocessing
from autocompress.runtime.onnx_export import quantization_settings
from autocompress.runtime.onnx_runtime import ort_session
from autocompress.search import (
    SearchConfig,
    load_study,
    pareto_front,
    parse_budgets,
    records,
    search,
)
from autocompress.search.budget import Budget
from autocompress.search.study import TrialRecord
from autocompress.space import Candidate, SearchSpace
from tests.helpers import measured_lenet_profile, on_profiles_device
from tests.test_artifact import fed_as_recorded


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    """``(setup, study, tmp)`` of one tiny search on a profile measured here, shared by the tests below."""
    tmp = tmp_path_factory.mktemp("export")
    profile_path, factor = measured_lenet_profile(tmp)
    config = SearchConfig(model="lenet5", data="mnist5k", profile=str(profile_path), budgets=[f"latency<={factor}x"],
                          n_trials=4, base_epochs=4, proxy_epochs=0.2, strategy="nsga2", out=str(tmp),
                          cache_dir=str(tmp / "cache"))
    setup = on_profiles_device(config)
    search(config, setup=setup, progress=False)
    study = load_study(config.storage_path, config.study_name)
    return setup, study, tmp


@pytest.fixture(scope="module")
def exported(searched):
    """``(setup, study, manifest, out)``: the study's Pareto front, exported the default way."""
    setup, study, tmp = searched
    out = tmp / "export"
    manifest = export_front(setup, study, out, final_epochs=0.2, rounds=1, reps=3, sessions=2, progress=False)
    return setup, study, manifest, out


def _int8_expected(space: SearchSpace, candidate: dict) -> bool:
    return any(cfg.w_bits <= 8 and cfg.a_bits <= 8 for cfg in space.layer_configs(Candidate.from_dict(candidate)))


def test_manifest_says_what_was_exported_and_measured(exported):
    setup, study, manifest, out = exported
    assert load_manifest(out) == manifest
    assert json.loads((out / "manifest.json").read_text())["format"] == "autocompress-export/2"
    assert manifest.study.name == study.study_name and manifest.study.storage == setup.config.storage_path
    assert manifest.config["model"] == "lenet5" and manifest.date
    assert manifest.profile.name == "lenet-tiny" and manifest.profile.runtime == "onnxruntime"
    assert manifest.profile.kind == "measured"
    assert {"torch", "torch-pruning", "onnxruntime"} <= set(manifest.versions)
    assert manifest.energy_method == "modelled"
    assert manifest.timing.noise_band_pct == DEFAULT_NOISE_PCT  # the tiny profile was never validated
    assert "has no validation for lenet5@1x28x28" in manifest.timing.noise_band_source
    ref = manifest.reference
    assert ref.predicted["energy_method"] == "modelled" and ref.predicted["latency_ms"] > 0
    assert ref.measured["latency_ms"] > 0 and ref.accuracy_val == setup.base_info["val_accuracy"]
    assert (out / ref.files["model.onnx"]).is_file()
    # the front of the study as priced, and the members: that front chosen again on latency timed here (the
    # profile was measured on this machine), or the priced front where no timed trial met the budget
    assert manifest.study.selected == "pareto"
    front = [t.number for t in pareto_front(records(study), setup.config.objective_costs)]
    screening = manifest.screening
    assert screening.priced_front == front and [m.trial for m in manifest.members] == screening.chosen
    assert screening.trials and screening.screened == any(r.chosen for r in screening.trials)
    chosen = sorted((r for r in screening.trials if r.chosen), key=lambda r: r.measured_vs_reference)
    assert screening.chosen == ([r.trial for r in chosen] if screening.screened else front)
    assert (out / manifest.plots["screening"]).stat().st_size > 0
    for m in manifest.members:
        assert 0 <= m.accuracy_val <= 1 and 0 <= m.accuracy_test <= 1 and m.accuracy_proxy is not None
        assert m.predicted["energy_method"] == "modelled"
        assert set(m.predicted) >= {"latency_ms", "energy_mj", "size_bytes", "macs", "bitops"}
        measured = m.measured
        # the default three timing passes of two fresh sessions each; the figure lies between the passes' own
        assert manifest.timing.passes == 3 and "3 pass(es)" in manifest.timing.note
        assert measured["latency_ms"] > 0 and len(measured["latency_sessions_ms"]) == 2 * 3
        passes = measured["latency_passes_vs_reference"]
        assert len(passes) == 3 and min(passes) <= measured["latency_vs_reference"] <= max(passes)
        assert measured["latency_pass_spread_pct"] == pytest.approx((max(passes) - min(passes)) / min(passes) * 100)
        assert measured["size_bytes"] > 0 and measured["macs"] > 0 and measured["bitops"] > 0
        [row] = m.budgets
        assert row.text == setup.config.budgets[0] and row.met_predicted is True  # the front is feasible
        assert row.measured == measured["latency_ms"]
        assert len(row.met_in_passes) == 3 and "timing passes" in row.note
        if row.met_measured is not None:  # the median of every pass's sessions lies between the passes' figures
            assert not all(row.met_in_passes) or row.met_measured
            assert any(row.met_in_passes) or not row.met_measured
        factor = setup.budgets[0].relative
        assert row.measured_limit == pytest.approx(factor * ref.measured["latency_ms"])  # measured vs measured
        assert row.met_measured == (row.measured <= row.measured_limit * (1 + row.noise_band_pct / 100))
        assert row.noise_band_pct == DEFAULT_NOISE_PCT
        assert ("MISSED" in row.note) == (not row.met_measured) and row.note
        for name, rel in m.files.items():
            assert (out / rel).is_file() and (out / rel).stat().st_size > 0, name
        assert set(m.files) >= {"model.onnx", "weights.pt", "plan.json", "probe.pt", "candidate.json"}
        assert ("model.int8.onnx" in m.files) == _int8_expected(setup.space, m.candidate)
        plan = CompressionPlan.load(out / m.files[PLAN_NAME])
        assert plan.candidate.to_dict() == m.candidate and plan.builder.name == "lenet5"
        assert plan.builder.kwargs == {"in_channels": 1, "num_classes": 10, "input_size": 28}
        assert plan.input_shape == (1, 28, 28)
        assert plan.space == setup.space.spec


def test_the_export_fine_tunes_the_front_chosen_on_latency_measured_here(exported):
    """Screening: every trained trial within the slack timed as built; the members are the measured front."""
    setup, study, manifest, _ = exported
    screening = manifest.screening
    assert "timed as built" in screening.note or "none of" in screening.note
    assert screening.slack == ScreenSettings().slack and "pass(es)" in screening.timing
    [budget] = setup.budgets
    assert screening.limits_vs_reference == [pytest.approx(budget.relative)]
    trained = {t.number for t in records(study) if t.evaluated and t.duplicate_of is None}
    rows = screening.trials
    assert {r.trial for r in rows} <= trained and len({r.trial for r in rows}) == len(rows)
    for r in rows:  # priced now within the slack; met exactly when the measured ratio is under the limit
        assert r.predicted_vs_reference <= budget.relative * (1 + screening.slack) + 1e-9
        assert r.met_measured == (r.measured_vs_reference <= budget.relative + 1e-9)
    met = [r for r in rows if r.met_measured]

    def beats(a, b) -> bool:
        return (a.accuracy_proxy >= b.accuracy_proxy and a.measured_vs_reference <= b.measured_vs_reference
                and (a.accuracy_proxy > b.accuracy_proxy or a.measured_vs_reference < b.measured_vs_reference))

    for r in met:  # the chosen ones are exactly the met trials no other met trial beats
        assert r.chosen == (not any(beats(o, r) for o in met))
    assert not any(r.chosen for r in rows if not r.met_measured)
    print("screening:", screening.note, [(r.trial, round(r.predicted_vs_reference, 3),
                                          round(r.measured_vs_reference, 3), r.chosen) for r in rows])


def test_screening_keeps_the_priced_front_off_the_profiles_machine_or_when_turned_off(searched):
    setup, study, _ = searched
    history = records(study)
    priced = [t.number for t in pareto_front(history, setup.config.objective_costs)]
    elsewhere = replace(setup, machine=replace(setup.machine, same_cpu=False, here="another CPU"))
    for chosen_setup, screen, says in [(elsewhere, None, "--screen"), (setup, False, "turned off")]:
        chosen, info = screen_front(chosen_setup, study, history, screen=screen, progress=False)
        assert [t.number for t in chosen] == priced == info.chosen == info.priced_front
        assert not info.screened and says in info.note and not info.trials


def test_screen_pool_takes_trained_trials_within_the_slack_most_accurate_first(searched):
    setup, _, _ = searched
    budget = Budget(metric="latency_ms", limit=1.0, text="latency_ms<=1", relative=None)
    size = Budget(metric="size_bytes", limit=100.0, text="size_bytes<=100")
    candidate = setup.space.identity()

    def record(number, latency, accuracy, *, size_bytes=50.0, evaluated=True, duplicate_of=None, failed=None):
        return TrialRecord(number=number, candidate=candidate, costs={}, feasible=latency <= 1, evaluated=evaluated,
                           accuracy=accuracy if evaluated else None, fidelity="proxy", seconds=1.0,
                           duplicate_of=duplicate_of, failed=failed), {"latency_ms": latency, "size_bytes": size_bytes}

    made = [record(0, 0.9, 0.5), record(1, 1.2, 0.9), record(2, 1.3, 0.95), record(3, 0.8, 0.7, size_bytes=200),
            record(4, 0.7, 0.99, evaluated=False), record(5, 0.9, 0.6, duplicate_of=0), record(6, 0.9, 0.8, failed="x"),
            record(7, 1.1, 0.6)]
    history, prices = [r for r, _ in made], {r.number: p for r, p in made}
    pool = screen_pool(history, [budget, size], prices, slack=0.25, limit=10)
    assert [t.number for t in pool] == [1, 7, 0]  # 2: 30% over; 3: over the size budget; 4-6: not trained anew
    assert [t.number for t in screen_pool(history, [budget, size], prices, slack=0.25, limit=2)] == [1, 7]
    assert [t.number for t in screen_pool(history, [budget, size], prices, slack=0.0, limit=10)] == [0]


def test_manifest_holds_the_accuracy_of_the_torch_model_and_of_each_onnx_file(exported):
    """Test top-1 of the PyTorch model beside the ONNX fp32 (and int8) file's in ONNX Runtime, on the same images."""
    setup, _, manifest, out = exported
    n_test = len(setup.data.test_y)
    ref = manifest.reference.artifact_accuracy
    assert ref.images == n_test and ref.torch == pytest.approx(manifest.reference.accuracy_test)
    assert abs(ref.onnx_fp32 - ref.torch) <= 0.002 and ref.onnx_int8 is None and ref.int8_quantization is None
    for m in manifest.members:
        scored = m.artifact_accuracy
        assert scored.images == n_test and scored.subset == f"the whole test split ({n_test} images)"
        assert scored.torch == pytest.approx(m.accuracy_test)  # the whole split: the same images
        # the fp32 file is the float model: it lacks any 8-bit activation rounding the torch model trained with
        assert abs(scored.onnx_fp32 - scored.torch) <= 0.005 + 1e-9 and scored.fp32_max_abs_logit_diff < 1e-3
        assert (scored.onnx_int8 is not None) == ("model.int8.onnx" in m.files)
        if scored.onnx_int8 is not None:
            assert abs(scored.onnx_int8 - scored.onnx_fp32) <= 0.01 and not scored.note
            assert scored.int8_quantization == quantization_settings()
    print("artifact accuracy (torch / onnx fp32 / onnx int8):",
          [(m.dir, m.artifact_accuracy.torch, m.artifact_accuracy.onnx_fp32, m.artifact_accuracy.onnx_int8)
           for m in manifest.members], ("reference", ref.torch, ref.onnx_fp32))


def test_manifest_and_onnx_files_say_how_to_feed_them(exported):
    setup, _, manifest, out = exported
    ref = manifest.reference
    entries = [(ref.preprocessing, ref.files, ref.input_shape, setup.base_model)]
    entries += [(m.preprocessing, m.files, m.input_shape, rebuild(out / m.dir)) for m in manifest.members]
    raw = setup.data.test_x[:8]
    for feed, files, input_shape, model in entries:
        record = feed.model_dump(mode="json")
        assert record["shape"] == [1, *input_shape] and record["dtype"] == "float32" and record["layout"] == "NCHW"
        assert record["mean"] == pytest.approx(list(setup.data.mean)) and record["value_range"] == [0.0, 1.0]
        assert record["latency_includes_resize"] is False and "grey" in record["raw"]
        assert record["resize"] is None  # LeNet-5 runs at the data's 28x28 (tests/test_artifact.py resizes)
        for name in ("model.onnx", "model.int8.onnx"):
            if name in files:
                assert read_preprocessing(out / files[name]) == record
        # a raw test image fed as recorded is what the pipeline gave the model, and the file predicts what it does
        fed = np.concatenate([fed_as_recorded(image, record) for image in raw])
        pipeline = next(iter(setup.data.loader("test", batch_size=8, shuffle=False, augment=False)))[0]
        np.testing.assert_allclose(fed, pipeline.numpy(), atol=1e-5, rtol=0)
        session = ort_session(out / files["model.onnx"])
        logits = np.concatenate([session.run(None, {record["input_name"]: fed[i:i + 1]})[0] for i in range(8)])
        with torch.no_grad():
            assert (logits.argmax(1) == model(pipeline).argmax(1).numpy()).all()


def test_manifests_written_before_the_artifact_records_still_load(exported, tmp_path):
    _, _, manifest, out = exported
    data = json.loads((out / "manifest.json").read_text())
    for entry in [data["reference"], *data["members"]]:
        del entry["artifact_accuracy"], entry["preprocessing"]
    (tmp_path / "manifest.json").write_text(json.dumps(data))
    old = load_manifest(tmp_path)
    assert old.reference.preprocessing is None and all(m.artifact_accuracy is None for m in old.members)
    assert [m.trial for m in old.members] == [m.trial for m in manifest.members]


def test_bad_manifests_name_the_file_and_field(exported, tmp_path):
    _, _, manifest, out = exported
    data = json.loads((out / "manifest.json").read_text())
    path = tmp_path / "manifest.json"
    for change, message in [
        (lambda d: d.update(format="autocompress-export/1"), r"field format: expected 'autocompress-export/2'"),
        (lambda d: d["members"][0].pop("accuracy_test"), r"field members\[0\].accuracy_test: Field required"),
        (lambda d: d["timing"].update(noise_band_pct="wide"), r"field timing.noise_band_pct"),
        (lambda d: d["members"][0]["artifact_accuracy"].pop("onnx_fp32"),
         r"field members\[0\].artifact_accuracy.onnx_fp32: Field required"),
        (lambda d: d["reference"]["preprocessing"].update(dtype="uint8"), r"field reference.preprocessing.dtype"),
    ]:
        bad = json.loads(json.dumps(data))
        change(bad)
        path.write_text(json.dumps(bad))
        with pytest.raises(ExportError, match=message) as err:
            load_manifest(tmp_path)
        assert str(err.value).startswith(str(path))
    path.write_text("{")
    with pytest.raises(ExportError, match="not valid JSON"):
        load_manifest(path)


def test_onnx_files_run_in_onnxruntime(exported):
    setup, _, manifest, out = exported
    for m in manifest.members:
        x = setup.data.loader("test", batch_size=1, shuffle=False, augment=False)
        image = next(iter(x))[0].numpy()
        for name in ("model.onnx", "model.int8.onnx"):
            if name not in m.files:
                continue
            session = ort_session(out / m.files[name])
            (logits,) = session.run(None, {session.get_inputs()[0].name: image})
            assert logits.shape == (1, 10) and np.isfinite(logits).all()
            if name == "model.int8.onnx":
                import onnx

                ops = {n.op_type for n in onnx.load(str(out / m.files[name])).graph.node}
                assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
                # real int8 kernels score about what the float export does on the same test images
                scored = m.artifact_accuracy
                assert abs(scored.onnx_int8 - scored.onnx_fp32) <= 0.01


def test_rebuild_reproduces_the_exported_model(exported, tmp_path):
    setup, _, manifest, out = exported
    for m in manifest.members:
        rebuild(out / m.dir)  # no setup, no data: checks the probe logits of probe.pt itself (allclose)
        info = json.loads((out / m.files["candidate.json"]).read_text())
        assert info["trial"] == m.trial and Candidate.from_dict(info["candidate"]).to_dict() == m.candidate
        resolution = info["probe"]["resolution"]
        x = next(iter(setup.data.loader("test", batch_size=4, shuffle=False, augment=False, resolution=resolution)))[0]
        probe = torch.load(out / m.files["probe.pt"], weights_only=True)
        assert torch.equal(probe["inputs"], x)  # the first test images, at the member's resolution
    # a tampered weights file is caught
    m = manifest.members[0]
    bad = tmp_path / "tampered"
    bad.mkdir()
    for name in ("plan.json", "probe.pt"):
        (bad / name).write_bytes((out / m.files[name]).read_bytes())
    state = torch.load(out / m.files["weights.pt"], weights_only=True)
    torch.save({k: v * 1.5 + 0.1 if v.is_floating_point() and v.numel() > 10 else v for k, v in state.items()},
               bad / "weights.pt")
    with pytest.raises(ExportError, match="does not reproduce"):
        rebuild(bad)
    # weights of another structure are refused by name
    torch.save({k: v[:1] if v.dim() else v for k, v in state.items()}, bad / "weights.pt")
    with pytest.raises(ExportError, match=r"weights.pt: does not load into the model of .*plan.json"):
        rebuild(bad)
    (bad / "plan.json").unlink()
    with pytest.raises(ExportError, match="no plan.json"):
        rebuild(bad)


#: run in a fresh interpreter that cannot import the data package: it rebuilds each member folder given on the
#: command line from plan.json + weights.pt and prints its outputs on the probe images
_NO_DATA_REBUILD = """
import importlib.abc, json, sys

class NoData(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "autocompress.data" or name.startswith(("autocompress.data.", "autocompress.train")):
            raise ImportError(f"{name}: no dataset may be loaded in this process")
        return None

sys.meta_path.insert(0, NoData())
import torch
from autocompress.compress import CompressionPlan

out = {}
for folder in sys.argv[1:]:
    model = CompressionPlan.load(f"{folder}/plan.json").build()
    model.load_state_dict(torch.load(f"{folder}/weights.pt", weights_only=True))
    probe = torch.load(f"{folder}/probe.pt", weights_only=True)
    with torch.no_grad():
        out[folder] = model(probe["inputs"]).tolist()
print(json.dumps({"outputs": out, "modules": sorted(sys.modules)}))
"""


def test_plans_rebuild_every_member_in_a_process_that_loads_no_data(exported):
    """Done when: ``CompressionPlan.load(path).build()`` + the saved weights rebuild every exported member, in a
    process that never imports the data package, with the saved model's outputs (atol 1e-5)."""
    _, _, manifest, out = exported
    folders = [str(out / m.dir) for m in manifest.members]
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-c", _NO_DATA_REBUILD, *folders], cwd=root, capture_output=True,
                          text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert not [m for m in result["modules"] if m.startswith(("autocompress.data", "autocompress.train", "mlxtend"))]
    assert set(result["outputs"]) == set(folders) and folders
    for folder in folders:
        # probe.pt: the exported model's own logits, computed in the exporting process before it was saved
        saved = torch.load(Path(folder) / "probe.pt", weights_only=True)["logits"]
        torch.testing.assert_close(torch.tensor(result["outputs"][folder]), saved, atol=1e-5, rtol=0)


def test_plots_are_written_and_not_blank(exported):
    import matplotlib.image as mpimg

    _, _, manifest, out = exported
    for name in ("front", "policy"):
        path = out / manifest.plots[name]
        assert path.suffix == ".png" and path.stat().st_size > 20_000
        image = mpimg.imread(path)
        assert image.shape[0] > 300 and image.shape[1] > 600 and image[..., :3].std() > 0.05


def test_int8_member_is_exported_calibrated_and_runs_int8_kernels(searched, tmp_path):
    """The int8 path on a candidate that is int8 everywhere (the tiny search's front may have no int8 layer:
    on an uncalibrated profile isolated int8 layers look slow, so the latency budget filters them)."""
    from autocompress.export.exporter import build_member
    from autocompress.runtime.onnx_runtime import optimized_model
    from autocompress.search import TrialRecord
    from autocompress.train import Evaluator, FitConfig

    setup, _, _ = searched
    candidate = setup.space.uniform(keep=0.5, w_bits=8, a_bits=8)
    record = TrialRecord(7, candidate, {}, True, True, 0.5, "proxy", 1.0)
    evaluator = Evaluator(teacher=setup.base_model, data=setup.data, fidelity="full",
                          fit=FitConfig(epochs=0.2, lr=0.01, seed=0, progress=False))
    built = build_member(setup, record, tmp_path, evaluator, seed=0)
    assert built.deployed_onnx == "trial-0007/model.int8.onnx"
    ops = {n.op_type for n in optimized_model(tmp_path / built.deployed_onnx).graph.node}
    assert {"QLinearConv"} <= ops or any(op.startswith("QLinear") or op == "QGemm" for op in ops), ops
    scored = built.artifact_accuracy
    print("int8 LeNet-5 member (torch / onnx fp32 / onnx int8):", scored.torch, scored.onnx_fp32, scored.onnx_int8)
    assert abs(scored.onnx_int8 - scored.onnx_fp32) <= 0.01 and abs(scored.onnx_int8 - scored.torch) <= 0.01
    assert abs(scored.onnx_fp32 - scored.torch) <= 0.005 + 1e-9  # the fp32 file lacks the 8-bit activation rounding
    assert scored.onnx_int8 > 0.2  # far above chance (0.1) after a very short fine-tune
    assert scored.int8_quantization == quantization_settings()
    assert read_preprocessing(tmp_path / built.deployed_onnx) == built.preprocessing.model_dump(mode="json")
    # int8 activation observers and pruned channels come back from plan.json + weights.pt alone
    assert torch.equal(rebuild(tmp_path / "trial-0007")(torch.zeros(1, 1, 28, 28)),
                       built.model(torch.zeros(1, 1, 28, 28)))


def test_named_trials_export_exactly_those(searched, tmp_path):
    setup, study, _ = searched
    evaluated = [t.number for t in records(study) if t.evaluated]
    manifest = export_front(setup, study, tmp_path, trials=[evaluated[-1]], final_epochs=0.05, rounds=1, reps=2,
                            sessions=1, passes=1, progress=False)
    assert manifest.study.selected == "given" and [m.trial for m in manifest.members] == evaluated[-1:]
    assert len(manifest.members[0].measured["latency_sessions_ms"]) == 1


def test_bad_trial_numbers_are_refused_by_number(searched, tmp_path):
    setup, study, _ = searched
    with pytest.raises(ExportError, match="trial 999 does not exist"):
        export_front(setup, study, tmp_path, trials=[999], progress=False)
    filtered = [t.number for t in records(study) if not t.feasible]
    if filtered:
        with pytest.raises(ExportError, match=f"trial {filtered[0]} .*broke a budget"):
            export_front(setup, study, tmp_path, trials=[filtered[0]], progress=False)
    assert not (tmp_path / "manifest.json").exists()


# -- budget checks on given numbers (no model needed) --------------------------------------------------


def _profile_with_validations(*noise_by_models: tuple[list[str], float, str]) -> HardwareProfile:
    """A profile whose validations (subset ``all`` unless named) have these noise floors, in this order."""
    from autocompress.hardware.profile import DeviceInfo, Provenance

    validations = [ValidationResult(date="2025-01-01", models=models, subset=subset, n_candidates=8, spearman=0.9,
                                    median_abs_pct_error=3, p90_abs_pct_error=8, within_10pct=0.9,
                                    noise_floor_pct=noise, calibration=Calibration())
                   for models, noise, subset in noise_by_models]
    return HardwareProfile(name="p", kind="measured", device=DeviceInfo(name="d"), runtime="onnxruntime", threads=1,
                           batch_size=1, precisions={"fp32": "x"}, entries={}, validation=validations,
                           provenance=Provenance(command="c", date="d"))


def test_noise_band_comes_from_the_models_validation_at_its_input_shape():
    profile = _profile_with_validations(
        (["resnet20@3x32x32"], 50.0, "all"), (["resnet20@3x32x32"], 2.0, "all"), (["resnet20@3x32x32"], 9.0, "fp32-only"),
        (["resnet20@1x28x28"], 3.0, "all"), (["lenet5"], 2.5, "all"), (["resnet20", "mobilenetv2_cifar"], 8.0, "all"),
        (["resnet20@3x32x32", "mobilenetv2_cifar@3x32x32"], 4.0, "all"))
    assert noise_band(profile, "resnet20", (3, 32, 32))[0] == 2.0  # the latest "all" entry of that shape
    assert noise_band(profile, "resnet20", (1, 28, 28)) == (3.0, "profile 'p' validation of 2025-01-01: noise "
                                                                 "floor for resnet20@1x28x28")
    assert noise_band(profile, "lenet5", (1, 28, 28))[0] == 2.5  # an older profile's bare model name
    band, source = noise_band(profile, "mobilenetv2_cifar", (3, 32, 32))  # no entry of its own: the pooled one
    assert band == 4.0 and "pooled" in source and "mobilenetv2_cifar@3x32x32" in source
    alone = _profile_with_validations((["resnet20@3x32x32"], 2.0, "all"))
    assert noise_band(alone, "mobilenetv2_cifar", (3, 32, 32))[0] == DEFAULT_NOISE_PCT
    assert noise_band(alone, "resnet20")[0] == DEFAULT_NOISE_PCT  # no shape given: only a bare name would match


def test_noise_band_of_the_shipped_profile_is_its_validation_not_the_default():
    """The quickstart's model and input shape (ResNet-20 on 1x28x28 digits) were validated on the shipped profile."""
    profile = find_profile("cpu-onnxruntime-1t")
    [latest] = [v for v in profile.validation if v.models == ["resnet20@1x28x28"] and v.subset == "all"][-1:]
    band, source = noise_band(profile, "resnet20", (1, 28, 28))
    assert band == latest.noise_floor_pct != DEFAULT_NOISE_PCT and "resnet20@1x28x28" in source


def test_budget_rows_compare_measured_with_measured():
    reference = {"latency_ms": 1.0, "energy_mj": 1.0, "size_bytes": 4000.0, "macs": 1e6, "bitops": 1e9}
    budgets = parse_budgets(["latency<=0.5x", "latency_ms<=0.3", "energy<=0.5x", "size_kb<=1"], reference)
    predicted = {"latency_ms": 0.45, "energy_mj": 0.4, "size_bytes": 900.0, "macs": 5e5, "bitops": 1e8,
                 "energy_method": "modelled"}
    ref_measured = {"latency_ms": 2.0, "size_bytes": 5000.0}
    within = budget_rows(budgets, predicted, {"latency_ms": 1.04, "size_bytes": 1100.0}, ref_measured,
                         noise_pct=5.0, energy_method="modelled")
    rel, absolute, energy, size = within
    assert rel.measured_limit == 1.0 and rel.met_measured and "noise band" in rel.note
    assert absolute.met_measured is False and absolute.note.startswith("MISSED")
    assert energy.met_measured is None and "modelled" in energy.note and energy.energy_method == "modelled"
    assert size.met_measured is False and size.noise_band_pct == 0.0  # counted exactly: no band
    over = budget_rows(budgets, predicted, {"latency_ms": 1.2, "size_bytes": 900.0}, ref_measured, noise_pct=5.0,
                       energy_method="modelled")
    assert over[0].met_measured is False and "MISSED" in over[0].note and over[3].met_measured
    untimed = budget_rows(budgets, predicted, {"size_bytes": 900.0}, {"size_bytes": 5000.0}, noise_pct=5.0,
                          energy_method="modelled", timing_note="runtime 'simulator' cannot run here")
    assert untimed[0].met_measured is None and "simulator" in untimed[0].note
    # an energy counter read during re-measurement: energy is checked like latency, with its method
    metered = budget_rows(budgets, predicted, {"latency_ms": 1.0, "energy_mj": 0.52, "energy_method": "measured:rapl",
                                               "size_bytes": 900.0},
                          {**ref_measured, "energy_mj": 1.0}, noise_pct=5.0, energy_method="modelled")
    assert metered[2].energy_method == "measured:rapl" and metered[2].measured_limit == 0.5
    assert metered[2].met_measured and "noise band" in metered[2].note
    # on a machine 4x slower than the profile's device, an absolute limit meets the measurement divided by the
    # machine check's speed ratio; a relative one compares measured with measured and is left alone
    slow = budget_rows(budgets, predicted, {"latency_ms": 1.0}, ref_measured, noise_pct=5.0,
                       energy_method="modelled", speed_ratio=4.0)
    assert slow[1].measured == 0.25 and slow[1].met_measured and "speed ratio 4.00" in slow[1].note
    assert slow[0].measured == 1.0 and slow[0].met_measured
    # timed in three passes: the verdict on each pass's own figure, on the same scale as the whole one
    passes = {"latency_ms": 0.96, "latency_vs_reference": 0.48, "latency_passes_vs_reference": [0.44, 0.48, 0.56]}
    rel, absolute, *_ = budget_rows(budgets, predicted, passes, ref_measured, noise_pct=5.0, energy_method="modelled",
                                    speed_ratio=4.0)
    assert rel.met_measured and rel.met_in_passes == [True, True, False]
    assert "met in 2 of 3 timing passes (0.88-1.12 ms)" in rel.note
    assert absolute.met_in_passes == [True, True, True]  # 0.22-0.28 ms on the profile's device against 0.3 ms
    assert within[0].met_in_passes is None  # one pass: nothing to add
