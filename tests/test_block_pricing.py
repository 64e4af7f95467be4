"""Block-level pricing on the real ProxylessNAS (Pixel 1) and Once-for-All (Note10) tables.

The expected figures are computed here independently of the pricer: the keys
are written the way the projects' latency estimators write them, and their
means are read from the YAML files with ``yaml.safe_load``.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import yaml

from autocompress.hardware import HardwareProfile, ProfileError, import_table
from autocompress.hardware.block_pricing import BlockCostModel, BlockSpec, block_key, price_blocks
from autocompress.models import create_model
from autocompress.models.proxyless import ProxylessBlock, block_specs

SHIPPED = Path(__file__).parents[1] / "hw_profiles"
PROXYLESS_STAGES = [(24, 4, 2), (40, 4, 2), (80, 4, 2), (96, 4, 1), (192, 4, 2), (320, 1, 1)]

ALL_6_3 = [(6, 3)] * 21
MIXED = [(3, 5), (6, 7), None, (3, 3),
         (6, 5), None, None, (3, 7),
         (6, 3), (3, 5), (6, 7), None,
         (3, 3), None, (6, 5), (3, 3),
         (6, 7), (3, 5), None, (6, 3),
         (6, 5)]
SHALLOWEST = [(3, 3) if i in (0, 4, 8, 12, 16, 20) else None for i in range(21)]


@pytest.fixture(scope="module")
def pixel1(luts) -> HardwareProfile:
    return import_table(luts / "proxylessnas_mobile.yaml", "proxyless")


@pytest.fixture(scope="module")
def pixel1_means(luts) -> dict[str, float]:
    return {key: value["mean"] for key, value in yaml.safe_load((luts / "proxylessnas_mobile.yaml").read_text()).items()}


def proxyless_keys(choices, resolution: int = 224, classes: int = 1000) -> list[str]:
    """The keys ProxylessNAS's estimator queries for this network (ProxylessNASLatencyTable's walk)."""
    f = (resolution + 1) // 2
    keys = [f"Conv-input:{resolution}x{resolution}x3-output:{f}x{f}x32",
            f"expanded_conv-input:{f}x{f}x32-output:{f}x{f}x16-expand:1-kernel:3-stride:1-idskip:0"]
    channels, slots = 16, iter(choices)
    for width, repeats, first_stride in PROXYLESS_STAGES:
        for i in range(repeats):
            choice = next(slots)
            if choice is None:
                continue
            stride = first_stride if i == 0 else 1
            out = int((f - 1) / stride + 1)
            idskip = int(stride == 1 and channels == width)
            keys.append(f"expanded_conv-input:{f}x{f}x{channels}-output:{out}x{out}x{width}"
                        f"-expand:{choice[0]}-kernel:{choice[1]}-stride:{stride}-idskip:{idskip}")
            f, channels = out, width
    keys.append(f"Conv_1-input:{f}x{f}x{channels}-output:{f}x{f}x1280")
    keys.append(f"Logits-input:{f}x{f}x1280-output:{classes}")
    return keys


@pytest.mark.parametrize("choices", [ALL_6_3, MIXED, SHALLOWEST], ids=["all-e6k3", "mixed", "shallowest"])
def test_proxyless_model_priced_as_exactly_the_sum_of_its_published_blocks(pixel1, pixel1_means, choices):
    torch.manual_seed(0)
    model = create_model("proxyless_mobile", blocks=choices).eval()
    specs = block_specs(model, 224)
    costs = price_blocks(pixel1, specs)

    keys = proxyless_keys(choices)
    assert [b.key for b in costs.blocks] == keys  # every block, in order, by its published key
    assert costs.latency_ms == math.fsum(pixel1_means[k] for k in keys)
    estimator_sum = 0.0  # the estimator adds in network order; fsum differs from it by rounding at most
    for key in keys:
        estimator_sum += pixel1_means[key]
    assert costs.latency_ms == pytest.approx(estimator_sum, rel=1e-12)
    assert [row["latency_ms"] for row in costs.breakdown()] == [pixel1_means[k] for k in keys]
    assert costs.profile == "proxylessnas_mobile" and costs.source_file == "proxylessnas_mobile.yaml"

    # the descriptions are the network's: every block's output shape is what the forward pass produces
    seen: dict[str, list[int]] = {}
    named = {"first_conv": model.first_conv, "first_block": model.first_block,
             "feature_mix_layer": model.feature_mix_layer,
             **{f"blocks.{i}": b for i, b in enumerate(model.blocks) if isinstance(b, ProxylessBlock)}}
    for name, module in named.items():
        module.register_forward_hook(lambda _m, _i, out, name=name: seen.__setitem__(
            name, [out.shape[2], out.shape[3], out.shape[1]]))
    with torch.no_grad():
        out = model(torch.randn(1, 3, 224, 224))
    assert out.shape == (1, 1000) and torch.isfinite(out).all()
    assert {s["name"]: s["output_hwc"] for s in specs if s["name"] in named} == seen
    assert len(specs) == 4 + sum(c is not None for c in choices)  # skipped blocks have no entry


def test_choices_change_the_price(pixel1):
    prices = {name: price_blocks(pixel1, block_specs(create_model("proxyless_mobile", blocks=c), 224)).latency_ms
              for name, c in [("all", ALL_6_3), ("mixed", MIXED), ("shallowest", SHALLOWEST)]}
    # fewer, narrower, smaller-kernel blocks cost less; the MobileNetV2-like point is near the paper's
    # 143 ms for MobileNetV2 on the same phone
    assert prices["shallowest"] < prices["mixed"] < prices["all"]
    assert 100 < prices["all"] < 200


@pytest.mark.parametrize("slot,choice,key", [
    (1, (6, 9), "expanded_conv-input:56x56x24-output:56x56x24-expand:6-kernel:9-stride:1-idskip:1"),
    (0, (4, 3), "expanded_conv-input:112x112x16-output:56x56x24-expand:4-kernel:3-stride:2-idskip:0"),
])
def test_uncovered_block_is_refused_with_its_key(pixel1, slot, choice, key):
    choices = list(ALL_6_3)
    choices[slot] = choice
    specs = block_specs(create_model("proxyless_mobile", blocks=choices), 224)
    model = BlockCostModel(pixel1)
    assert model.missing(specs) == [key]
    with pytest.raises(ProfileError) as exc:
        model.price(specs)
    message = str(exc.value)
    assert key in message and f"blocks.{slot}" in message
    assert "'proxylessnas_mobile'" in message and "proxylessnas_mobile.yaml" in message
    assert "(3, 3, " in message  # what the table does have at that shape


def test_widths_and_resolutions_the_table_lacks_are_refused(pixel1):
    ten_classes = block_specs(create_model("proxyless_mobile", num_classes=10), 224)
    with pytest.raises(ProfileError, match="Logits-input:7x7x1280-output:10"):
        price_blocks(pixel1, ten_classes)
    grey = block_specs(create_model("proxyless_mobile", in_channels=1), 224)
    assert BlockCostModel(pixel1).missing(grey) == ["Conv-input:224x224x1-output:112x112x32"]
    at_192 = block_specs(create_model("proxyless_mobile"), 192)
    with pytest.raises(ProfileError, match="measured at input resolution 224, the network is described at 192"):
        price_blocks(pixel1, at_192)


def test_profiles_without_a_block_table_and_malformed_blocks_are_refused(pixel1):
    analytic = HardwareProfile.load(SHIPPED / "analytic-45nm.json")
    with pytest.raises(ProfileError, match="no per-block table.*--format proxyless\\|ofa"):
        BlockCostModel(analytic)
    block = {"name": "b", "type": "expanded_conv", "input_hwc": [56, 56, 24], "output_hwc": [56, 56, 24],
             "expand": 6, "stride": 1, "idskip": True}
    with pytest.raises(ProfileError, match="block b: .*field kernel is missing"):
        price_blocks(pixel1, [block])
    with pytest.raises(ProfileError, match=r"block 0 \(b\): field input_hwc: expected \[H, W, C\]"):
        price_blocks(pixel1, [{**block, "kernel": 3, "input_hwc": [56, 24]}])
    with pytest.raises(ProfileError, match="unknown field"):
        price_blocks(pixel1, [{**block, "kernel": 3, "groups": 1}])


def test_proxyless_builder_checks_its_choices():
    with pytest.raises(ValueError, match="expected 21 entries"):
        create_model("proxyless_mobile", blocks=[(6, 3)] * 20)
    with pytest.raises(ValueError, match=r"blocks\[4\]: the first block of stage 2 .* cannot be skipped"):
        create_model("proxyless_mobile", blocks=[None if i == 4 else (6, 3) for i in range(21)])
    with pytest.raises(ValueError, match=r"blocks\[3\]: kernel must be a positive odd integer"):
        create_model("proxyless_mobile", blocks=[(6, 4) if i == 3 else (6, 3) for i in range(21)])


# -- Once-for-All (MobileNetV3 blocks, Galaxy Note10): the same pricer, keys with mid channels, se and hs ---------
#: OFA's MobileNetV3 space at width 1.2: (width, first stride, squeeze-excite, hard-swish) per stage
OFA_STAGES = [(32, 2, 0, 0), (48, 2, 1, 0), (96, 2, 0, 1), (136, 1, 1, 1), (192, 2, 1, 1)]


def ofa_network(resolution: int, choices: list[list[tuple[int, int]]]) -> list[tuple[dict, str]]:
    """Block descriptions of one OFA subnet and the key MBv3LatencyTable queries for each."""
    f = (resolution + 1) // 2
    pairs = [({"type": "Conv", "input_hwc": [resolution, resolution, 3], "output_hwc": [f, f, 24]},
              f"Conv-input:{resolution}x{resolution}x3-output:{f}x{f}x24"),
             ({"type": "expanded_conv", "input_hwc": [f, f, 24], "output_hwc": [f, f, 24], "mid_channels": 24,
               "kernel": 3, "stride": 1, "idskip": True, "se": False, "hs": False},
              f"expanded_conv-input:{f}x{f}x24-output:{f}x{f}x24-expand:24-kernel:3-stride:1-idskip:1-se:0-hs:0")]
    channels = 24
    for (width, first_stride, se, hs), stage in zip(OFA_STAGES, choices, strict=True):
        for i, (ratio, kernel) in enumerate(stage):
            stride = first_stride if i == 0 else 1
            out, mid, idskip = int((f - 1) / stride + 1), channels * ratio, int(i > 0)
            pairs.append(({"name": f"stage{width}.{i}", "type": "expanded_conv", "input_hwc": [f, f, channels],
                           "output_hwc": [out, out, width], "mid_channels": mid, "kernel": kernel,
                           "stride": stride, "idskip": bool(idskip), "se": bool(se), "hs": bool(hs)},
                          f"expanded_conv-input:{f}x{f}x{channels}-output:{out}x{out}x{width}-expand:{mid}"
                          f"-kernel:{kernel}-stride:{stride}-idskip:{idskip}-se:{se}-hs:{hs}"))
            f, channels = out, width
    pairs += [({"type": "Conv_1", "input_hwc": [f, f, 192], "output_hwc": [f, f, 1152]},
               f"Conv_1-input:{f}x{f}x192-output:{f}x{f}x1152"),
              ({"type": "AvgPool2D", "input_hwc": [f, f, 1152], "output_hwc": [1, 1, 1152]},
               f"AvgPool2D-input:{f}x{f}x1152-output:1x1x1152"),
              ({"type": "Conv_2", "input_hwc": [1, 1, 1152], "output_hwc": [1, 1, 1536]},
               "Conv_2-input:1x1x1152-output:1x1x1536"),
              ({"type": "Logits", "input_hwc": [1, 1, 1536], "output_hwc": [1000]}, "Logits-input:1x1x1536-output:1000")]
    return pairs


OFA_CHOICES = [[(3, 3), (4, 5)], [(6, 7), (3, 3), (4, 3)], [(4, 5), (6, 3), (3, 7), (6, 5)], [(3, 3), (4, 7)],
               [(6, 5), (3, 3), (4, 3)]]


@pytest.mark.parametrize("resolution", [160, 224])
def test_ofa_subnet_priced_as_exactly_the_sum_of_its_published_blocks(luts, resolution):
    path = luts / f"ofa_note10_{resolution}.yaml"
    means = {key: value["mean"] for key, value in yaml.safe_load(path.read_text()).items()}
    profile = import_table(path, "ofa")
    pairs = ofa_network(resolution, OFA_CHOICES)
    costs = price_blocks(profile, [spec for spec, _ in pairs])
    keys = [key for _, key in pairs]
    assert [b.key for b in costs.blocks] == keys
    assert costs.latency_ms == math.fsum(means[k] for k in keys)

    no_se = {**pairs[4][0], "se": False}  # stage 48 uses squeeze-excite; without it the block is not in the table
    with pytest.raises(ProfileError, match="-se:0-hs:0 \\(at this shape the table has"):
        price_blocks(profile, [no_se])
    assert block_key(BlockSpec.from_mapping(pairs[4][0]), "ofa") == keys[4]


def test_the_layer_cost_model_points_a_block_table_to_block_pricing(pixel1):
    """A search space prices layer signatures; a per-block table is refused there with where to go instead."""
    from autocompress.hardware import CostModel
    from tests.helpers import shipped_space, zoo_model

    _, graph = zoo_model("lenet5")
    with pytest.raises(ProfileError, match="imported per-block table .*price_blocks"):
        CostModel(pixel1, shipped_space("lenet5", graph))
