"""What every CIFAR-10 benchmark script shares: the data, the reference recipe and where results go.

The data is the CIFAR-10 JPEG copy (ImageFolder layout in a zip): 45,000 train,
5,000 val (carved, seeded, stratified) and the 10,000 given test images.
"""

from __future__ import annotations

import os
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
DATA = os.environ.get("CIFAR10_ZIP", str(ROOT.parent / "shared" / "datasets" / "cifar10-jpeg.zip"))
DATA_SPEC = f"imagefolder:{DATA}"
RUNS = Path(os.environ.get("CIFAR10_RUNS", ROOT / "runs" / "cifar10"))
RESULTS = ROOT / "experiments" / "results" / "cifar10"
CACHE = Path.home() / ".cache" / "autocompress"

#: the one training recipe for the references (SGD, nesterov, cosine, wd 5e-4, 2 threads, channels_last)
REFERENCE_RECIPE = {"epochs": 15.0, "lr": 0.05, "warmup_steps": 20, "seed": 0}


def reference_weights(model: str) -> Path:
    """Where ``reference.py`` leaves a model's trained reference weights."""
    return RUNS / f"{model}-reference.pt"


#: what a benchmark cell's budget limits: measured latency, or the packed size of the weights (exact, counted)
METRICS = ("latency", "size")


def budget_text(budget: float, metric: str = "latency") -> str:
    """The relative budget as the search spells it: ``latency<=0.5x``, ``size<=0.1x``."""
    return f"{metric}<={budget:g}x"


def cell_name(model: str, budget: float, metric: str = "latency") -> str:
    """A benchmark cell's name: ``resnet20-0.5`` (latency), ``resnet20-size-0.1``."""
    return f"{model}-{budget:g}" if metric == "latency" else f"{model}-{metric}-{budget:g}"


def run_dir(model: str, budget: float, runs: Path | None = None, metric: str = "latency") -> Path:
    """One benchmark cell's folder: ``<runs>/<cell name>/`` (``search*/`` and ``baselines/`` inside)."""
    return Path(runs or RUNS) / cell_name(model, budget, metric)
