"""count_model: MACs, BitOps and size of real (materialized) models."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from autocompress.compress import LowRank, materialize
from autocompress.counting import LayerCount, ModelCounts, count_model
from autocompress.graph import ModelGraph
from autocompress.models import create_model
from autocompress.space import SearchSpace

SHAPE = (3, 32, 32)


@pytest.fixture(scope="module")
def resnet20():
    torch.manual_seed(0)
    model = create_model("resnet20").eval()
    return model, ModelGraph.from_model(model, SHAPE)


@pytest.fixture(scope="module")
def dense(resnet20) -> ModelCounts:
    return count_model(resnet20[0], SHAPE)


def space_for(graph: ModelGraph, **dims) -> SearchSpace:
    return SearchSpace.from_dict(graph, {"name": "test", "defaults": dims})


def folded_bias_bytes(model: nn.Module) -> int:
    """The fp32 per-channel bias every BatchNorm leaves when folded into the convolution before it."""
    return sum(4 * m.num_features for m in model.modules() if isinstance(m, nn.BatchNorm2d))


# -- uncompressed zoo models ---------------------------------------------------------------

def test_resnet20_defaults(resnet20, dense):
    model, graph = resnet20
    # CIFAR ResNet-20 is 40.55M MACs with option-A shortcuts; option B adds three 1x1 convs
    assert 40.55e6 < dense.macs < 40.55e6 * 1.03
    assert dense.flops == 2 * dense.macs
    assert dense.params == sum(p.numel() for p in model.parameters())
    assert 0.26e6 < dense.params < 0.28e6
    assert dense.uncounted == {}
    assert [c.name for c in dense.layers] == list(graph.units)  # every leaf, in module order
    assert dense.macs == sum(c.macs for c in dense.layers) == sum(u.macs for u in graph.units.values())
    assert dense.effective_macs == dense.macs and dense.bitops == dense.macs * 32 * 32
    # every BN folds into the convolution before it: its weights, and a bias per channel
    assert dense.size_bytes == 4 * sum(c.params for c in dense.layers) + folded_bias_bytes(model)
    assert sum(c.size_bytes for c in dense.layers) == dense.size_bytes
    ew = dense.elementwise_by_op
    assert ew["add"] == 3 * (16 * 32 * 32 + 32 * 16 * 16 + 64 * 8 * 8)  # one residual add per block
    assert ew["relu"] > 0 and ew["adaptive_avg_pool2d"] == 64 * 8 * 8
    assert dense.elementwise_ops == sum(ew.values())


def test_mobilenetv2_counts_relu6_and_adds():
    model = create_model("mobilenetv2_cifar").eval()
    counts = count_model(model, SHAPE)
    assert counts.uncounted == {}
    assert counts.elementwise_by_op["hardtanh"] > 0  # ReLU6
    assert counts.elementwise_by_op["add"] > 0  # inverted-residual shortcuts
    assert not {"conv", "linear"} & set(counts.elementwise_by_op)
    assert counts.macs == sum(c.macs for c in counts.layers)  # elementwise work stays out of macs
    assert 85e6 < counts.macs < 95e6
    depthwise = [c for c in counts.layers if c.name == "features.1.0.conv.0.0"]
    assert depthwise and depthwise[0].macs == 32 * 9 * 32 * 32


def test_functional_ops_and_uncounted():
    class Toy(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(2, 4, 3, padding=1)
            self.fc = nn.Linear(8, 3)

        def forward(self, x):
            y = self.conv(x)  # 4 x 8 x 8
            y = torch.cat([y, torch.sigmoid(y) * y], dim=1)  # 8 x 8 x 8
            y = torch.nn.functional.max_pool2d(y, 2)  # 8 x 4 x 4
            y = torch.abs(y)  # no handler
            return self.fc(y.mean(dim=(2, 3)))

    counts = count_model(Toy(), torch.zeros(1, 2, 8, 8))
    n = 4 * 8 * 8
    # cat is counted as zero work (not "uncounted"); fvcore's Counter drops zero entries
    assert counts.elementwise_by_op == {
        "sigmoid": n, "mul": n, "max_pool2d": 4 * 8 * 4 * 4, "mean": 8 * 4 * 4,
    }
    assert counts.uncounted == {"aten::abs": 1}
    assert counts.layer("conv").macs == 4 * 2 * 9 * 64 and counts.layer("fc").macs == 24
    assert counts.layer("conv").params == 4 * 2 * 9 + 4
    assert counts.macs == 4 * 2 * 9 * 64 + 24


# -- compressed models ---------------------------------------------------------------------

def test_uniform_keep_half(resnet20, dense):
    model, graph = resnet20
    space = space_for(graph, keep=[0.5, 1.0])
    counts = count_model(materialize(model, space.uniform(keep=0.5), space), SHAPE)
    assert 0.2 < counts.macs / dense.macs < 0.35
    assert counts.params < dense.params / 2


def test_int8_bitops_and_size(resnet20, dense):
    model, graph = resnet20
    space = space_for(graph, w_bits=[8, 32], a_bits=[8, 32])
    compressed = materialize(model, space.uniform(w_bits=8, a_bits=8), space)
    counts = count_model(compressed, SHAPE)
    # fake-quant arithmetic (round, clamp, div, amax) and observers add no work
    assert counts.macs == dense.macs and counts.elementwise_by_op == dense.elementwise_by_op
    assert counts.uncounted == {}
    assert counts.bitops == counts.macs * 64
    for c in counts.layers:
        assert (c.w_bits, c.a_bits, c.bitops) == (8, 8, c.macs * 64)
    weights = sum(compressed.get_submodule(c.name).weight.numel() for c in counts.layers)
    layer_bytes = sum(c.size_bytes for c in counts.layers)
    # 1 byte per weight; the classifier's bias and the folded BNs' biases at fp32
    assert layer_bytes == weights + 4 * 10 + folded_bias_bytes(compressed)
    assert layer_bytes / dense.size_bytes == pytest.approx(0.25, abs=0.003)
    # observer buffers are not part of the deployed size; BN lives on in the layers' biases
    assert counts.size_bytes == layer_bytes


def test_sparsity_halves_effective_macs(resnet20, dense):
    model, graph = resnet20
    space = SearchSpace.from_dict(graph, {"name": "t", "defaults": {"sparsity": [0.0, 0.5]},
                                          "overrides": [{"match": "@last", "sparsity": [0.0]}]})
    counts = count_model(materialize(model, space.uniform(sparsity=0.5), space), SHAPE)
    assert counts.macs == dense.macs
    for c in counts.layers:
        if c.name == graph.last_unit():
            assert c.sparsity == 0.0 and c.effective_macs == c.macs
            continue
        assert c.sparsity == pytest.approx(0.5) and 2 * c.effective_macs == c.macs
        numel = c.params  # resnet convs have no bias: the folded BN gives them one
        channels = model.get_submodule(c.name).out_channels
        assert c.size_bytes == math.ceil(numel / 2 * 32 / 8) + math.ceil(numel / 8) + 4 * channels
        assert c.bitops == c.effective_macs * 32 * 32
    fc = counts.layer(graph.last_unit())
    assert counts.effective_macs == (counts.macs - fc.macs) // 2 + fc.macs


def test_lowrank_counted_as_two_factors(resnet20, dense):
    model, graph = resnet20
    space = SearchSpace.from_dict(graph, {"name": "t", "defaults": {"rank": [1.0]},
                                          "overrides": [{"match": "layer2.1.conv1", "rank": [0.5, 1.0]}]})
    candidate = space.uniform(rank=0.5)
    compressed = materialize(model, candidate, space)
    assert isinstance(compressed.get_submodule("layer2.1.conv1"), LowRank)
    counts = count_model(compressed, SHAPE)
    names = [c.name for c in counts.layers]
    assert "layer2.1.conv1" not in names
    first, second = counts.layer("layer2.1.conv1.0"), counts.layer("layer2.1.conv1.1")
    (cfg,) = [c for c in space.layer_configs(candidate) if c.name == "layer2.1.conv1"]
    assert cfg.rank == 16
    assert first.macs == 16 * 32 * 9 * 16 * 16 and second.macs == 32 * 16 * 16 * 16
    assert first.macs + second.macs == cfg.dense_macs
    assert counts.macs == dense.macs - dense.layer("layer2.1.conv1").macs + cfg.dense_macs


def test_counting_leaves_the_model_alone(resnet20):
    model, graph = resnet20
    space = space_for(graph, w_bits=[4, 32], a_bits=[8, 32], sparsity=[0.0, 0.5])
    compressed = materialize(model, space.uniform(w_bits=4, a_bits=8, sparsity=0.5), space)
    compressed.train()
    x = torch.randn(2, *SHAPE)
    compressed(x)  # calibrate the observers once
    compressed.eval()
    before = compressed(x)
    state = {k: v.clone() for k, v in compressed.state_dict().items()}
    compressed.train()
    counts = count_model(compressed, SHAPE)
    assert compressed.training  # mode restored
    conv = compressed.get_submodule("layer1.0.conv1")
    assert parametrize.is_parametrized(conv, "weight") and hasattr(conv, "input_quant")
    assert counts.layer("layer1.0.conv1").w_bits == 4
    compressed.eval()
    assert torch.equal(compressed(x), before)
    assert all(torch.equal(v, state[k]) for k, v in compressed.state_dict().items())
    # counting twice gives the same answer (the deploy view does not leak into the model)
    assert count_model(compressed, SHAPE) == counts


# -- the consistency contract with SearchSpace.layer_configs --------------------------------

def test_counts_match_layer_configs(resnet20):
    """What materialize builds is what the cost model prices: MACs and weights, exactly."""
    model, graph = resnet20
    space = SearchSpace.from_dict(graph, {
        "name": "t",
        "defaults": {"keep": [0.25, 0.5, 0.75, 1.0], "w_bits": [4, 8, 32], "a_bits": [8, 32],
                     "rank": [0.25, 0.5, 1.0], "sparsity": [0.0, 0.5]},
        "scaling": {"mode": "compound", "phi": [-2.0, -1.0, 0.0], "alpha": 1.2, "beta": 1.1, "gamma": 1.15},
    })
    for seed in (0, 1, 3):
        candidate = space.sample(seed)
        compressed = materialize(model, candidate, space)
        counts = count_model(compressed, (3, *space.input_resolution(candidate)))
        configs = space.layer_configs(candidate)
        assert sum(c.macs for c in counts.layers) == counts.macs == sum(cfg.dense_macs for cfg in configs)
        weights = sum(compressed.get_submodule(c.name).weight.numel() for c in counts.layers)
        assert weights == sum(cfg.weight_params for cfg in configs)
        for cfg in configs:  # and layer by layer, a LowRank layer as its two factors
            mine = [c for c in counts.layers if c.name == cfg.name or c.name.startswith(cfg.name + ".")]
            assert len(mine) == (1 if cfg.rank is None else 2), cfg.name
            assert sum(c.macs for c in mine) == cfg.dense_macs, cfg.name
            assert all((c.w_bits, c.a_bits) == (cfg.w_bits, cfg.a_bits) for c in mine), cfg.name
            for c in mine:  # the mask zeroes round(sparsity * numel) weights: exact only for even sizes
                numel = compressed.get_submodule(c.name).weight.numel()
                assert round(c.sparsity * numel) == round(cfg.sparsity * numel), c.name
                assert c.effective_macs == c.macs * (numel - round(cfg.sparsity * numel)) // numel


def test_layer_count_is_frozen(dense):
    with pytest.raises(AttributeError):
        dense.layers[0].macs = 0  # type: ignore[misc]
    assert isinstance(dense.layers[0], LayerCount)
    with pytest.raises(KeyError, match="no counted layer"):
        dense.layer("nope")


def test_bad_input_shape(resnet20):
    with pytest.raises(ValueError, match="input_shape"):
        count_model(resnet20[0], (3, 0, 32))


def test_a_norm_that_follows_no_layer_of_its_width_is_stored_whole():
    """Only a BatchNorm right after a layer of its width folds; one on the input stays at fp32, all four tensors."""
    model = nn.Sequential(nn.BatchNorm2d(3), nn.Conv2d(3, 8, 3, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                          nn.Flatten(), nn.Linear(8 * 6 * 6, 10)).eval()
    counts = count_model(model, (3, 8, 8))
    conv, linear = counts.layers
    assert conv.size_bytes == 4 * (3 * 8 * 9) + 4 * 8  # the folded norm's bias
    assert linear.size_bytes == 4 * (8 * 36 * 10 + 10)
    assert counts.size_bytes == conv.size_bytes + linear.size_bytes + 4 * 4 * 3  # the input norm, stored
