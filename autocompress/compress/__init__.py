"""Compression transforms, their composition ``materialize``, and the replayable ``CompressionPlan``."""

from autocompress.compress.deploy import deploy_copy
from autocompress.compress.lowrank import LowRank, factorize, factorize_conv, factorize_linear
from autocompress.compress.materialize import materialize
from autocompress.compress.plan import PLAN_NAME, CompressionPlan, ModelBuilder, PlanError
from autocompress.compress.pruning import prune_channels
from autocompress.compress.quantization import (
    ActFakeQuant,
    WeightFakeQuant,
    layer_bits,
    quantize_layer,
)
from autocompress.compress.sparsity import MagnitudeMask, layer_sparsity, sparsify_layer

__all__ = [
    "PLAN_NAME", "ActFakeQuant", "CompressionPlan", "LowRank", "MagnitudeMask", "ModelBuilder", "PlanError",
    "WeightFakeQuant", "deploy_copy", "factorize", "factorize_conv",
    "factorize_linear", "layer_bits", "layer_sparsity", "materialize", "prune_channels", "quantize_layer",
    "sparsify_layer",
]
