"""SearchSpace from YAML, Candidates, their encoding, and clear errors for malformed spaces."""

import dataclasses
import json

import numpy as np
import pytest
import yaml

from autocompress.models import list_models
from autocompress.space import Candidate, CandidateError, SearchSpace, SpaceError
from tests.helpers import shipped_space, zoo_model


@pytest.fixture(scope="module")
def resnet20():
    return zoo_model("resnet20")


@pytest.mark.parametrize("name", list_models())
def test_every_zoo_model_has_a_shipped_space(name):
    _, graph = zoo_model(name)
    space = shipped_space(name, graph)
    candidate = space.sample(0)
    assert space.contains(candidate)
    assert space.log10_size() > 5


def test_overrides_pin_first_and_last(resnet20):
    _, graph = resnet20
    space = shipped_space("resnet20", graph)
    assert space.choices["fc"]["w_bits"] == (8, 32)
    assert "keep" not in space.choices["fc"]  # the classifier's outputs are the logits
    # the stem is pinned to full width, so its whole residual stream is
    assert space.choices["conv1"]["keep"] == (1.0,)
    assert "rank" not in space.choices["layer2.0.shortcut.0"] or space.choices["layer2.0.shortcut.0"]["rank"] == (1.0,)
    assert space.choices["layer2.1.conv1"]["keep"] == (0.25, 0.375, 0.5, 0.625, 0.75, 0.875, 1.0)


def test_candidate_round_trips_and_hashes(resnet20):
    _, graph = resnet20
    space = shipped_space("resnet20", graph)
    rng = np.random.default_rng(3)
    for _ in range(10):
        c = space.sample(rng)
        again = Candidate.from_json(json.dumps(c.to_dict()))
        assert again == c and hash(again) == hash(c) and again.key == c.key
        assert Candidate.from_flat(c.flat()) == c
        space.validate(again)
    assert len({space.sample(i) for i in range(20)}) == 20
    assert space.sample(7) == space.sample(7)


def test_encoding_round_trips_every_candidate_and_the_identity(resnet20):
    _, graph = resnet20
    space = shipped_space("resnet20", graph)
    encoding = space.encoding
    assert encoding is space.encoding and len(encoding) == sum(map(len, space.choices.values())) + 1  # + phi
    candidates = [space.identity(), space.uniform(keep=0.5, w_bits=8, phi=-1)] + [space.sample(i) for i in range(20)]
    rows = encoding.encode(candidates)
    assert rows.shape == (len(candidates), len(encoding))
    assert [encoding.decode(row) for row in rows] == candidates
    w_bits = encoding.columns[encoding.column("layer2.0.conv1", "w_bits")]
    assert w_bits.values == (4, 6, 8, 32)
    with pytest.raises(CandidateError, match=r"layer2\.0\.conv1\.w_bits: 5 is not one of the encoded choices"):
        encoding.encode([Candidate({"layer2.0.conv1": {"w_bits": 5}})])


def test_encoding_holds_identities_the_space_does_not_offer(resnet20):
    """The reference is encodable; random rows and ladders only hold what the space offers."""
    _, graph = resnet20
    space = SearchSpace.from_dict(graph, {"name": "t", "defaults": {
        "keep": [0.5, 0.75], "w_bits": [4, 8], "a_bits": [8], "rank": [0.5], "sparsity": [0.25, 0.5]},
        "scaling": {"mode": "compound", "phi": [-2.0, -1.0], "alpha": 1.2, "beta": 1.1, "gamma": 1.15}})
    encoding = space.encoding
    identity = space.identity()
    assert not space.contains(identity)
    assert encoding.decode(encoding.encode([identity])[0]) == identity
    unit = "layer2.0.conv1"
    sparsity = encoding.columns[encoding.column(unit, "sparsity")]
    assert sparsity.values == (0.0, 0.25, 0.5)
    assert [sparsity.values[i] for i in sparsity.ladder] == [0.5, 0.25]  # most compressed first
    w_bits = encoding.columns[encoding.column(unit, "w_bits")]
    assert [w_bits.values[i] for i in w_bits.ladder] == [4, 8]
    phi = encoding.columns[encoding.column("scaling", "phi")]
    assert phi.values == (-2.0, -1.0, 0.0) and [phi.values[i] for i in phi.ladder] == [-2.0, -1.0]
    rows = encoding.random(500, rng=0)
    for i, column in enumerate(encoding.columns):
        assert set(rows[:, i]) == set(column.offered), (column.owner, column.dim)
    assert all(space.contains(encoding.decode(row)) for row in rows[:20])


