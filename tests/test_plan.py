"""CompressionPlan: JSON -> the compressed model's exact structure, with no data and no training.

Every test compresses a model whose weights differ from the plan's throw-away
ones (so pruning keeps other channels, SVD finds other factors, masks fall
elsewhere), saves that model's state dict, and checks that the plan rebuilds a
module that takes the state dict strictly and computes the same outputs.
"""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from autocompress.compress import CompressionPlan, PlanError, materialize
from autocompress.graph import ModelGraph
from autocompress.models import create_model, list_models, model_info
from autocompress.space import SearchSpace
from tests.helpers import input_shape_for, open_space


def _trained_like(name: str, **kwargs) -> nn.Module:
    """A zoo model with weights and BatchNorm statistics unlike a fresh build's."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1234)
        model = create_model(name, **kwargs)
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.data.uniform_(0.2, 1.5)
    return model.eval()


def _compressed(model: nn.Module, candidate, space: SearchSpace) -> nn.Module:
    """Materialize and run a few training steps' forwards, so observers and BatchNorm hold real values."""
    small = materialize(model, candidate, space)
    h, w = space.input_resolution(candidate)
    small.train()
    with torch.no_grad():
        small(torch.randn(8, space.graph.input_shape[0], h, w, generator=torch.Generator().manual_seed(0)))
    return small.eval()


def _assert_plan_rebuilds(plan: CompressionPlan, small: nn.Module, space: SearchSpace, tmp_path) -> nn.Module:
    path = plan.save(tmp_path / "plan.json")
    loaded = CompressionPlan.load(path)
    assert loaded.model_dump() == plan.model_dump()
    rebuilt = loaded.build()
    assert not rebuilt.training
    assert [(n, type(m).__name__) for n, m in rebuilt.named_modules()] == \
        [(n, type(m).__name__) for n, m in small.named_modules()]
    state = small.state_dict()
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {k: v.shape for k, v in state.items()}
    rebuilt.load_state_dict(state)  # strict: every parameter and buffer, nothing left over
    h, w = space.input_resolution(plan.candidate)
    x = torch.randn(4, space.graph.input_shape[0], h, w, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x), small(x), atol=1e-5, rtol=1e-5)
    return rebuilt


def _zoo_setup(name: str):
    shape = input_shape_for(name)
    kwargs = {"in_channels": shape[0], "num_classes": 10}
    if "input_size" in model_info(name).default_kwargs:
        kwargs["input_size"] = shape[1]
    model = _trained_like(name, **kwargs)
    space = SearchSpace.from_yaml(ModelGraph.from_model(model, shape), model_info(name).family)
    return model, kwargs, shape, space


@pytest.mark.parametrize("name", list_models())
def test_plan_rebuilds_every_zoo_model(name, tmp_path):
    """Registry-driven: the most compressed uniform point of each model's family space."""
    model, kwargs, shape, space = _zoo_setup(name)
    scaling = {"phi": min(space.scaling_choices["phi"])} if "phi" in space.scaling_choices else {}
    candidate = space.uniform(keep=0.0, w_bits=2, a_bits=2, rank=0.0, sparsity=0.9, **scaling)
    small = _compressed(model, candidate, space)
    plan = CompressionPlan.create(model=name, model_kwargs=kwargs, input_shape=shape, space=space,
                                  candidate=candidate)
    _assert_plan_rebuilds(plan, small, space, tmp_path)


