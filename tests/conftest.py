"""Fixtures shared across test modules (session-scoped, so expensive ones are built once)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

# -- autocompress.train: real data and a small CNN trained on it ---------------------------------


def tiny_bn_cnn(num_classes: int = 10, in_channels: int = 1, seed: int = 0) -> nn.Module:
    """Two conv-BN-ReLU-pool stages and a linear head; adaptive pooling lets it run at any size >= 4."""
    g = torch.Generator().manual_seed(seed)
    model = nn.Sequential(
        nn.Conv2d(in_channels, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.AdaptiveAvgPool2d(3), nn.Flatten(1), nn.Linear(32 * 9, num_classes),
    )
    with torch.no_grad():  # seeded init that leaves the global RNG alone
        for m in model.modules():
            if isinstance(m, nn.Conv2d | nn.Linear):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu", generator=g)
                if m.bias is not None:
                    m.bias.zero_()
    return model


#: the recipe the trained fixture uses (measured: ~0.95 val accuracy in a few seconds on 2 cores)
TINY_CNN_RECIPE = {"epochs": 2.0, "lr": 0.05, "warmup_steps": 5, "batch_size": 64}


@pytest.fixture(scope="session")
def mnist5k():
    """The bundled real MNIST digits (3,500 train / 500 val / 1,000 test), seed 0."""
    from autocompress.data import load_data

    return load_data("mnist5k", seed=0)


@pytest.fixture(scope="session")
def trained_mnist_cnn(mnist5k):
    """``(model, metrics)``: :func:`tiny_bn_cnn` trained with ``train_base`` on mnist5k, in eval mode.

    Shared by the whole session: deep-copy it before changing it.
    """
    from autocompress.train import FitConfig, train_base

    recipe = dict(TINY_CNN_RECIPE)
    batch_size = recipe.pop("batch_size")
    model = tiny_bn_cnn()
    metrics = train_base(model, mnist5k, FitConfig(**recipe, progress=False), batch_size=batch_size)
    return model.eval(), metrics


# -- published lookup tables (kept beside the repository, in ../shared/hw_luts/, never in it) -----

LUTS = Path(__file__).parents[2] / "shared" / "hw_luts"


@pytest.fixture(scope="session")
def luts() -> Path:
    if not (LUTS / "proxylessnas_mobile.yaml").is_file():
        pytest.skip(f"the published tables are not at {LUTS} (they are kept beside the repository, not in it)")
    return LUTS
