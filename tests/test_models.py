"""Registry-driven model tests: every registered model is tested automatically."""

from __future__ import annotations

import inspect
import logging
import math

import pytest
import torch
import torch_pruning as tp
from torch import nn

from autocompress.models import (
    ModelError,
    ModelInfo,
    create_model,
    list_models,
    model_info,
    register_model,
)
from autocompress.models import registry as registry_mod
from autocompress.models.efficientnet import B0_STAGES, MBConv
from autocompress.models.mobilenetv2 import InvertedResidual
from tests.zoo_models import TOYS

MODELS = list_models()


def _n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _kwargs_for(name: str, in_channels: int, size: int, num_classes: int) -> dict:
    kwargs = {"in_channels": in_channels, "num_classes": num_classes}
    if "input_size" in model_info(name).default_kwargs:
        kwargs["input_size"] = size
    return kwargs


def _default_input(name: str) -> tuple[int, int, int, int]:
    defaults = model_info(name).default_kwargs
    size = defaults.get("input_size", 32)
    return (2, defaults["in_channels"], size, size)


def _forward_backward(model: nn.Module, shape: tuple[int, ...], num_classes: int) -> None:
    model.train()
    x = torch.randn(*shape)
    out = model(x)
    assert out.shape == (shape[0], num_classes)
    out.sum().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads and all(g is not None for g in grads)
    assert all(torch.isfinite(g).all() for g in grads)


# --------------------------------------------------------------------------- registry


def test_list_models_sorted_and_has_zoo():
    assert MODELS == sorted(MODELS)
    for name in (
        "resnet20",
        "resnet32",
        "resnet56",
        "mobilenetv2_cifar",
        "lenet5",
        "efficientnet_b0",
        "efficientnet_b0_tiny",
    ):
        assert name in MODELS


@pytest.mark.parametrize("name", MODELS)
def test_model_info_contract(name):
    info = model_info(name)
    assert isinstance(info, ModelInfo)
    assert info.name == name and info.family and callable(info.builder)
    params = inspect.signature(info.builder).parameters
    for arg in ("num_classes", "in_channels"):
        assert params[arg].kind is inspect.Parameter.KEYWORD_ONLY
        assert arg in info.default_kwargs
    # default_kwargs is a copy: mutating it does not leak into the registry
    info.default_kwargs["num_classes"] = -1
    assert model_info(name).default_kwargs["num_classes"] != -1


def test_families():
    families = {n: model_info(n).family for n in MODELS}
    assert (
        families.items()
        >= {
            "resnet20": "resnet_cifar",
            "resnet32": "resnet_cifar",
            "resnet56": "resnet_cifar",
            "mobilenetv2_cifar": "mobilenetv2",
            "mobilenetv2_cifar_050": "mobilenetv2",
            "lenet5": "lenet",
            "efficientnet_b0": "efficientnet",
            "efficientnet_b0_tiny": "efficientnet",
        }.items()
    )


def test_register_model_adds_to_registry(monkeypatch):
    monkeypatch.setattr(registry_mod, "_REGISTRY", dict(registry_mod._REGISTRY))

    @register_model("_toy_linear", family="toy")
    def _toy_linear(*, num_classes: int = 10, in_channels: int = 3) -> nn.Module:
        return nn.Sequential(nn.Flatten(), nn.LazyLinear(num_classes))

    assert "_toy_linear" in list_models()
    info = model_info("_toy_linear")
    assert info.family == "toy" and info.default_kwargs == {"num_classes": 10, "in_channels": 3}
    assert isinstance(create_model("_toy_linear", num_classes=3), nn.Module)

    def other(*, num_classes: int = 10, in_channels: int = 3) -> nn.Module:
        return nn.Identity()

    with pytest.raises(ModelError, match="already registered"):
        register_model("_toy_linear")(other)
    with pytest.raises(ModelError, match="':'"):
        register_model("a:b")


def test_none_kwargs_mean_default():
    torch.manual_seed(0)
    a = create_model("resnet20", num_classes=None, in_channels=None, width_mult=None)
    torch.manual_seed(0)
    b = create_model("resnet20")
    assert a.fc.out_features == 10 and a.conv1.in_channels == 3
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert ka == kb and torch.equal(va, vb)


def test_registered_model_rejects_unknown_kwarg():
    with pytest.raises(ModelError, match="depth_mult") as exc:
        create_model("resnet20", depth_mult=2.0)
    assert "width_mult" in str(exc.value)  # lists what it does accept