def test_every_transform_and_compound_scaling_replay(tmp_path):
    """int8 fake quantization (weights and activation observers), low rank, sparsity masks, pruning,
    and compound scaling (depth, width and a lower input resolution) in one ResNet-20."""
    model = _trained_like("resnet20", in_channels=3, num_classes=10)
    graph = ModelGraph.from_model(model, (3, 32, 32))
    space = SearchSpace.from_dict(graph, {
        "name": "everything", "defaults": {"keep": [0.5, 1.0], "w_bits": [8, 32], "a_bits": [8, 32],
                                           "rank": [0.5, 1.0], "sparsity": [0.0, 0.5]},
        "scaling": {"mode": "compound", "phi": [-3.0, 0.0]}})
    candidate = space.uniform(keep=0.5, w_bits=8, a_bits=8, rank=0.5, sparsity=0.5, phi=-3.0)
    assert candidate.resolution < 1 and candidate.depth < 1 and candidate.width < 1
    small = _compressed(model, candidate, space)
    plan = CompressionPlan.create(model="resnet20", model_kwargs={"in_channels": 3, "num_classes": 10},
                                  input_shape=(3, 32, 32), space=space, candidate=candidate)
    rng_before = torch.get_rng_state()
    rebuilt = _assert_plan_rebuilds(plan, small, space, tmp_path)
    assert torch.equal(torch.get_rng_state(), rng_before)  # the throw-away weights leave the caller's RNG alone
    state = rebuilt.state_dict()
    assert any(k.endswith("input_quant.observed") and bool(v) for k, v in state.items())
    assert any(k.endswith("parametrizations.weight.0.mask") for k in state)
    assert any(type(m).__name__ == "LowRank" for m in rebuilt.modules())
    assert sum(isinstance(m, nn.Identity) for m in rebuilt.modules()) > 0  # blocks dropped by depth scaling
    # the values come from the state dict, not the plan: before loading, the same structure computes otherwise
    fresh = CompressionPlan.load(tmp_path / "plan.json").build()
    x = torch.randn(2, 3, *space.input_resolution(candidate))
    with torch.no_grad():
        assert not torch.allclose(fresh(x), small(x), atol=1e-3)
    # the spec travels as data: the plan rebuilds without the space file it came from
    assert json.loads((tmp_path / "plan.json").read_text())["space"]["name"] == "everything"


def test_a_users_module_callable_builds_from_the_plan(tmp_path):
    from tests.conftest import tiny_bn_cnn

    model = tiny_bn_cnn(in_channels=1, num_classes=10, seed=5).eval()
    space = open_space(ModelGraph.from_model(model, (1, 28, 28)), keep=[0.5], w_bits=[4], a_bits=[8], sparsity=[0.5])
    candidate = space.sample(0)
    small = _compressed(model, candidate, space)
    plan = CompressionPlan.create(model="tests.conftest:tiny_bn_cnn", model_kwargs={"in_channels": 1, "num_classes": 10},
                                  input_shape=(1, 28, 28), space=space, candidate=candidate)
    _assert_plan_rebuilds(plan, small, space, tmp_path)


# -- bad files: the error names the file and the field ------------------------------------------------


@pytest.fixture
def plan_data(tmp_path):
    model, kwargs, shape, space = _zoo_setup("lenet5")
    plan = CompressionPlan.create(model="lenet5", model_kwargs=kwargs, input_shape=shape, space=space,
                                  candidate=space.sample(0))
    return json.loads(plan.save(tmp_path / "plan.json").read_text())


@pytest.mark.parametrize(("change", "message"), [
    (lambda d: d.update(schema_version=9), r"field schema_version: expected 1, got 9"),
    (lambda d: d.update(input_shape=[1, 0, 28]), r"field input_shape\[1\]"),
    (lambda d: d["space"]["defaults"].update(keep=[1.5]), r"field space.defaults.keep"),
    (lambda d: d["candidate"]["layers"]["features.0"].update(colour=3), r"field candidate: .*unknown dimension"),
    (lambda d: d["builder"].pop("name"), r"field builder.name: Field required"),
    (lambda d: d.update(extra=1), r"field extra: Extra inputs are not permitted"),
])
def test_bad_plan_files_name_the_file_and_field(plan_data, tmp_path, change, message):
    change(plan_data)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(plan_data))
    with pytest.raises(PlanError, match=message) as err:
        CompressionPlan.load(path)
    assert str(err.value).startswith(str(path))


def test_plans_that_do_not_build_name_the_file_and_field(plan_data, tmp_path):
    path = tmp_path / "plan.json"
    plan_data["builder"]["name"] = "no_such_model"
    path.write_text(json.dumps(plan_data))
    with pytest.raises(PlanError, match=rf"{path}: field builder: unknown model 'no_such_model'"):
        CompressionPlan.load(path).build()
    plan_data["builder"]["name"] = "lenet5"
    plan_data["candidate"]["layers"]["features.0"]["w_bits"] = 3  # not a choice of the space
    path.write_text(json.dumps(plan_data))
    with pytest.raises(PlanError, match=rf"{path}: field candidate: .*features.0.w_bits: 3 is not one of"):
        CompressionPlan.load(path).build()
    with pytest.raises(PlanError, match="no such plan file"):
        CompressionPlan.load(tmp_path / "missing.json")
    (tmp_path / "cut.json").write_text(path.read_text()[:50])
    with pytest.raises(PlanError, match="not valid JSON"):
        CompressionPlan.load(tmp_path / "cut.json")
