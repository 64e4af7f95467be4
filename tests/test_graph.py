"""ModelGraph: units, prune groups and blocks on real models and awkward toys."""

import pytest
import torch

from autocompress.graph import GraphError, ModelGraph, kept_channels
from autocompress.models import create_model
from tests.helpers import zoo_model
from tests.zoo_models import TOYS


def test_resnet20_units_and_groups():
    model, graph = zoo_model("resnet20")
    convs = [u for u in graph.units.values() if u.op == "conv"]
    assert len(convs) == 21  # stem + 18 block convs + 2 projection shortcuts
    assert graph.units["fc"].op == "linear" and graph.out_group("fc") is None
    stem = graph.units["conv1"]
    assert (stem.in_channels, stem.out_channels, stem.in_hw) == (3, 16, (32, 32))
    assert graph.units["layer3.0.conv1"].stride == (2, 2) and graph.units["layer3.0.conv1"].out_hw == (8, 8)
    # the stage-1 residual stream couples the stem with every block's second conv
    stream = graph.groups[graph.out_group("conv1")]
    assert {"conv1", "layer1.0.conv2", "layer1.1.conv2", "layer1.2.conv2"} <= set(stream.out_units)
    # a block's inner conv is its own group, feeding only the block's second conv
    inner = graph.groups["layer2.1.conv1"]
    assert inner.out_units == ("layer2.1.conv1",) and inner.in_units == (("layer2.1.conv2", 1),)
    assert [b.name for b in graph.blocks if b.droppable] == [
        "layer1.0", "layer1.1", "layer1.2", "layer2.1", "layer2.2", "layer3.1", "layer3.2"]
    assert graph.supports_resolution


def test_depthwise_follows_its_producer_and_is_not_a_leader():
    _, graph = zoo_model("mobilenetv2_cifar")
    dws = [u for u in graph.units.values() if u.depthwise]
    assert dws
    for dw in dws:
        group = graph.out_group(dw.name)
        assert group is not None and group != dw.name
        assert graph.in_segments(dw.name) == ((group, graph.groups[group].channels, 1),)


def test_concat_gives_input_segments_per_branch():
    model = TOYS["squeezenet_tiny"]()
    graph = ModelGraph.from_model(model, (3, 32, 32))
    multi = {n: segs for n in graph.units if len(segs := graph.in_segments(n)) > 1}
    assert multi, "a conv after a fire module reads two concatenated groups"
    for name, segs in multi.items():
        assert sum(c * m for _, c, m in segs) == graph.units[name].in_channels


def test_flatten_multiplier_for_linear_after_conv():
    _, graph = zoo_model("lenet5")
    (segment,) = graph.in_segments("classifier.0")  # Linear(16*5*5 -> 120) after flatten
    assert segment == ("features.3", 16, 25)
    assert not graph.supports_resolution


def test_grouped_conv_group_is_frozen():
    graph = ModelGraph.from_model(TOYS["grouped_conv"](), (3, 32, 32))
    grouped = [u for u in graph.units.values() if u.grouped]
    assert grouped
    for g in graph.groups.values():
        if any(u.name in g.out_units or u.name in dict(g.in_units) for u in grouped):
            assert not g.prunable and "grouped" in g.reason


@pytest.mark.parametrize("toy", sorted(TOYS))
def test_every_toy_traces(toy):
    graph = ModelGraph.from_model(TOYS[toy](), (3, 32, 32))
    assert graph.units and graph.prunable_groups
    for name, unit in graph.units.items():
        assert sum(c * m for _, c, m in graph.in_segments(name)) == unit.in_channels


def test_depth_drops_trailing_repeats_per_run():
    _, graph = zoo_model("resnet56")  # 9 blocks per stage
    assert graph.dropped_blocks(1.0) == []
    dropped = graph.dropped_blocks(0.5)  # keep ceil(4.5) = 5 of 9 in each stage
    assert dropped == [f"layer{s}.{i}" for s in (1, 2, 3) for i in range(5, 9)]
    assert graph.dropped_units(0.5) >= {"layer1.8.conv1", "layer3.5.conv2"}


def test_kept_channels_rounding():
    assert kept_channels(16, 0.5) == 8
    assert kept_channels(16, 0.01) == 1
    assert kept_channels(16, 1.0) == 16
    assert kept_channels(96, 0.3, divisor=8) == 32
    assert kept_channels(16, 0.1, divisor=8) == 8


def test_untraceable_input_is_a_clear_error():
    with pytest.raises(GraphError, match="shape"):
        ModelGraph.from_model(create_model("lenet5"), (1, 5, 5))


def test_model_without_units_is_refused():
    with pytest.raises(GraphError, match="no Conv2d or Linear"):
        ModelGraph.from_model(torch.nn.Sequential(torch.nn.ReLU()), (3, 8, 8))
