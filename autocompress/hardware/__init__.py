"""Hardware profiles, layer signatures, energy models, profilers and the cost model."""

from autocompress.hardware.analytic import analytic_profile, roofline_ms
from autocompress.hardware.cost_model import CostModel, Costs, required_signatures
from autocompress.hardware.energy import HOROWITZ_45NM, EnergyTable, layer_energy
from autocompress.hardware.profile import HardwareProfile, ProfileError
from autocompress.hardware.signature import LayerSignature, SignatureError, leaf_signatures

__all__ = [
    "HOROWITZ_45NM", "CostModel", "Costs", "EnergyTable", "HardwareProfile", "LayerSignature", "ProfileError",
    "SignatureError", "analytic_profile", "layer_energy", "leaf_signatures", "required_signatures", "roofline_ms",
]
