"""``--device``: parsed and checked up front, and every trained module handed back on the CPU.

Training runs on the device; measuring, counting, materializing, ONNX export and
saving run on the CPU. These tests train on every device this machine has (the
CPU here; a CUDA GPU too where one is available) and check where the modules end up.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from autocompress import cli
from autocompress.base_model import trained_base_model
from autocompress.search import SearchConfig, check
from autocompress.search.api import ConfigError
from autocompress.train import (
    DeviceError,
    Evaluator,
    FitConfig,
    evaluate,
    fit,
    recalibrate_bn,
    resolve_device,
    train_base,
)
from tests.conftest import tiny_bn_cnn

#: where this machine can train: handing back on the CPU is checked after training on each
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
FAST = FitConfig(max_steps=3, lr=0.02, progress=False)


def _placement(module: nn.Module) -> set[str]:
    """The device types of every parameter and buffer."""
    return {t.device.type for t in (*module.parameters(), *module.buffers())}


# -- parsing and the fail-fast check ---------------------------------------------------------------------------

@pytest.mark.parametrize("text", ["cpu", "cpu:0", torch.device("cpu")])
def test_cpu_resolves(text):
    assert resolve_device(text) == torch.device("cpu")


@pytest.mark.parametrize(("text", "message"), [
    ("gpu", "device: 'gpu' is not a device; expected 'cpu', 'cuda' or 'cuda:N'"),
    ("cuda:x", "device: 'cuda:x' is not a device"),
    ("", "device: '' is not a device"),
    (0, "device: 0 is not a device"),  # torch.device(0) would silently mean cuda:0
    ("mps", "device: 'mps' is not supported"),
    ("cpu:1", "device: 'cpu:1' is not supported"),
])
def test_a_malformed_device_is_refused_with_the_field_named(text, message):
    with pytest.raises(DeviceError, match=message):
        resolve_device(text)


def test_check_refuses_a_malformed_device_in_seconds():
    started = time.perf_counter()
    with pytest.raises(ConfigError, match="^device: 'gpu:0' is not a device"):
        check(SearchConfig(model="lenet5", data="mnist5k", device="gpu:0"))
    assert time.perf_counter() - started < 5


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
@pytest.mark.parametrize("text", ["cuda", "cuda:1"])
def test_check_refuses_cuda_where_there_is_none(mnist5k, text):
    with pytest.raises(ConfigError, match=rf"^device: '{text}' is not available \(torch.cuda.is_available\(\) is False"):
        check(SearchConfig(model="lenet5", data="mnist5k", device=text))
    with pytest.raises(DeviceError, match="is not available"):  # and straight from the library
        Evaluator(teacher=tiny_bn_cnn(), data=mnist5k, fit=FAST, device=text)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_resolves_to_an_index_where_there_is_one():
    assert resolve_device("cuda") == torch.device("cuda", torch.cuda.current_device())
    with pytest.raises(DeviceError, match="CUDA device"):
        resolve_device(f"cuda:{torch.cuda.device_count()}")


def test_the_cli_refuses_a_bad_device_before_training(tmp_path, capsys):
    experiment = tmp_path / "exp.yaml"
    experiment.write_text(yaml.safe_dump({"model": "lenet5", "data": "mnist5k", "device": "mps",
                                          "out": str(tmp_path / "run"), "cache_dir": str(tmp_path / "cache")}))
    assert cli.main(["search", str(experiment), "--quiet"]) == 2
    assert f"error: {experiment}: device: 'mps' is not supported" in capsys.readouterr().err  # set by the file
    assert cli.main(["search", str(experiment), "--device", "gpu", "--quiet"]) == 2
    assert "error: device: 'gpu' is not a device" in capsys.readouterr().err  # set by the flag
    assert cli.main(["demo", "--device", "gpu", "--out", str(tmp_path / "demo"),
                     "--cache-dir", str(tmp_path / "cache")]) == 2
    assert "error: device: 'gpu' is not a device" in capsys.readouterr().err
    assert not (tmp_path / "cache").exists()  # refused before any data was decoded or reference trained


# -- every trained module comes back on the CPU ---------------------------------------------------------------

def _fit(student, teacher, data, device):
    fit(student, data.loader("train", batch_size=64, limit=256), FAST, teacher=teacher, device=device)


def _recalibrate(student, teacher, data, device):
    recalibrate_bn(student, data.loader("train", batch_size=64, limit=128), num_batches=2, device=device)


def _evaluate(student, teacher, data, device):
    evaluate(student, data.loader("val", batch_size=256), device=device)


def _train_base(student, teacher, data, device):
    train_base(student, data, FAST, device=device, batch_size=64)


def _evaluator(student, teacher, data, device):
    Evaluator(teacher=teacher, data=data, fit=FAST, train_limit=256, eval_limit=200, recalibrate_batches=2,
              batch_size=64, device=device)(student)


HANDBACKS: dict[str, Callable] = {"fit": _fit, "recalibrate_bn": _recalibrate, "evaluate": _evaluate,
                                  "train_base": _train_base, "Evaluator": _evaluator}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", list(HANDBACKS))
def test_every_trained_module_is_handed_back_on_the_cpu(trained_mnist_cnn, mnist5k, name, device):
    teacher = copy.deepcopy(trained_mnist_cnn[0])
    student = copy.deepcopy(teacher).train()
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    HANDBACKS[name](student, teacher, mnist5k, device)
    assert _placement(student) == {"cpu"} and _placement(teacher) == {"cpu"}
    assert student.training  # and in the mode it came in
    for key, value in teacher.state_dict().items():  # the teacher is read, never trained
        torch.testing.assert_close(value, before[key], rtol=0, atol=0)


@pytest.mark.parametrize("device", DEVICES)
def test_the_evaluator_trains_on_its_device_and_hands_back_a_working_cpu_model(trained_mnist_cnn, mnist5k, device):
    teacher = trained_mnist_cnn[0]
    student = copy.deepcopy(teacher)
    seen: set[str] = set()
    student.register_forward_pre_hook(lambda m, args: seen.add(args[0].device.type))
    evaluator = Evaluator(teacher=teacher, data=mnist5k, fit=FAST, train_limit=256, eval_limit=200, device=device)
    result = evaluator(student)
    assert seen == {torch.device(device).type}  # recalibration, fine-tuning and evaluation all ran there
    assert result.fine_tune_steps == evaluator.fine_tune_steps() > 0 and result.accuracy > 0.8
    assert evaluator.get_params()["device"] == device
    assert _placement(student) == {"cpu"} and _placement(teacher) == {"cpu"}
    x = next(iter(mnist5k.loader("val", batch_size=8)))[0]
    assert student.eval()(x).device.type == "cpu"  # usable where it is measured and exported
    cpu_accuracy = evaluate(student, mnist5k.loader("val", batch_size=256, limit=200))
    assert cpu_accuracy == pytest.approx(result.accuracy, abs=0.01)  # the same model, evaluated on the CPU


def test_the_reference_cache_finds_a_recipe_however_its_numbers_were_written(mnist5k, tmp_path):
    """``--base-epochs 2`` (a float from the command line) and ``base_epochs: 2`` (an int in Python or YAML) are
    one recipe: two workers given either must share the cached reference, not each train and save their own."""
    first = FitConfig(epochs=1, lr=1, max_steps=2, progress=False)
    _, trained = trained_base_model("lenet5", mnist5k, fit=first, cache_dir=tmp_path)
    again = FitConfig(epochs=1.0, lr=1.0, max_steps=2, progress=False)
    _, cached = trained_base_model("lenet5", mnist5k, fit=again, cache_dir=tmp_path)
    assert trained["source"] == "trained" and cached["source"] == "cache" and cached["path"] == trained["path"]
    assert first == again and isinstance(first.epochs, float) and isinstance(first.lr, float)
    assert sorted(p.name for p in tmp_path.iterdir()) == [Path(trained["path"]).name]  # no temporary file left


@pytest.mark.parametrize("device", DEVICES)
def test_the_reference_cache_is_saved_from_the_cpu_and_shared_across_devices(mnist5k, tmp_path, device):
    recipe = FitConfig(max_steps=2, progress=False)
    model, info = trained_base_model("lenet5", mnist5k, fit=recipe, cache_dir=tmp_path, device=device)
    assert info["source"] == "trained" and _placement(model) == {"cpu"}
    saved = torch.load(info["path"], weights_only=True)  # no map_location: tensors load where they were saved
    assert {t.device.type for t in saved.values()} == {"cpu"}
    other = "cpu" if device != "cpu" else "cpu:0"  # another spelling (or device) finds the same cache entry
    again, info_again = trained_base_model("lenet5", mnist5k, fit=recipe, cache_dir=tmp_path, device=other)
    assert info_again["source"] == "cache" and info_again["path"] == info["path"]
    assert info_again["val_accuracy"] == pytest.approx(info["val_accuracy"], abs=0.01)
