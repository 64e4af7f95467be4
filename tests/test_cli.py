"""Every command of the CLI for real, on LeNet-5 and mnist5k; and a bad config failing before any training."""

import json
import logging
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from autocompress import cli
from autocompress.hardware import CostModel, HardwareProfile
from autocompress.hardware.profile import ProfileError, find_profile
from autocompress.models import create_model
from autocompress.progress import LoggedProgress, progress_bar
from autocompress.search import SearchConfig, check, load_study, records
from autocompress.space import SpaceError
from tests.helpers import roofline_profile

LENET = ["--model", "lenet5", "--data", "mnist5k"]


def run(capsys, *argv: str) -> tuple[int, str, str]:
    """``autocompress ARGV`` in this process: exit code, stdout, stderr."""
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def roofline(tmp_path_factory) -> str:
    """An analytic profile: prices any signature, deterministic, no timing noise."""
    profile = roofline_profile()
    return str(profile.save(tmp_path_factory.mktemp("profiles") / "roofline.json"))


@pytest.fixture(scope="module")
def searched(tmp_path_factory, roofline) -> Path:
    """A run directory: two trials of a LeNet-5 search, not exported."""
    root = tmp_path_factory.mktemp("search")
    code = cli.main(["search", *LENET, "--profile", roofline, "--budget", "latency<=0.6x", "--trials", "2",
                     "--base-epochs", "0.3", "--proxy-epochs", "0.05", "--max-train", "600", "--strategy", "random",
                     "--device", "cpu", "--out", str(root / "run"), "--cache-dir", str(root / "cache"),
                     "--no-export", "--quiet"])
    assert code == 0
    return root / "run"


def test_search_records_the_run_and_its_front(searched):
    config = json.loads((searched / "config.json").read_text())
    assert config["config"]["model"] == "lenet5" and config["versions"]["torch"]
    assert config["config"]["device"] == "cpu"
    front = json.loads((searched / "front.json").read_text())
    assert front["front"] and front["budgets"][0].startswith("latency<=0.6x")
    study = load_study(searched / "study.journal", front["study"])
    assert sum(t.evaluated for t in records(study)) == 2
    assert "search" in (searched / "search.log").read_text()


def test_export_writes_the_front_again(searched, tmp_path, capsys):
    code, out, _ = run(capsys, "export", str(searched), "--out", str(tmp_path / "again"), "--final-epochs", "0.05",
                       "--quiet")
    assert code == 0, out
    manifest = json.loads((tmp_path / "again" / "manifest.json").read_text())
    assert manifest["members"] and f"exported {len(manifest['members'])} model(s)" in out
    assert (tmp_path / "again" / "front.png").exists()
    code, _, err = run(capsys, "export", str(tmp_path / "no-run"), "--out", str(tmp_path / "x"))
    assert code == 2 and "no-run" in err


def test_export_replicates_a_fine_tune_with_another_seed(searched, tmp_path, capsys):
    same = ("--final-epochs", "0.05", "--quiet")
    code, out, _ = run(capsys, "export", str(searched), "--out", str(tmp_path / "seed5"), "--seed", "5", *same)
    assert code == 0, out
    manifest = json.loads((tmp_path / "seed5" / "manifest.json").read_text())
    assert manifest["final_fine_tune"]["seed"] == 5 and manifest["config"]["seed"] == 5
    stored = json.loads((searched / "config.json").read_text())
    assert stored["config"]["seed"] != 5  # the study itself is read, never changed


def test_demo_compresses_one_candidate(tmp_path, capsys, caplog):
    caplog.set_level(logging.INFO, logger="autocompress.progress")
    code, out, err = run(capsys, "demo", *LENET, "--base-epochs", "0.3", "--finetune-epochs", "0.1",
                         "--max-train", "600", "--out", str(tmp_path / "demo"), "--cache-dir", str(tmp_path / "cache"))
    assert code == 0
    report = json.loads((tmp_path / "demo" / "result.json").read_text())
    assert report["compressed"]["params"] < report["base"]["params"]
    assert "reference" in out and "compressed" in out
    # not a terminal here: progress comes as a few log lines, not redrawn bar frames
    lines = [r.getMessage() for r in caplog.records if r.name == "autocompress.progress"]
    assert lines and len(lines) <= 30 and "\r" not in err
    code, _, err = run(capsys, "demo", *LENET, "--candidate", "uniform:keep=half", "--out", str(tmp_path / "bad"),
                       "--cache-dir", str(tmp_path / "cache2"))
    assert code == 2 and "'keep=half' is not dimension=number" in err
    assert not (tmp_path / "cache2").exists()  # refused before the reference was trained


