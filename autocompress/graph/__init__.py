"""Trace a model into its compressible units and coupled prune groups."""

from autocompress.graph.model_graph import (
    Block,
    GraphError,
    ModelGraph,
    PruneGroup,
    Unit,
    kept_channels,
)

__all__ = ["Block", "GraphError", "ModelGraph", "PruneGroup", "Unit", "kept_channels"]
