"""The import-layer contract (pyproject.toml, [tool.importlinter]), checked with import-linter on every run."""

from __future__ import annotations

import os
import pkgutil
import shutil
import subprocess
import sys
from pathlib import Path

import autocompress

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = ROOT / "pyproject.toml"


def _lint(package_parent: Path) -> subprocess.CompletedProcess:
    """lint-imports on the autocompress package found first under ``package_parent``."""
    env = {**os.environ, "PYTHONPATH": str(package_parent)}
    code = "import sys; from importlinter.cli import lint_imports; sys.exit(lint_imports(%r, no_cache=True))"
    return subprocess.run([sys.executable, "-c", code % str(PYPROJECT)], capture_output=True, text=True, env=env,
                          cwd=package_parent, timeout=120)


def test_the_package_keeps_its_import_contracts():
    done = _lint(ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 kept, 0 broken" in done.stdout


def test_every_module_of_the_package_has_a_layer():
    """A new subpackage or top-level module must be placed in the layers, or nothing checks it."""
    from importlinter.api import read_configuration

    contracts = read_configuration(str(PYPROJECT))["contracts_options"]
    layers = next(c for c in contracts if c["type"] == "layers")["layers"]
    placed = {name.strip() for layer in layers for name in layer.split("|")}
    modules = {m.name for m in pkgutil.iter_modules(autocompress.__path__)}
    assert modules == placed


def test_an_upward_import_breaks_the_contract(tmp_path):
    """The same contracts on a copy of the package where pricing imports measuring: both contracts fail."""
    copy = tmp_path / "autocompress"
    shutil.copytree(Path(autocompress.__file__).parent, copy, ignore=shutil.ignore_patterns("__pycache__"))
    signature = copy / "hardware" / "signature.py"
    signature.write_text(signature.read_text() + "\nfrom autocompress.runtime.timing import Timing  # noqa\n")
    done = _lint(tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "0 kept, 2 broken" in done.stdout
    assert "autocompress.hardware.signature -> autocompress.runtime.timing" in done.stdout


def test_importing_pricing_loads_no_model_building_or_measuring():
    code = "import sys, autocompress.hardware; print(sorted(m for m in sys.modules if m.startswith('autocompress')))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    for package in ("compress", "runtime", "models", "train", "base_model", "counting"):
        assert f"'autocompress.{package}" not in loaded, loaded
