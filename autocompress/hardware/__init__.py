"""Hardware profiles, layer signatures, energy models, accelerator models, the predictor for unseen signatures
and the cost model."""

from autocompress.hardware.accelerators import (
    LayerCost,
    accelerator_model,
    accelerator_profile,
    layer_cost,
)
from autocompress.hardware.analytic import analytic_profile, roofline_ms
from autocompress.hardware.cost_model import CostModel, Costs, required_signatures
from autocompress.hardware.energy import (
    EYERISS_NORMALIZED_COSTS,
    HOROWITZ_45NM,
    EnergyTable,
    layer_energy,
    row_stationary_movement,
)
from autocompress.hardware.importers import FORMATS as TABLE_FORMATS
from autocompress.hardware.importers import TableImportError, import_table
from autocompress.hardware.predictor import SignaturePredictor, fit_predictor
from autocompress.hardware.profile import (
    ACCELERATOR_MODELS,
    BitFusionModel,
    EyerissModel,
    HardwareProfile,
    ImportedTable,
    ProfileError,
)
from autocompress.hardware.signature import LayerSignature, SignatureError, leaf_signatures

__all__ = [
    "ACCELERATOR_MODELS", "EYERISS_NORMALIZED_COSTS", "HOROWITZ_45NM", "TABLE_FORMATS", "BitFusionModel", "CostModel",
    "Costs", "EnergyTable", "EyerissModel", "HardwareProfile", "ImportedTable", "LayerCost", "LayerSignature",
    "ProfileError", "SignatureError", "SignaturePredictor", "TableImportError", "accelerator_model",
    "accelerator_profile", "analytic_profile", "fit_predictor", "import_table", "layer_cost", "layer_energy",
    "leaf_signatures", "required_signatures", "roofline_ms", "row_stationary_movement",
]