# --------------------------------------------------------------------------- every model


@pytest.mark.parametrize("name", MODELS)
def test_defaults_forward_backward(name):
    model = create_model(name)
    _forward_backward(model, _default_input(name), model_info(name).default_kwargs["num_classes"])


@pytest.mark.parametrize("in_channels,size", [(1, 28), (3, 32)])
@pytest.mark.parametrize("name", MODELS)
def test_in_channels_and_num_classes(name, in_channels, size):
    model = create_model(name, **_kwargs_for(name, in_channels, size, num_classes=7))
    _forward_backward(model, (2, in_channels, size, size), 7)


@pytest.mark.parametrize("name", MODELS)
def test_deterministic_construction(name):
    torch.manual_seed(123)
    a = create_model(name).state_dict()
    torch.manual_seed(123)
    b = create_model(name).state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize(
    "name", [n for n in MODELS if "width_mult" in model_info(n).default_kwargs]
)
def test_width_mult_shrinks(name):
    width = model_info(name).default_kwargs["width_mult"]
    assert _n_params(create_model(name, width_mult=width / 2)) < _n_params(create_model(name))


def test_named_width_variant_is_the_width_model():
    """``mobilenetv2_cifar_050`` builds exactly ``mobilenetv2_cifar(width_mult=0.5)``, weights included."""
    torch.manual_seed(0)
    named = create_model("mobilenetv2_cifar_050").state_dict()
    torch.manual_seed(0)
    width = create_model("mobilenetv2_cifar", width_mult=0.5).state_dict()
    assert named.keys() == width.keys() and all(torch.equal(named[k], width[k]) for k in named)
    assert "width_mult" not in model_info("mobilenetv2_cifar_050").default_kwargs  # the name fixes it


@pytest.mark.parametrize("name", MODELS + sorted(TOYS))
def test_torch_pruning_dependency_graph(name):
    if name in TOYS:
        model, shape = TOYS[name](), (1, 3, 32, 32)
    else:
        model, shape = create_model(name), (1, *_default_input(name)[1:])
    model.eval()
    dg = tp.DependencyGraph().build_dependency(model, example_inputs=torch.randn(*shape))
    groups = list(dg.get_all_groups(root_module_types=[nn.Conv2d, nn.Linear]))
    assert groups


# --------------------------------------------------------------------------- resnet


@pytest.mark.parametrize(
    "name,expected", [("resnet20", 0.27e6), ("resnet32", 0.46e6), ("resnet56", 0.85e6)]
)
def test_resnet_param_counts(name, expected):
    assert abs(_n_params(create_model(name)) - expected) / expected < 0.10


def test_resnet_structure_and_width():
    model = create_model("resnet20")
    assert [len(getattr(model, f"layer{i}")) for i in (1, 2, 3)] == [3, 3, 3]
    # option-B shortcuts: conv where the shape changes, empty Sequential otherwise
    assert len(model.layer1[0].shortcut) == 0
    assert isinstance(model.layer2[0].shortcut[0], nn.Conv2d)
    assert isinstance(model.layer3[0].shortcut[0], nn.Conv2d)
    assert isinstance(model.avgpool, nn.AdaptiveAvgPool2d) and model.fc.in_features == 64

    half = create_model("resnet20", width_mult=0.5)
    assert [half.conv1.out_channels, half.layer2[0].conv1.out_channels, half.fc.in_features] == [
        8,
        16,
        32,
    ]
    ratio = _n_params(half) / _n_params(model)
    assert 0.22 < ratio < 0.30


# --------------------------------------------------------------------------- mobilenetv2


def test_mobilenetv2_structure():
    model = create_model("mobilenetv2_cifar")
    feats = model.features
    assert len(feats) == 1 + 7 + 1
    assert feats[0][0].stride == (1, 1)
    stages = list(feats[1:-1])
    assert [len(s) for s in stages] == [1, 2, 3, 4, 3, 3, 1]
    assert stages[1][0].conv[1][0].stride == (1, 1)  # CIFAR: second stage stride 1
    for stage in stages:
        for block in stage:
            assert isinstance(block, InvertedResidual)
            dw = [m for m in block.modules() if isinstance(m, nn.Conv2d) and m.groups > 1][0]
            convs = [m for m in block.modules() if isinstance(m, nn.Conv2d)]
            same = dw.stride == (1, 1) and convs[0].in_channels == convs[-1].out_channels
            assert block.use_res_connect == same
    assert any(isinstance(m, nn.ReLU6) for m in model.modules())
    assert isinstance(model.classifier[0], nn.Dropout) and isinstance(
        model.classifier[1], nn.Linear
    )
    x = torch.randn(2, 3, 32, 32)
    assert feats(x).shape[-2:] == (4, 4)

    half = create_model("mobilenetv2_cifar", width_mult=0.5)
    for m in half.modules():
        if isinstance(m, nn.Conv2d) and m.groups == 1 and m.in_channels != 3:
            assert m.out_channels % 8 == 0