def test_unit_variants_walk_every_shape_of_a_unit(resnet20):
    _, graph = resnet20
    space = SearchSpace.from_dict(graph, {"name": "t", "defaults": {"keep": [0.5], "rank": [0.5]},
                                          "scaling": {"mode": "explicit", "depth": [0.5]}})
    encoding = space.encoding
    unit = "layer1.2.conv1"  # dropped at depth 0.5 with its block
    columns = [(encoding.columns[c].owner, encoding.columns[c].dim) for c in encoding.shape_columns(unit)]
    assert columns == [("scaling", "depth"), (graph.out_group(unit), "keep"), (graph.out_group("conv1"), "keep"),
                       (unit, "rank")]
    variants = dict(encoding.unit_variants(unit))
    assert len(variants) == 8  # depth 1.0 only (0.5 drops it) x 2 x 2 keeps x 2 ranks
    for combo, cfg in variants.items():
        candidate = encoding.decode(np.array([combo[columns.index((c.owner, c.dim))]
                                              if (c.owner, c.dim) in columns else c.offered[0]
                                              for c in encoding.columns]))
        assert cfg == dataclasses.replace(next(x for x in space.layer_configs(candidate) if x.name == unit),
                                          w_bits=32, a_bits=32, sparsity=0.0)


def test_candidate_normalises_number_types():
    a = Candidate({"conv": {"keep": 1, "w_bits": 8.0}})
    b = Candidate({"conv": {"keep": 1.0, "w_bits": 8}})
    assert a == b and hash(a) == hash(b)
    with pytest.raises(CandidateError, match="w_bits"):
        Candidate({"conv": {"w_bits": 3.5}})
    with pytest.raises(CandidateError, match="unknown dimension"):
        Candidate({"conv": {"depthh": 1}})


def test_uniform_identity_and_compound_scaling(resnet20):
    _, graph = resnet20
    space = shipped_space("resnet20", graph)
    half = space.uniform(keep=0.5, w_bits=8)
    assert half.get("layer3.1.conv1", "keep") == 0.5 and half.get("conv1", "keep") == 1.0
    assert half.get("layer3.1.conv1", "w_bits") == 8
    scaled = space.uniform(phi=-2)
    assert scaled.depth == pytest.approx(1.2**-2) and scaled.width == pytest.approx(1.1**-2)
    assert space.input_resolution(scaled) == (round(32 * 1.15**-2),) * 2
    identity = space.identity()
    assert all(v in (1.0, 32, 0.0) for dims in identity.layers.values() for v in dims.values())


def test_validate_names_every_problem(resnet20):
    _, graph = resnet20
    space = shipped_space("resnet20", graph)
    bad = space.sample(0).to_dict()
    bad["layers"]["layer1.0.conv1"]["w_bits"] = 5
    bad["layers"]["nonexistent"] = {"w_bits": 8}
    bad["scaling"]["depth"] = 0.3
    with pytest.raises(CandidateError) as err:
        space.validate(Candidate.from_dict(bad))
    msg = str(err.value)
    assert "layers.layer1.0.conv1.w_bits: 5 is not one of [4, 6, 8, 32]" in msg
    assert "layers.nonexistent" in msg and "scaling.depth" in msg


def test_layer_configs_follow_the_candidate(resnet20):
    _, graph = resnet20
    space = SearchSpace.from_dict(graph, {"name": "t", "defaults": {"keep": [0.5, 1.0], "rank": [0.25, 1.0]},
                                          "scaling": {"mode": "explicit", "depth": [0.5, 1.0], "resolution": [0.75, 1.0]}})
    c = space.uniform(keep=0.5, rank=0.25, depth=0.5, resolution=0.75)
    configs = {cfg.name: cfg for cfg in space.layer_configs(c)}
    assert "layer1.2.conv1" not in configs  # dropped with its block
    inner = configs["layer3.0.conv1"]
    assert (inner.out_channels, inner.in_hw, inner.out_hw) == (32, (12, 12), (6, 6))
    assert inner.rank == round(0.25 * min(32, 16 * 9))
    assert configs["fc"].in_channels == 32 and configs["fc"].out_channels == 10


