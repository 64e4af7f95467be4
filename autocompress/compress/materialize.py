"""materialize(model, candidate, space): one point of the space as a real, trainable model.

The transforms run in a fixed order, each on the result of the previous one:
depth (drop repeats) -> channel pruning (keep ratio x width) -> low-rank
factorization -> magnitude sparsity -> fake quantization. The shapes come from
``SearchSpace.layer_configs``, the same numbers the cost model prices, and the
result is checked against them.
"""

from __future__ import annotations

import copy

from torch import nn

from autocompress.compress.depth import drop_blocks
from autocompress.compress.lowrank import LowRank, factorize
from autocompress.compress.pruning import prune_channels
from autocompress.compress.quantization import quantize_layer
from autocompress.compress.sparsity import sparsify_layer
from autocompress.space import Candidate, LayerConfig, SearchSpace


def materialize(model: nn.Module, candidate: Candidate, space: SearchSpace, *, importance: str = "l1") -> nn.Module:
    """A compressed copy of ``model``; the original is left untouched."""
    if candidate != space.identity():
        space.validate(candidate)
    graph = space.graph
    new = copy.deepcopy(model)
    drop_blocks(new, graph.dropped_blocks(candidate.depth))
    prune_channels(new, graph, space.group_channels(candidate), importance=importance)
    configs = space.layer_configs(candidate)
    for cfg in configs:
        leaves = [new.get_submodule(cfg.name)]
        if cfg.rank is not None:
            factors = factorize(leaves[0], cfg.rank)
            new.set_submodule(cfg.name, factors)
            leaves = list(factors)
        for leaf in leaves:
            sparsify_layer(leaf, cfg.sparsity)
            quantize_layer(leaf, cfg.w_bits, cfg.a_bits)
    _check_shapes(new, configs)
    return new


def _check_shapes(model: nn.Module, configs: list[LayerConfig]) -> None:
    """The built model must match what the cost model will price; a mismatch is a bug."""
    problems = []
    for cfg in configs:
        layer = model.get_submodule(cfg.name)
        first, last = (layer[0], layer[-1]) if isinstance(layer, LowRank) else (layer, layer)
        got_in = first.in_channels if isinstance(first, nn.Conv2d) else first.in_features
        got_out = last.out_channels if isinstance(last, nn.Conv2d) else last.out_features
        got_rank = layer.rank if isinstance(layer, LowRank) else None
        if (got_in, got_out, got_rank) != (cfg.in_channels, cfg.out_channels, cfg.rank):
            problems.append(f"{cfg.name}: built {got_in}->{got_out} rank {got_rank}, "
                            f"expected {cfg.in_channels}->{cfg.out_channels} rank {cfg.rank}")
    if problems:
        raise RuntimeError("materialized model disagrees with the search space: " + "; ".join(problems))
