"""Measuring and validating profiles for real: ONNX Runtime sessions, subprocesses killed with SIGKILL."""

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from autocompress.hardware import CostModel, HardwareProfile, ProfileError, required_signatures
from autocompress.runtime.profiler import (
    ProfileSettings,
    build_profile,
    measure_signatures,
    partial_path,
)
from autocompress.runtime.validate import (
    CALIBRATION_FORMS,
    Suite,
    samples_from_report,
    score_samples,
    validate_profile,
)
from tests.helpers import zoo_model

LENET = ["--models", "lenet5", "--input-shape", "1x28x28"]


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "autocompress.cli", "profile", "measure", *args]


def test_measure_then_price_lenet(tmp_path):
    model, graph = zoo_model("lenet5")
    from autocompress.space import SearchSpace

    space = SearchSpace.from_yaml(graph, "lenet")
    keys = required_signatures(space, ["fp32", "int8"])
    settings = ProfileSettings(rounds=1, reps=2, warmup=1, chunk=64)
    calls = []
    measured = measure_signatures(keys, tmp_path / "p.json", settings, progress=lambda *a: calls.append(a))
    entries = measured.entries
    assert set(entries) == set(keys) and all(e.latency_ms > 0 for e in entries.values())
    assert calls and calls[-1][0] == len(keys) * settings.passes
    assert all(e.count == settings.passes * settings.sessions * settings.rounds * settings.reps
               for e in entries.values())
    profile = build_profile("t", measured, settings, command="test", versions={})
    costs = CostModel(profile, space)
    from autocompress.hardware import leaf_signatures

    by_hand = sum(entries[leaf.key].latency_ms for cfg in space.layer_configs(space.identity())
                  for leaf in leaf_signatures(cfg, "fp32"))
    assert costs.reference().latency_ms == pytest.approx(by_hand)


def test_sigkill_then_resume_measures_nothing_twice(tmp_path):
    out = tmp_path / "lenet.json"
    args = _cli(*LENET, "--rounds", "3", "--reps", "10", "--chunk", "8", "--out", str(out))
    partial = partial_path(out)
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if partial.exists() and len(partial.read_text().splitlines()) >= 16:
            break
        time.sleep(0.01)
    assert proc.poll() is None, "the measurement finished before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    records = [json.loads(line) for line in partial.read_text().splitlines() if line.strip()]
    anchor_keys = records[0]["anchor_keys"]  # chosen once, before the first entry
    before = {r["key"]: r["entry"] for r in records if "key" in r}
    first_chunks = [r["chunk_anchors"] for r in records if "chunk_anchors" in r]
    assert 16 <= len(before) and len(anchor_keys) == 4 and first_chunks and not out.exists()
    with partial.open("a") as fh:
        fh.write('{"key": "conv:in1:out6')  # a line torn by the kill must not break the resume

    done = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"resuming: {len(before)} of" in done.stdout + done.stderr
    profile = HardwareProfile.load(out)
    # the kill came in the first pass. The anchors of all chunks, before and after it, set the reference
    # (this run had none), so the scale is exactly 1 and an entry, its faster pass, is never slower than
    # its first pass as timed before the kill; its count covers both passes
    for key, entry in before.items():
        assert profile.entries[key].latency_ms <= entry["latency_ms"] * (1 + 1e-12)
        assert profile.entries[key].count == 2 * entry["count"]
    assert list(profile.anchors) == anchor_keys
    assert not partial.exists()


