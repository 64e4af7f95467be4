"""Depth scaling: drop the trailing repeats of each stage (EfficientNet's ceil(d * n)).

Only blocks whose input and output shapes match are dropped, and they become
``nn.Identity`` under the same name, so every other module keeps its name.
"""

from __future__ import annotations

from collections.abc import Iterable

from torch import nn


def drop_blocks(model: nn.Module, names: Iterable[str]) -> nn.Module:
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, nn.Identity())
    return model