# --------------------------------------------------------------------------- lenet


@pytest.mark.parametrize("size", [28, 32])
def test_lenet_flatten(size):
    model = create_model("lenet5", input_size=size, in_channels=1 if size == 28 else 3)
    assert model.classifier[0].in_features == 16 * 5 * 5
    assert model.features[0].padding == ((2, 2) if size == 28 else (0, 0))


# --------------------------------------------------------------------------- efficientnet


def _stage_blocks(model: nn.Module) -> list[int]:
    stages = list(model.features[1:-1])
    assert all(isinstance(b, MBConv) for s in stages for b in s)
    return [len(s) for s in stages]


@pytest.mark.parametrize("depth", [0.34, 0.5, 1.0, 1.2])
def test_efficientnet_depth_mult(depth):
    model = create_model("efficientnet_b0", width_mult=0.25, depth_mult=depth)
    assert _stage_blocks(model) == [math.ceil(round(depth * n, 9)) for *_, n in B0_STAGES]


def test_efficientnet_structure():
    model = create_model("efficientnet_b0_tiny")
    assert _stage_blocks(model) == [1, 1, 1, 2, 2, 2, 1]
    assert any(isinstance(m, nn.SiLU) for m in model.modules())
    block = model.features[2][0]  # stage 2, first block: in 8 ch at width 0.25
    assert block.se.reduce.out_channels == max(1, int(block.expand[0].in_channels * 0.25))
    for m in model.modules():
        if (
            isinstance(m, nn.Conv2d)
            and m.groups == 1
            and m.in_channels != 3
            and m.kernel_size == (1, 1)
        ):
            if m not in {b.se.reduce for s in model.features[1:-1] for b in s}:
                assert m.out_channels % 8 == 0
    x = torch.randn(2, 3, 32, 32)
    model.eval()
    assert model.features(x).shape[-2:] == (4, 4)
    big_stride = create_model("efficientnet_b0_tiny", small_input=False).eval()
    assert big_stride.features(x).shape[-2:] == (1, 1)


# --------------------------------------------------------------------------- module:callable


def test_module_callable_builds_with_kwargs():
    model = create_model("tests.zoo_models:squeezenet_tiny", num_classes=7, in_channels=1)
    _forward_backward(model, (2, 1, 28, 28), 7)
    info = model_info("tests.zoo_models:squeezenet_tiny")
    assert info.family == "generic"
    assert info.default_kwargs == {"num_classes": 10, "in_channels": 3}


def _classes_only(num_classes: int = 10) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.LazyLinear(num_classes))


def _not_a_module(num_classes: int = 10, in_channels: int = 3):
    return {"num_classes": num_classes}


def test_module_callable_drops_unaccepted_kwargs(caplog):
    with caplog.at_level(logging.DEBUG, logger="autocompress.models.registry"):
        model = create_model(
            "tests.test_models:_classes_only", num_classes=4, in_channels=1, width_mult=None
        )
    assert model[1].out_features == 4
    assert "in_channels" in caplog.text


def test_unknown_name_lists_models():
    with pytest.raises(ModelError) as exc:
        create_model("resnet21")
    msg = str(exc.value)
    assert "resnet21" in msg and "resnet20" in msg and "lenet5" in msg
    assert "module:callable" in msg
    assert isinstance(exc.value, ValueError)
    with pytest.raises(ModelError, match="resnet20"):
        model_info("nope")


@pytest.mark.parametrize(
    "spec,needle",
    [
        ("no_such_pkg_xyz.models:build", "no_such_pkg_xyz.models"),
        ("tests.zoo_models:no_such_builder", "no_such_builder"),
        ("tests.test_models:_not_a_module", "dict"),
        ("tests.zoo_models:", "package.module:callable"),
        ("tests.zoo_models:TOYS", "not callable"),
    ],
)
def test_module_callable_errors(spec, needle):
    with pytest.raises(ModelError, match=needle):
        create_model(spec)