def test_space_shows_units_and_choices(capsys):
    code, out, _ = run(capsys, "space", *LENET)
    assert code == 0 and "features.0" in out and "prunable groups" in out and "SearchSpace 'lenet'" in out
    code, _, err = run(capsys, "space", *LENET, "--space", "no_such_space")
    assert code == 2 and "no_such_space" in err


def test_models_lists_the_zoo(capsys):
    code, out, _ = run(capsys, "models")
    assert code == 0 and all(name in out for name in ("lenet5", "resnet20", "mobilenetv2_cifar"))


def test_profile_show_describes_a_shipped_profile(capsys):
    code, out, _ = run(capsys, "profile", "show", "cpu-onnxruntime-1t")
    assert code == 0 and "calibration[resnet20@3x32x32]" in out and "spearman" in out


def test_profile_analytic_writes_a_profile_that_prices(tmp_path, capsys):
    path = tmp_path / "acc.json"
    code, out, _ = run(capsys, "profile", "analytic", "--peak-gmacs", "fp32=50,int8=200", "--bandwidth-gbs", "10",
                       "--out", str(path))
    assert code == 0 and "analytic profile" in out
    assert HardwareProfile.load(path).kind == "analytic"
    code, _, err = run(capsys, "profile", "analytic", "--peak-gmacs", "fp32=fast", "--out", str(tmp_path / "x.json"))
    assert code == 2 and "--peak-gmacs" in err


def test_profile_measure_then_validate(tmp_path, capsys):
    path = tmp_path / "lenet.json"
    timing = ["--rounds", "1", "--reps", "2", "--sessions", "1"]
    suite = ["--models", "lenet5", "--input-shape", "1x28x28"]
    code, out, _ = run(capsys, "profile", "measure", *suite, *timing, "--passes", "1",
                       "--anchors", "0", "--warmup", "1", "--chunk", "500", "--out", str(path))
    assert code == 0 and "layer signatures to measure" in out
    measured = HardwareProfile.load(path)
    assert measured.kind == "measured" and measured.entries
    code, out, err = run(capsys, "profile", "validate", str(path), *suite, *timing, "--n", "2", "--calibrate", "12")
    assert code == 0, err
    validated = HardwareProfile.load(path)
    assert validated.validation and "lenet5@1x28x28" in validated.model_calibrations
    assert (tmp_path / "lenet.validation.json").exists()


def test_profile_verbs_take_only_their_own_options(capsys):
    helps = {}
    for verb in ("measure", "validate", "analytic", "show"):
        with pytest.raises(SystemExit):
            cli.main(["profile", verb, "--help"])
        helps[verb] = capsys.readouterr().out
    assert "--peak-gmacs" in helps["analytic"] and "--peak-gmacs" not in helps["validate"]
    assert "--calibrate" in helps["validate"] and "--calibrate" not in helps["measure"]
    assert "--remeasure" in helps["measure"] and "--models" not in helps["analytic"]
    assert "--out" not in helps["show"]
    with pytest.raises(SystemExit):
        cli.main(["profile", "validate", "p.json", "--peak-gmacs", "fp32=1"])
    assert "unrecognized arguments: --peak-gmacs" in capsys.readouterr().err


# -- a bad config fails in seconds, before the reference is trained ------------------------------------------


@pytest.fixture(scope="module")
def thin_profile(tmp_path_factory) -> str:
    """The shipped CPU profile with most of its entries gone: it cannot price ResNet-20's space."""
    profile = find_profile("cpu-onnxruntime-1t")
    thin = profile.model_copy(update={"entries": dict(list(profile.entries.items())[:50])})
    return str(thin.save(tmp_path_factory.mktemp("profiles") / "thin.json"))


BAD_SPACE = "version: 1\nname: bad\ndefaults:\n  keep: [0.5, 1.5]\n"


