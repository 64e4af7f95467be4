"""Structured channel pruning: channels are physically removed with Torch-Pruning.

Torch-Pruning's dependency graph finds every tensor a removed channel touches
(BatchNorm, residual adds, concats, depthwise convs, the flatten before a
Linear); we only decide how many channels each prune group keeps (from the
search space) and which ones (group magnitude importance, L1 or L2).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch_pruning as tp
from torch import nn

from autocompress.graph import ModelGraph
from autocompress.graph.model_graph import UNIT_TYPES

IMPORTANCE_NORMS = {"l1": 1, "l2": 2}


def prune_channels(
    model: nn.Module,
    graph: ModelGraph,
    kept: Mapping[str, int],
    *,
    importance: str = "l1",
) -> nn.Module:
    """Prune ``model`` in place so each group (by leader) keeps ``kept[leader]`` channels.

    ``model`` may already have blocks dropped by depth scaling: its groups are
    matched to the base graph's groups through their surviving members.
    """
    if importance not in IMPORTANCE_NORMS:
        raise ValueError(f"importance must be one of {sorted(IMPORTANCE_NORMS)}, got {importance!r}")
    if all(kept.get(g.leader, g.channels) >= g.channels for g in graph.prunable_groups):
        return model
    scorer = tp.importance.GroupMagnitudeImportance(p=IMPORTANCE_NORMS[importance])
    names = {m: n for n, m in model.named_modules()}
    example = torch.zeros((1, *graph.input_shape), device=next(model.parameters()).device)
    dg = tp.DependencyGraph().build_dependency(model, example_inputs=example, verbose=False)
    # groups are generated lazily so each one sees the shapes left by the previous prune
    for group in dg.get_all_groups(root_module_types=UNIT_TYPES):
        leaders = {
            graph.out_group(names[dep.target.module])
            for dep, _ in group
            if dg.is_out_channel_pruning_fn(dep.handler) and names.get(dep.target.module) in graph.units
        } - {None}
        if not leaders:
            continue
        leader = min(leaders, key=lambda n: graph.units[n].index)
        channels = len(group[0].idxs)
        n_keep = kept.get(leader, channels)
        if n_keep >= channels:
            continue
        scores = scorer(group)
        if scores is None:  # nothing with weights in the group: fall back to the root's weight norm
            weight = group[0].dep.target.module.weight.detach()
            scores = weight.flatten(1).norm(p=IMPORTANCE_NORMS[importance], dim=1)
        remove = torch.argsort(scores, stable=True)[: channels - n_keep].tolist()
        root = group[0].dep
        dg.get_pruning_group(root.target.module, root.handler, sorted(remove)).prune()
    return model
