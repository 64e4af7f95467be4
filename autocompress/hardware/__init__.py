"""Hardware profiles, layer signatures, energy models, profilers and the cost model."""

from autocompress.hardware.analytic import analytic_profile, roofline_ms
from autocompress.hardware.cost_model import CostModel, Costs, required_signatures
from autocompress.hardware.energy import HOROWITZ_45NM, EnergyTable, layer_energy
from autocompress.hardware.importers import FORMATS as TABLE_FORMATS
from autocompress.hardware.importers import TableImportError, import_table
from autocompress.hardware.profile import HardwareProfile, ImportedTable, ProfileError
from autocompress.hardware.signature import LayerSignature, SignatureError, leaf_signatures

__all__ = [
    "HOROWITZ_45NM", "TABLE_FORMATS", "CostModel", "Costs", "EnergyTable", "HardwareProfile", "ImportedTable",
    "LayerSignature", "ProfileError", "SignatureError", "TableImportError", "analytic_profile", "import_table",
    "layer_energy", "leaf_signatures", "required_signatures", "roofline_ms",
]