@pytest.mark.parametrize(("field", "value", "message"), [
    ("space", "SPACE", "bad.yaml: field defaults.keep"),
    ("budgets", ["latency<0.5"], "EXP: budgets: budget 'latency<0.5': expected METRIC<=NUMBER"),
    ("budgets", ["latency_ms<=0.000001"], "EXP: budgets: no candidate of the space meets"),
    ("profile", "THIN", "thin.json: profile 'cpu-onnxruntime-1t' has no entry for"),
    ("profile", "no-such-profile", "EXP: profile: unknown hardware profile 'no-such-profile'"),
    ("strategy_options", {"bogus": 1}, "EXP: strategy_options"),
    ("data", "cifar10:/no/such/folder", "EXP: data: cifar10:/no/such/folder: no such file or directory"),
    ("calibration", "vgg16", "EXP: calibration: 'vgg16' is not one of the profile's calibrations"),
    ("objective_costs", ["speed"], "EXP: objective_costs: unknown cost 'speed'"),
])
def test_a_bad_config_fails_before_training(tmp_path, capsys, thin_profile, field, value, message):
    space = tmp_path / "bad.yaml"
    space.write_text(BAD_SPACE)
    value = {"SPACE": str(space), "THIN": thin_profile}.get(value, value) if isinstance(value, str) else value
    experiment = {"model": "resnet20", "data": "mnist5k", "profile": "cpu-onnxruntime-1t",
                  "budgets": ["latency<=0.5x"], "strategy": "ddpg", "base_epochs": 15, "n_trials": 20,
                  "out": str(tmp_path / "run"), "cache_dir": str(tmp_path / "cache"), field: value}
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(experiment))
    started = time.perf_counter()
    code, _, err = run(capsys, "search", str(path), "--quiet")
    assert code == 2, err
    assert time.perf_counter() - started < 10
    assert message.replace("EXP", str(path)) in err
    assert not list((tmp_path / "cache").glob("base-*"))  # no reference was trained (or cached)


def test_a_flag_is_not_blamed_on_the_experiment_file(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump({"model": "lenet5", "data": "mnist5k", "out": str(tmp_path / "run"),
                                    "cache_dir": str(tmp_path / "cache")}))
    started = time.perf_counter()  # a fresh process: imports included
    done = subprocess.run([sys.executable, "-m", "autocompress.cli", "search", str(path), "--budget", "latency<0.5",
                           "--quiet"], capture_output=True, text=True, timeout=60)
    assert time.perf_counter() - started < 10
    assert done.returncode == 2 and "error: budgets: budget 'latency<0.5'" in done.stderr
    assert not (tmp_path / "cache").exists()


def test_a_given_module_is_priced_with_the_pooled_calibration_unless_one_is_named():
    profile = find_profile("cpu-onnxruntime-1t")
    own = profile.model_calibrations["resnet20@1x28x28"]
    assert own != profile.calibration
    config = SearchConfig(model="resnet20", data="mnist5k", space="resnet_cifar")
    assert check(config).costs.calibration == own  # the zoo model by name: its own calibration
    module = create_model("resnet20", in_channels=1, num_classes=10)
    assert check(config, model=module).costs.calibration == profile.calibration
    named = SearchConfig(model="resnet20", data="mnist5k", space="resnet_cifar", calibration="resnet20")
    assert check(named, model=module).costs.calibration == own
    with pytest.raises(SpaceError, match="space: a model given as an nn.Module needs a search space"):
        check(SearchConfig(model="resnet20", data="mnist5k"), model=module)
    with pytest.raises(ProfileError, match="calibration: 'lenet5' is not one of"):
        check(SearchConfig(model="resnet20", data="mnist5k", calibration="lenet5"))
    costs = check(config).costs
    assert isinstance(costs, CostModel) and costs.space.graph.input_shape == (1, 28, 28)


# -- progress ------------------------------------------------------------------------------------------------


def test_progress_off_a_terminal_is_a_log_line_every_tenth(caplog):
    caplog.set_level(logging.INFO, logger="autocompress.progress")
    bar = progress_bar(total=1000, desc="steps", unit="step", mininterval=0)  # every update reaches display
    assert isinstance(bar, LoggedProgress)  # pytest's captured stderr is not a terminal
    for _ in range(1000):
        bar.update(1)
    bar.close()
    lines = [r.getMessage() for r in caplog.records]
    assert [line.split()[1] for line in lines] == [f"{pct}%" for pct in range(10, 101, 10)]
    assert lines[-1].startswith("steps: 100%") and "1000/1000" in lines[-1]
    caplog.clear()
    quiet = progress_bar(total=10, enabled=False)
    quiet.update(10)
    quiet.close()
    assert not caplog.records


def test_profile_progress_clock_starts_at_the_first_step_done():
    """A validation exports its candidates for minutes before it times one: that set-up is not its rate."""
    from autocompress.cli_profile import _bar

    bar, update = _bar("timing whole models")
    time.sleep(0.3)  # the set-up
    update(1, 100)
    update(2, 100)
    assert bar.n == 2 and bar.total == 100 and bar.format_dict["elapsed"] < 0.3
    bar.close()


def test_export_refuses_a_bad_device_before_anything_is_written(searched, tmp_path, capsys):
    code = cli.main(["export", str(searched), "--out", str(tmp_path / "export"), "--device", "gpu", "--quiet"])
    assert code == 2 and "error: device: 'gpu' is not a device" in capsys.readouterr().err
    assert not (tmp_path / "export").exists()