def test_anchors_put_an_extension_on_the_profiles_scale(tmp_path):
    """Entries measured later are rescaled by how far the anchors moved from the profile's reference."""
    model, graph = zoo_model("lenet5")
    from autocompress.space import SearchSpace

    keys = required_signatures(SearchSpace.from_yaml(graph, "lenet"), ["fp32"])
    first, rest = keys[::2], keys[1::2]
    settings = ProfileSettings(rounds=2, reps=5, warmup=1, chunk=16)
    base = measure_signatures(first, tmp_path / "a.json", settings)
    assert len(base.anchors) == 4 and set(base.anchors) <= set(first) and base.scale == 1.0
    assert len(base.chunk_ratios) == settings.passes * -(-len(first) // 16)
    # one pass, then the same file with two: the run resumes inside the second pass and times only that
    measure_signatures(rest, tmp_path / "b.json", dataclasses.replace(settings, passes=1), anchors=base.anchors)
    calls: list[tuple] = []
    same = measure_signatures(rest, tmp_path / "b.json", settings, anchors=base.anchors,
                              progress=lambda *a: calls.append(a))
    assert calls[0][0] == len(rest) + min(16, len(rest)) and calls[-1][0] == 2 * len(rest)
    assert set(same.entries) == set(rest) and 0.3 < same.scale < 3
    # the same raw timings against a reference measured on a machine twice as slow: the extension
    # lands on that scale (resumed from the finished run's partial file, so nothing is timed again)
    shutil.copy(partial_path(tmp_path / "b.json"), partial_path(tmp_path / "c.json"))
    calls.clear()
    slow = measure_signatures(rest, tmp_path / "c.json", settings, anchors={k: 2 * v for k, v in base.anchors.items()},
                              progress=lambda *a: calls.append(a))
    assert not calls
    assert slow.anchors == {k: 2 * v for k, v in base.anchors.items()}
    assert slow.scale == pytest.approx(2 * same.scale, rel=1e-9)
    assert all(slow.entries[k].latency_ms == pytest.approx(2 * same.entries[k].latency_ms, rel=1e-9) for k in rest)


def test_validate_stores_calibration_and_fidelity(tmp_path):
    model, graph = zoo_model("lenet5")
    from autocompress.space import Candidate, SearchSpace

    space = SearchSpace.from_yaml(graph, "lenet")
    settings = ProfileSettings(rounds=1, reps=3, warmup=1)
    measured = measure_signatures(required_signatures(space, ["fp32", "int8"]), tmp_path / "p.json", settings)
    profile = build_profile("t", measured, settings, command="test", versions={})
    updated, report = validate_profile(profile, [Suite("lenet5", model, space)], n_validate=9, n_calibrate=15,
                                       seed=0, rounds=2, reps=5, sessions=2)
    assert set(updated.model_calibrations) == {"lenet5@1x28x28"}  # the model at the input shape it was fitted on
    # the random candidates, every second uniform all-int8 one (the widest first) and the reference
    uniform_fit = [s for s in report["calibration_samples"] if s["subset"] == "uniform-int8"]
    assert len(uniform_fit) >= 1 and len(report["calibration_samples"]) == 15 + len(uniform_fit) + 1
    assert Candidate.from_dict(uniform_fit[0]["candidate"]) == space.uniform(keep=1.0, w_bits=8, a_bits=8)
    [reference] = [s for s in report["calibration_samples"] if s["subset"] == "reference"]
    assert Candidate.from_dict(reference["candidate"]) == space.identity()
    assert reference["measured_ms"] == report["reference_ms"]["lenet5"]
    assert updated.calibration.fitted_on == 15 + len(uniform_fit) + 1
    assert updated.calibration.models == ["lenet5@1x28x28"]
    assert updated.calibration.form in CALIBRATION_FORMS
    subsets = {v.subset for v in updated.validation}
    assert subsets == {"fp32-only", "int8-containing", "near-int8", "uniform-int8", "all"}
    for v in updated.validation:
        assert -1 <= v.spearman <= 1 or (np.isnan(v.spearman) and v.n_candidates <= 2)  # no rank of two
        assert v.median_abs_pct_error >= 0 and 0 <= v.within_10pct <= 1
        assert v.noise_floor_pct >= 0
        assert v.anchor_ratio == report["anchor_ratio"] and 0.2 < v.anchor_ratio < 5  # anchors timed beside them
    uniform = [s for s in report["samples"] if s["subset"] == "uniform-int8"]  # held out, every layer w8a8
    assert len(uniform_fit) in (len(uniform), len(uniform) + 1) and len(report["samples"]) == 9 + len(uniform)
    assert not {json.dumps(s["candidate"]) for s in uniform} & {json.dumps(s["candidate"]) for s in uniform_fit}
    assert all(d["w_bits"] == d["a_bits"] == 8 for s in uniform for d in s["candidate"]["layers"].values())
    # near-int8: every unit int8 but one to three float ones, calibrated on and held out like the random subsets
    near_fit, near = ([s for s in rows if s["subset"] == "near-int8"]
                      for rows in (report["calibration_samples"], report["samples"]))
    assert len(near_fit) == 5 and len(near) == 3
    for s in near_fit + near:
        floats = [d["w_bits"] for d in s["candidate"]["layers"].values() if d["w_bits"] > 8]
        assert 1 <= len(floats) <= 3 and all(d["w_bits"] in (8, 32) for d in s["candidate"]["layers"].values())
    assert all(s["measured_ms"] > 0 for s in report["samples"])
    assert set(report["reference_ms"]) == {"lenet5"} and report["reference_ms"]["lenet5"] > 0
    for s in report["samples"] + report["calibration_samples"]:  # two session sets, the value between them
        low, high = sorted(s["halves_ms"])
        assert 0 < low <= s["measured_ms"] <= high
    saved = updated.save(tmp_path / "validated.json")
    assert HardwareProfile.load(saved).model_dump_json() == updated.model_dump_json()  # nan == nan there
    # re-scored on a profile whose pool spans more models, the one-model fit keeps that wider pool
    wide = updated.model_copy(update={"calibration": updated.calibration.model_copy(
        update={"models": ["a@3x32x32", "b@3x32x32"]})})
    suites = [Suite("lenet5", model, space)]
    again, _ = score_samples(wide, suites, samples_from_report(wide, suites, report), ["fp32-only", "int8-containing"])
    assert again.calibration == wide.calibration
    assert again.model_calibrations["lenet5@1x28x28"] == updated.model_calibrations["lenet5@1x28x28"]
    # with no calibration candidates the model is priced by what the profile holds, and nothing is refitted
    held, held_report = validate_profile(updated, suites, n_validate=4, n_calibrate=0, seed=1, rounds=1, reps=3,
                                         sessions=1)
    assert held_report["calibration_samples"] == []
    assert held.calibration == updated.calibration and held.model_calibrations == updated.model_calibrations
    new_results = held.validation[len(updated.validation):]
    own = updated.model_calibrations["lenet5@1x28x28"]
    assert new_results and all(v.calibration == own for v in new_results)
    for row in held_report["samples"]:  # each prediction is that calibration applied to the table's sums
        candidate = Candidate.from_dict(row["candidate"])
        features = CostModel(updated, space).predict_batch(space.encoding.encode([candidate]))
        assert row["predicted_ms"] == pytest.approx(float(own.apply(features)[0]))


def test_validate_holds_models_out_in_the_same_run(tmp_path):
    """Held-out models are timed beside the calibrated ones and priced with the pool this run fits, never with a
    calibration the profile holds for them."""
    model, graph = zoo_model("lenet5")
    from autocompress.space import Candidate, SearchSpace

    space = SearchSpace.from_yaml(graph, "lenet")
    settings = ProfileSettings(rounds=1, reps=3, warmup=1)
    measured = measure_signatures(required_signatures(space, ["fp32", "int8"]), tmp_path / "p.json", settings)
    profile = build_profile("t", measured, settings, command="test", versions={})
    stale = profile.calibration.model_copy(update={"offset_ms": 100.0, "models": ["unseen@1x28x28"]})
    profile = profile.model_copy(update={"model_calibrations": {"unseen@1x28x28": stale}})
    suites = [Suite("lenet5", model, space), Suite("unseen", model, space)]
    with pytest.raises(ProfileError, match=r"hold_out: \['other'\] are not among"):
        validate_profile(profile, suites, n_validate=3, n_calibrate=6, hold_out=["other"])
    with pytest.raises(ProfileError, match="at least one model that is not held out"):
        validate_profile(profile, suites, n_validate=3, n_calibrate=6, hold_out=["lenet5", "unseen"])
    updated, report = validate_profile(profile, suites, n_validate=3, n_calibrate=9, seed=2, rounds=2, reps=3,
                                       sessions=1, hold_out=["unseen"])
    assert {s["model"] for s in report["calibration_samples"]} == {"lenet5"}  # never calibrated on the held-out
    assert {s["model"] for s in report["samples"]} == {"lenet5", "unseen"}
    assert set(report["reference_ms"]) == {"lenet5", "unseen"}  # timed in the same run
    assert updated.model_calibrations["unseen@1x28x28"] == stale  # nothing stored for it
    pooled = updated.calibration
    assert pooled.models == ["lenet5@1x28x28"]
    for row in (r for r in report["samples"] if r["model"] == "unseen"):  # the run's pool, not the stale one
        features = CostModel(updated, space).predict_batch(space.encoding.encode([Candidate.from_dict(row["candidate"])]))
        assert row["predicted_ms"] == pytest.approx(float(pooled.apply(features)[0]))
    identity = CostModel(updated, space).predict_batch(space.encoding.encode([space.identity()]))
    reference = report["reference_predicted_ms"]["unseen"]  # what a relative budget on it divides by
    assert reference["predicted_ms"] == pytest.approx(float(pooled.apply(identity)[0]))
    for row in report["samples"]:  # each candidate as a fraction of its reference, measured and predicted
        assert row["measured_fraction"] == pytest.approx(row["measured_ms"] / report["reference_ms"][row["model"]])
        assert row["predicted_fraction"] == pytest.approx(
            row["predicted_ms"] / report["reference_predicted_ms"][row["model"]]["predicted_ms"])
    scored = {tuple(v.models) for v in updated.validation}
    assert ("unseen@1x28x28",) in scored and ("lenet5@1x28x28", "unseen@1x28x28") in scored


def test_validate_times_noisy_models_again_up_to_the_most_rounds(tmp_path):
    """A model whose two session sets disagree by more than the noise bound gets another round, up to the most
    allowed; under the bound it gets none. The report says how many each got, and the progress counts them."""
    model, graph = zoo_model("lenet5")
    from autocompress.space import SearchSpace

    space = SearchSpace.from_yaml(graph, "lenet")
    settings = ProfileSettings(rounds=1, reps=3, warmup=1)
    measured = measure_signatures(required_signatures(space, ["fp32", "int8"]), tmp_path / "p.json", settings)
    profile = build_profile("t", measured, settings, command="test", versions={})
    suites = [Suite("lenet5", model, space)]
    for bad in ({"rounds": 2, "max_rounds": 1}, {"noise_bound_pct": -1.0}, {"rounds": 0}):
        with pytest.raises(ProfileError, match="max rounds >= rounds"):
            validate_profile(profile, suites, **bad)
    common = {"n_validate": 3, "n_calibrate": 12, "seed": 0, "rounds": 1, "reps": 3, "sessions": 1, "max_rounds": 3}
    before: dict[str, list[int]] = {"quiet": [], "noisy": []}  # the hook that settles the machine between rounds
    _, quiet = validate_profile(profile, suites, noise_bound_pct=1e6, before_round=before["quiet"].append, **common)
    calls: list[tuple[int, int]] = []
    _, noisy = validate_profile(profile, suites, noise_bound_pct=1e-9, progress=lambda d, t: calls.append((d, t)),
                                before_round=before["noisy"].append, **common)
    assert before == {"quiet": [], "noisy": [1, 2]}  # before every round after the first, with the rounds done
    assert quiet["rounds"]["per_model"] == {"lenet5": 1}
    assert noisy["rounds"]["per_model"] == {"lenet5": 3}  # no real timing agrees to a billionth of a percent
    assert noisy["rounds"]["noise_floor_pct"]["lenet5"] > 0 and noisy["rounds"]["noise_bound_pct"] == 1e-9
    first_total = calls[0][1]
    again = first_total - len(profile.anchors)  # the anchors (one session each) are not timed again
    assert calls[-1] == (first_total + 2 * again, first_total + 2 * again)  # two more rounds, each call counted


def test_validate_cli_refuses_a_hold_out_outside_the_models(tmp_path):
    done = subprocess.run([sys.executable, "-m", "autocompress.cli", "profile", "validate", str(tmp_path / "p.json"),
                           *LENET, "--hold-out", "resnet20"], capture_output=True, text=True)
    assert done.returncode == 2 and "--hold-out resnet20: not among --models lenet5" in done.stderr


@pytest.mark.parametrize("bad", [["--runtime", "tflite"], ["--input-shape", "32x32"]])
def test_profile_cli_rejects_bad_options(tmp_path, bad):
    done = subprocess.run(_cli(*LENET, *bad, "--out", str(tmp_path / "x.json")), capture_output=True, text=True)
    assert done.returncode == 2 and "error" in done.stderr
    assert not Path(tmp_path / "x.json").exists()


# -- calibration: recovers what generated the data, and the simplest form that explains it ---------------


def _synthetic(n: int, coefficients: dict[str, float], offset_ms: float, *, noise: float, seed: int = 0,
               float_only: bool = False):
    """``n`` models' features drawn independently, and latencies from ``coefficients`` with relative noise."""
    from autocompress.hardware.profile import CALIBRATION_FEATURES, calibration_features

    rng = np.random.default_rng(seed)
    quant = np.zeros(n) if float_only else rng.integers(0, 2, n).astype(float)  # half the models have int8 layers
    layers_quant = quant * rng.integers(1, 20, n)
    summed = {"sum_float_ms": rng.uniform(0.2, 2.0, n), "sum_quant_ms": layers_quant * rng.uniform(0.01, 0.05, n),
              "layers_float": rng.integers(5, 40, n).astype(float), "layers_quant": layers_quant,
              "mact_float": rng.uniform(0.05, 1.0, n), "mact_quant": quant * rng.uniform(0.05, 1.0, n),
              "boundaries": quant * rng.integers(0, 10, n), "boundary_mact": quant * rng.uniform(0.0, 0.5, n)}
    features = calibration_features(summed)
    exact = offset_ms + sum(c * features[f] for f, c in coefficients.items())
    measured = exact * (1 + noise * rng.standard_normal(n))
    return np.column_stack([features[f] for f in CALIBRATION_FEATURES]), measured


def test_fit_calibration_recovers_the_coefficients_of_the_sums_form():
    from autocompress.runtime.validate import fit_calibration

    truth = {"sum_float_ms": 0.8, "sum_quant_ms": 0.5, "any_quant": 0.05}
    features, measured = _synthetic(60, truth, 0.02, noise=0.005)
    cal = fit_calibration(features, measured, ["m@1x28x28"] * 60)
    # layer counts and activations, which did not make the data, do not earn their place
    assert cal.form == "sums" and set(cal.coefficients) == set(truth)
    for name, value in truth.items():
        assert cal.coefficients[name] == pytest.approx(value, abs=0.03), name
    assert cal.offset_ms == pytest.approx(0.02, abs=0.03)
    assert cal.fitted_on == 60 and cal.models == ["m@1x28x28"]


def test_fit_calibration_takes_the_layer_terms_when_the_data_has_them():
    from autocompress.runtime.validate import fit_calibration

    truth = {"sum_float_ms": 0.7, "sum_quant_ms": 0.6, "any_quant": 0.1, "layers_float": -0.004,
             "layers_quant": -0.003}
    features, measured = _synthetic(60, truth, 0.05, noise=0.005, seed=1)
    cal = fit_calibration(features, measured, ["a@3x32x32", "b@3x32x32"] * 30)
    assert cal.form == "sums+layers" and set(cal.coefficients) == set(truth)
    for name, value in truth.items():
        assert cal.coefficients[name] == pytest.approx(value, rel=0.2), name  # signs included
    assert cal.models == ["a@3x32x32", "b@3x32x32"]


def test_fit_calibration_takes_the_boundary_terms_when_the_data_has_them():
    from autocompress.runtime.validate import fit_calibration

    truth = {"sum_float_ms": 0.9, "sum_quant_ms": 0.6, "any_quant": 0.03, "boundaries": 0.004, "boundary_mact": 0.3}
    features, measured = _synthetic(60, truth, 0.01, noise=0.005, seed=3)
    cal = fit_calibration(features, measured, ["m@3x32x32"] * 60)
    assert cal.form == "sums+boundaries" and set(cal.coefficients) == set(truth)
    for name, value in truth.items():
        assert cal.coefficients[name] == pytest.approx(value, rel=0.25), name


def test_fit_calibration_on_float_models_and_too_few_models():
    from autocompress.runtime.validate import fit_calibration

    features, measured = _synthetic(24, {"sum_float_ms": 0.9}, 0.03, noise=0.005, seed=2, float_only=True)
    cal = fit_calibration(features, measured, ["m"] * 24)
    # terms that are 0 for every model (no int8 part) are left out rather than fitted to nothing
    assert cal.form == "sums" and set(cal.coefficients) == {"sum_float_ms"}
    assert cal.coefficients["sum_float_ms"] == pytest.approx(0.9, abs=0.03)
    with pytest.raises(ProfileError, match="at least 4 calibration models"):
        fit_calibration(features[:3], measured[:3], ["m"] * 3)
    with pytest.raises(ProfileError, match="too few calibration models"):
        fit_calibration(features[:5], measured[:5], ["m"] * 5)
