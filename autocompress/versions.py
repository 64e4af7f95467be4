"""The library versions a run directory, an export manifest or a measured profile records."""

from __future__ import annotations

import platform
from importlib import metadata

#: the packages whose versions shape a run's numbers
PACKAGES = ("autocompress", "torch", "torch-pruning", "fvcore", "onnx", "onnxruntime", "optuna", "numpy")


def versions() -> dict[str, str]:
    """Python, the platform and each of :data:`PACKAGES` ("not installed" when absent)."""
    out = {"python": platform.python_version(), "platform": platform.platform()}
    for pkg in PACKAGES:
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out
