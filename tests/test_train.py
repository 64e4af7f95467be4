"""autocompress.train: real training on real digits (mnist5k), kept small for 2 CPU cores."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from autocompress.compress import ActFakeQuant, materialize, quantize_layer
from autocompress.graph import ModelGraph
from autocompress.space import SearchSpace
from autocompress.train import (
    EvalResult,
    Evaluator,
    FitConfig,
    distillation_loss,
    evaluate,
    fit,
    lr_at,
    num_steps,
    recalibrate_bn,
)
from tests.conftest import tiny_bn_cnn


def _bns(model: nn.Module) -> list[nn.BatchNorm2d]:
    return [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]


# -- train_base / evaluate ---------------------------------------------------------------------------

def test_train_base_reaches_90_percent_on_mnist5k(trained_mnist_cnn):
    model, metrics = trained_mnist_cnn
    assert metrics["val_accuracy"] >= 0.90, metrics
    assert metrics["test_accuracy"] >= 0.88, metrics
    assert metrics["steps"] == 110 and metrics["epochs"] == pytest.approx(2.0)  # ceil(3500 / 64) = 55 per epoch
    assert math.isfinite(metrics["train_loss"]) and not metrics["diverged"]
    assert not model.training


def test_evaluate_is_deterministic_restores_mode_and_stops_early(trained_mnist_cnn, mnist5k):
    model = copy.deepcopy(trained_mnist_cnn[0]).train()
    val = mnist5k.loader("val", batch_size=100)
    first = evaluate(model, val)
    assert model.training  # mode restored
    assert evaluate(model, val) == first
    assert 0.0 <= first <= 1.0
    # the same as counting by hand
    with torch.no_grad():
        model.eval()
        hits = [int((model(x).argmax(1) == y).sum()) for x, y in val]
    assert first == sum(hits) / 500
    assert evaluate(model, val, max_batches=1) == hits[0] / 100


def test_evaluate_rejects_an_empty_loader(trained_mnist_cnn):
    with pytest.raises(ValueError, match="no samples"):
        evaluate(trained_mnist_cnn[0], [])


# -- distillation loss ---------------------------------------------------------------------------------

def test_distillation_loss_is_cross_entropy_when_alpha_is_zero():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(8, 10, generator=g), torch.randn(8, 10, generator=g)
    y = torch.randint(0, 10, (8,), generator=g)
    torch.testing.assert_close(distillation_loss(s, t, y, alpha=0.0), F.cross_entropy(s, y))


def test_distillation_loss_matches_hinton_formula_and_is_minimal_at_the_teacher():
    g = torch.Generator().manual_seed(1)
    s, t = torch.randn(8, 10, generator=g), torch.randn(8, 10, generator=g)
    y = torch.randint(0, 10, (8,), generator=g)
    temp, alpha = 3.0, 0.7
    p_t = F.softmax(t / temp, dim=1)
    kl = (p_t * (p_t.log() - F.log_softmax(s / temp, dim=1))).sum(1).mean()
    expected = alpha * temp**2 * kl + (1 - alpha) * F.cross_entropy(s, y)
    torch.testing.assert_close(distillation_loss(s, t, y, temperature=temp, alpha=alpha), expected)

    # the soft term vanishes (with zero gradient) when the student copies the teacher
    student = t.clone().requires_grad_(True)
    loss = distillation_loss(student, t, None, alpha=1.0)
    loss.backward()
    assert abs(loss.item()) < 1e-6
    assert float(student.grad.abs().max()) < 1e-6
    assert float(distillation_loss(s, t, None, alpha=1.0)) > 1e-3
    # and the teacher gets no gradient
    teacher = t.clone().requires_grad_(True)
    distillation_loss(s.clone().requires_grad_(True), teacher, y).backward()
    assert teacher.grad is None


def test_distillation_loss_validates_arguments():
    s = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="alpha"):
        distillation_loss(s, s, None, alpha=1.5)
    with pytest.raises(ValueError, match="temperature"):
        distillation_loss(s, s, None, temperature=0.0)
    with pytest.raises(ValueError, match="targets"):
        distillation_loss(s, s, None, alpha=0.5)


# -- BN recalibration ---------------------------------------------------------------------------------

@pytest.mark.parametrize("start_in_train_mode", [False, True])
def test_recalibrate_bn_restores_reset_statistics_and_modes(trained_mnist_cnn, mnist5k, start_in_train_mode):
    trained = trained_mnist_cnn[0]
    model = copy.deepcopy(trained)
    for bn in _bns(model):
        bn.reset_running_stats()
    model.train(start_in_train_mode)
    val = mnist5k.loader("val", batch_size=250)
    broken = evaluate(model, val)
    recal = mnist5k.loader("train", batch_size=128, shuffle=True, augment=False, seed=0)
    recalibrate_bn(model, recal, num_batches=10)

    assert model.training == start_in_train_mode
    assert all(m.training == start_in_train_mode for m in model.modules())
    for bn, ref in zip(_bns(model), _bns(trained), strict=True):
        assert bn.momentum == ref.momentum == 0.1  # restored
        assert int(bn.num_batches_tracked) == 10  # cumulative average over exactly 10 batches
        assert not torch.allclose(bn.running_mean, torch.zeros_like(bn.running_mean))
        assert not torch.allclose(bn.running_var, torch.ones_like(bn.running_var))
        torch.testing.assert_close(bn.running_mean, ref.running_mean, atol=0.15, rtol=0.15)
    fixed = evaluate(model, val)
    assert fixed > broken + 0.2 and fixed >= evaluate(trained, val) - 0.02, (broken, fixed)


def test_recalibrate_bn_calibrates_fake_quant_observers_and_keeps_dropout_off(trained_mnist_cnn, mnist5k):
    model = copy.deepcopy(trained_mnist_cnn[0])
    model.insert(9, nn.Dropout(p=0.99))  # would wreck the statistics if it were on
    quantize_layer(model[4], 8, 8)
    model.eval()
    observer = model[4].input_quant
    assert isinstance(observer, ActFakeQuant) and not bool(observer.observed)
    recalibrate_bn(model, mnist5k.loader("train", batch_size=128, augment=False), num_batches=3)
    assert bool(observer.observed) and float(observer.max_val) > 0
    assert not model.training and not observer.training
    assert evaluate(model, mnist5k.loader("val", batch_size=250)) > 0.85


# -- fit ---------------------------------------------------------------------------------------------------

def test_fit_config_is_plain_json_and_validated():
    config = FitConfig(epochs=0.25, max_steps=7)
    assert json.loads(json.dumps(config.to_dict())) == config.to_dict()
    assert num_steps(config, 55) == 7
    assert num_steps(FitConfig(epochs=0.25), 55) == 14  # ceil(13.75)
    assert num_steps(FitConfig(epochs=0.0), 55) == 0
    with pytest.raises(ValueError, match="FitConfig.schedule"):
        FitConfig(schedule="step")
    with pytest.raises(ValueError, match="FitConfig.epochs"):
        FitConfig(epochs=-1)


def test_learning_rate_warms_up_then_decays_smoothly_per_step():
    config = FitConfig(lr=0.1, warmup_steps=2)
    lrs = [lr_at(step, 10, config) for step in range(10)]
    assert lrs[:3] == pytest.approx([0.05, 0.1, 0.1])
    assert all(a > b for a, b in zip(lrs[2:], lrs[3:], strict=False)) and lrs[-1] > 0
    assert [lr_at(s, 10, FitConfig(lr=0.1, schedule="constant")) for s in range(10)] == [0.1] * 10


def test_fit_is_seeded_and_leaves_the_global_rng_alone(mnist5k):
    config = FitConfig(max_steps=6, lr=0.05, progress=False, seed=3)
    runs = []
    for _ in range(2):
        model = tiny_bn_cnn(seed=1)
        loader = mnist5k.loader("train", batch_size=64, seed=5, limit=640)
        rng_before = torch.get_rng_state()
        history = fit(model, loader, config, val_loader=mnist5k.loader("val", batch_size=250))
        assert torch.equal(torch.get_rng_state(), rng_before)
        assert history["steps"] == 6 and history["epochs"] == pytest.approx(0.6)
        assert {"train_loss", "train_accuracy", "seconds", "val_accuracy"} <= set(history)
        runs.append(model.state_dict())
    for key in runs[0]:
        assert torch.equal(runs[0][key], runs[1][key]), key
    assert not torch.equal(runs[0]["0.weight"], tiny_bn_cnn(seed=1).state_dict()["0.weight"])


def test_fit_with_zero_steps_leaves_the_model_unchanged(trained_mnist_cnn, mnist5k):
    model = copy.deepcopy(trained_mnist_cnn[0])
    history = fit(model, mnist5k.loader("train"), FitConfig(max_steps=0, progress=False),
                  teacher=trained_mnist_cnn[0])
    assert history["steps"] == 0
    for a, b in zip(model.state_dict().values(), trained_mnist_cnn[0].state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_fit_distills_at_a_student_resolution_while_the_teacher_sees_the_native_one(trained_mnist_cnn, mnist5k):
    teacher = copy.deepcopy(trained_mnist_cnn[0])
    student = copy.deepcopy(trained_mnist_cnn[0]).train()
    seen = {"teacher": set(), "student": set()}
    teacher.register_forward_pre_hook(lambda m, a: seen["teacher"].add(tuple(a[0].shape[-2:])))
    student.register_forward_pre_hook(lambda m, a: seen["student"].add(tuple(a[0].shape[-2:])))
    history = fit(student, mnist5k.loader("train", batch_size=64, limit=128), FitConfig(max_steps=2, progress=False),
                  teacher=teacher, student_resolution=20)
    assert history["steps"] == 2
    assert seen == {"teacher": {(28, 28)}, "student": {(20, 20)}}
    assert student.training and not teacher.training


# -- Evaluator ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def space_for(trained_mnist_cnn):
    graph = ModelGraph.from_model(trained_mnist_cnn[0], (1, 28, 28))
    return SearchSpace.from_dict(graph, {"name": "test", "defaults": {"keep": [0.5, 1.0]}})


def test_evaluator_on_the_identity_candidate_matches_the_teacher(trained_mnist_cnn, mnist5k, space_for):
    teacher = trained_mnist_cnn[0]
    evaluator = Evaluator(teacher=teacher, data=mnist5k, fit=FitConfig(max_steps=0, progress=False))
    same = materialize(teacher, space_for.identity(), space_for)
    result = evaluator(same)
    assert isinstance(result, EvalResult)
    assert (result.split, result.fine_tune_steps, result.fidelity) == ("val", 0, "proxy")
    reference = evaluate(teacher, mnist5k.loader("val"))
    assert abs(result.accuracy - reference) <= 0.005, (result.accuracy, reference)
    assert json.loads(json.dumps(result.to_dict()))["accuracy"] == result.accuracy


def test_kd_fine_tuning_improves_a_pruned_model_and_is_seeded(trained_mnist_cnn, mnist5k, space_for):
    teacher = trained_mnist_cnn[0]
    pruned = materialize(teacher, space_for.uniform(keep=0.5), space_for)
    assert pruned[0].out_channels == 8 and pruned[4].out_channels == 16
    common = {"teacher": teacher, "data": mnist5k, "train_limit": 1024, "eval_limit": 500}
    untuned = Evaluator(fit=FitConfig(max_steps=0, progress=False), **common)(copy.deepcopy(pruned))
    tune = Evaluator(fit=FitConfig(epochs=3.0, max_steps=24, lr=0.02, progress=False), fidelity="full", **common)
    tuned = tune(copy.deepcopy(pruned))
    assert (tuned.fine_tune_steps, tuned.fidelity) == (24, "full")
    assert tuned.accuracy > untuned.accuracy + 0.01, (untuned, tuned)
    assert tune(copy.deepcopy(pruned)).accuracy == tuned.accuracy  # same model + seed -> same accuracy


def test_evaluator_runs_the_student_at_a_scaled_resolution(trained_mnist_cnn, mnist5k):
    teacher = trained_mnist_cnn[0]
    student = copy.deepcopy(teacher)
    sizes = set()
    student.register_forward_pre_hook(lambda m, a: sizes.add(tuple(a[0].shape[-2:])))
    evaluator = Evaluator(teacher=teacher, data=mnist5k, fit=FitConfig(max_steps=2, progress=False),
                          recalibrate_batches=2, train_limit=256, eval_limit=200, batch_size=64)
    result = evaluator(student, resolution=24)
    assert sizes == {(24, 24)}
    assert result.fine_tune_steps == 2 and 0.5 < result.accuracy <= 1.0
    assert evaluator.get_params()["fit"]["max_steps"] == 2


def test_evaluator_validates_its_settings(trained_mnist_cnn, mnist5k):
    with pytest.raises(ValueError, match="eval_split"):
        Evaluator(teacher=trained_mnist_cnn[0], data=mnist5k, fit=FitConfig(), eval_split="holdout")
    with pytest.raises(TypeError, match="FitConfig"):
        Evaluator(teacher=trained_mnist_cnn[0], data=mnist5k, fit={"epochs": 1})
