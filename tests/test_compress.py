"""Transforms and materialize on real zoo models and awkward user models."""

import numpy as np
import pytest
import torch
from torch import nn

from autocompress.compress import (
    ActFakeQuant,
    LowRank,
    WeightFakeQuant,
    factorize_conv,
    factorize_linear,
    layer_bits,
    layer_sparsity,
    materialize,
)
from autocompress.counting import count_model
from autocompress.graph import ModelGraph
from autocompress.models import create_model, list_models
from autocompress.space import SearchSpace
from tests.helpers import input_shape_for, open_space, shipped_space, zoo_model
from tests.zoo_models import TOYS


def _conv_params(model: nn.Module) -> int:
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Conv2d))


@pytest.mark.parametrize("name", list_models())
def test_identity_candidate_reproduces_zoo_model(name):
    model, graph = zoo_model(name)
    space = shipped_space(name, graph)
    x = torch.randn(4, *input_shape_for(name, graph.input_shape[0]))
    same = materialize(model, space.identity(), space).eval()
    torch.testing.assert_close(same(x), model(x), atol=1e-5, rtol=0)


@pytest.mark.parametrize("toy", sorted(TOYS))
def test_identity_and_random_candidates_on_toys(toy):
    model = TOYS[toy]().eval()
    graph = ModelGraph.from_model(model, (3, 32, 32))
    space = SearchSpace.from_yaml(graph, "generic")
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(materialize(model, space.identity(), space).eval()(x), model(x), atol=1e-5, rtol=0)
    for seed in range(3):
        out = materialize(model, space.sample(seed), space)(x)
        assert out.shape == (2, 10) and torch.isfinite(out).all()


@pytest.mark.parametrize("name", ["resnet20", "mobilenetv2_cifar"])
def test_uniform_half_width_removes_channels(name):
    model, graph = zoo_model(name)
    space = open_space(graph, keep=[0.5, 1.0])
    half = space.uniform(keep=0.5)
    pruned = materialize(model, half, space)
    # channels are physically gone: every prunable group kept exactly half
    for group in graph.prunable_groups:
        for member in group.out_units:
            layer = pruned.get_submodule(member)
            assert layer.weight.shape[0] == group.channels // 2, member
    ratio_params = _conv_params(pruned) / _conv_params(model)
    conv_macs = [sum(layer.macs for layer in count_model(m, (3, 32, 32)).layers
                     if isinstance(m.get_submodule(layer.name), nn.Conv2d)) for m in (model, pruned)]
    assert 0.25 <= ratio_params <= 0.35
    assert 0.25 <= conv_macs[1] / conv_macs[0] <= 0.35
    x = torch.randn(2, 3, 32, 32, requires_grad=False)
    pruned.train()
    loss = pruned(x).logsumexp(1).mean()
    loss.backward()
    assert all(p.grad is not None for p in pruned.parameters() if p.requires_grad)


def test_shipped_space_pins_stem_but_still_halves_resnet20():
    model, graph = zoo_model("resnet20")
    space = shipped_space("resnet20", graph)
    pruned = materialize(model, space.uniform(keep=0.5), space)
    assert pruned.conv1.weight.shape[0] == 16  # pinned by the @first override
    assert pruned.layer3[1].conv1.weight.shape[0] == 32
    assert 0.25 <= _conv_params(pruned) / _conv_params(model) <= 0.35


def test_user_model_with_concat_branches_from_module_callable():
    model = create_model("tests.zoo_models:squeezenet_tiny", num_classes=10, in_channels=3).eval()
    graph = ModelGraph.from_model(model, (3, 32, 32))
    space = SearchSpace.from_yaml(graph, "generic")
    pruned = materialize(model, space.uniform(keep=0.5), space)
    x = torch.randn(2, 3, 32, 32)
    assert pruned(x).shape == (2, 10)
    assert _conv_params(pruned) < 0.6 * _conv_params(model)


def test_full_rank_factorization_reproduces_layers():
    torch.manual_seed(0)
    conv = nn.Conv2d(16, 24, 3, stride=2, padding=1)
    full = factorize_conv(conv, min(24, 16 * 9))
    x = torch.randn(2, 16, 9, 9)
    torch.testing.assert_close(full(x), conv(x), atol=1e-4, rtol=0)
    linear = nn.Linear(40, 30)
    z = torch.randn(5, 40)
    torch.testing.assert_close(factorize_linear(linear, 30)(z), linear(z), atol=1e-4, rtol=0)