def _write(tmp_path, data, name="space.yaml"):
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"name": "x", "defaults": {"kepp": [0.5]}}, r"field defaults\.kepp: Extra inputs are not permitted"),
        ({"name": "x", "defaults": {"w_bits": [8, 3.5]}}, r"field defaults\.w_bits\[1\]: Input should be a valid integer"),
        ({"name": "x", "defaults": {"keep": [0, 0.5]}}, r"field defaults\.keep: .*ratios in \(0, 1\], got \[0\]"),
        ({"name": "x", "defaults": {"w_bits": [9]}}, r"field defaults\.w_bits: .*2\.\.8 or 32"),
        ({"name": "x", "defaults": {"keep": "half"}}, r"field defaults\.keep: Input should be a valid list"),
        ({"name": "x", "overrides": [{"match": "layer9.*", "keep": [1.0]}]}, r"field overrides\[0\]\.match: pattern 'layer9\.\*' matches no layer"),
        ({"name": "x", "overrides": [{"match": "@fist"}]}, r"field overrides\[0\]\.match: unknown selector '@fist'"),
        ({"defaults": {}}, r"field name: Field required"),
        ({"name": "x", "version": 2}, r"field version: Input should be 1"),
        ({"name": "x", "scaling": {"mode": "compound", "phi": [1.0]}}, r"field scaling\.phi: phi=1\.0 would deepen or widen"),
        ({"name": "x", "scaling": {"mode": "explicit", "width": [1.5]}}, r"field scaling\.width: .*can be thinned, not widened"),
        ({"name": "x", "scaling": {"mode": "none", "phi": [-1.0]}}, r"field scaling\.mode"),
        ({"name": "x", "scaling": {"mode": "explicit", "depth": [0.67, 1.0]}},
         r"field scaling\.depth: 0\.67 and 1\.0 keep the same blocks of this model: each drops 0 of its \d+ "
         r"droppable blocks"),
        ({"name": "x", "sparsity": [0.5]}, r"field sparsity: Extra inputs"),
        ("name: [unclosed", r"not valid YAML"),
        ("- just\n- a list\n", r"expected a mapping at the top level"),
    ],
)
def test_malformed_space_names_file_and_field(tmp_path, resnet20, data, expected):
    _, graph = resnet20
    path = _write(tmp_path, data)
    with pytest.raises(SpaceError, match=expected) as err:
        SearchSpace.from_yaml(graph, path)
    assert str(path) in str(err.value)


def test_resolution_scaling_refused_for_fixed_size_model(tmp_path):
    _, graph = zoo_model("lenet5")
    path = _write(tmp_path, {"name": "x", "scaling": {"mode": "explicit", "resolution": [0.5, 1.0]}})
    with pytest.raises(SpaceError, match="only runs at input size"):
        SearchSpace.from_yaml(graph, path)


def test_unknown_space_name_lists_shipped_ones(resnet20):
    _, graph = resnet20
    with pytest.raises(SpaceError, match="shipped spaces: .*resnet_cifar"):
        SearchSpace.from_yaml(graph, "no_such_space")


def test_uniform_scalings_walk_every_scaling_least_scaled_first(resnet20):
    _, graph = resnet20
    compound = shipped_space("resnet20", graph)
    assert compound.uniform_scalings() == [{"phi": 0.0}, {"phi": -1.0}, {"phi": -2.0}]
    explicit = SearchSpace.from_yaml(graph, "experiments/cifar10/resnet_cifar_depth_res.yaml")
    scalings = explicit.uniform_scalings()
    assert len(scalings) == 9 and scalings[0] == {"depth": 1.0, "resolution": 1.0}
    assert scalings[-1] == {"depth": 0.33, "resolution": 0.75}
    shares = [s["depth"] * s["resolution"] ** 2 for s in scalings]
    assert shares == sorted(shares, reverse=True)
    # the experiment space's depths drop one and two of a stage's three blocks (ceil(0.67 * 3) would keep all three)
    blocks = {s["depth"]: len(graph.dropped_blocks(s["depth"])) for s in scalings}
    assert blocks == {1.0: 0, 0.66: 3, 0.33: 6}
    assert SearchSpace.from_dict(graph, {"name": "flat"}).uniform_scalings() == [{}]