def test_rank_quarter_cuts_layer_macs_as_expected():
    model, graph = zoo_model("resnet20")
    space = open_space(graph, rank=[0.25, 1.0])
    candidate = space.uniform(rank=0.25)
    built = materialize(model, candidate, space)
    layer = built.get_submodule("layer3.1.conv1")
    assert isinstance(layer, LowRank) and layer.rank == 16  # 0.25 x min(64, 64*9)
    # k x k conv to r filters + 1 x 1 back: r*(C_in*9 + C_out) vs C_out*C_in*9 MACs per position
    cfg = {c.name: c for c in space.layer_configs(candidate)}["layer3.1.conv1"]
    assert cfg.dense_macs == 16 * (64 * 9 + 64) * 8 * 8
    assert cfg.dense_macs / (64 * 64 * 9 * 64) == pytest.approx(16 * (64 * 9 + 64) / (64 * 64 * 9))
    x = torch.randn(1, 64, 8, 8)
    assert layer(x).shape == (1, 64, 8, 8)


def test_weight_fake_quant_grid_and_straight_through_gradient():
    w = torch.randn(8, 4, 3, 3, requires_grad=True)
    for bits in (2, 4, 8):
        q = WeightFakeQuant(bits)(w)
        levels = max(len(torch.unique(q[c].detach())) for c in range(8))
        assert levels <= 2 ** bits - 1
        q.sum().backward()
        torch.testing.assert_close(w.grad, torch.ones_like(w))
        w.grad = None
    q8 = WeightFakeQuant(8)(w).detach()
    assert (q8 - w.detach()).abs().max() <= w.detach().abs().amax() / 127 / 2 + 1e-6


def test_activation_fake_quant_observes_then_freezes():
    aq = ActFakeQuant(4)
    aq.train()
    x = torch.linspace(-1, 3, 1000)
    aq(x)
    assert float(aq.min_val) == pytest.approx(-1) and float(aq.max_val) == pytest.approx(3)
    aq.eval()
    y = aq(torch.linspace(-5, 5, 1000))
    step = 4 / 15  # the range is clipped to the observed one, up to the zero-point's rounding
    assert y.min() >= -1 - step and y.max() <= 3 + step
    assert len(torch.unique(y)) <= 16


def test_sparsity_masks_smallest_weights_and_survives_training():
    model, graph = zoo_model("resnet20")
    space = open_space(graph, sparsity=[0.0, 0.5])
    sparse = materialize(model, space.uniform(sparsity=0.5), space)
    layer = sparse.get_submodule("layer2.1.conv2")
    assert layer_sparsity(layer) == pytest.approx(0.5, abs=1e-3)
    kept = layer.weight.detach().abs()
    original = model.get_submodule("layer2.1.conv2").weight.detach().abs()
    assert kept[kept > 0].min() >= original[kept == 0].max()
    opt = torch.optim.SGD(sparse.parameters(), lr=0.1)
    sparse.train()
    sparse(torch.randn(4, 3, 32, 32)).sum().backward()
    opt.step()
    assert (layer.weight == 0).float().mean() >= 0.5 - 1e-3


def test_all_transforms_compose_and_rebuild_from_state_dict():
    model, graph = zoo_model("resnet20")
    space = shipped_space("resnet20", graph)
    rng = np.random.default_rng(0)
    x = torch.randn(2, 3, 32, 32)
    for _ in range(3):
        candidate = space.sample(rng)
        built = materialize(model, candidate, space)
        built.train()
        built(x)  # calibrate observers, move BN stats
        built.eval()
        rebuilt = materialize(model, candidate, space)
        rebuilt.load_state_dict(built.state_dict())
        rebuilt.eval()
        size = space.input_resolution(candidate)
        xs = torch.nn.functional.interpolate(x, size=size, mode="bilinear", antialias=True)
        torch.testing.assert_close(rebuilt(xs), built(xs))
    bits = {name: layer_bits(m) for name, m in built.named_modules() if isinstance(m, nn.Conv2d | nn.Linear)}
    assert any(b != (32, 32) for b in bits.values())


def test_materialize_leaves_the_original_untouched():
    model, graph = zoo_model("resnet20")
    space = shipped_space("resnet20", graph)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    materialize(model, space.uniform(keep=0.25, w_bits=4, sparsity=0.5, rank=0.5), space)
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
