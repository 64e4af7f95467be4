"""One candidate end to end: what a search does to each of its trials, shown for one point.

Pick one candidate of the model's joint space (checked on an untrained model
first, so a bad space or candidate fails before any training), load data, get
the reference model (trained and cached if no weights are given), materialize
the candidate, fine-tune it with distillation from the reference, and report
accuracy beside parameters, MACs, BitOps and size for both models.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from autocompress.base_model import build_model, trained_base_model
from autocompress.compress import materialize
from autocompress.counting import count_model
from autocompress.data import load_data, probe_data
from autocompress.graph import ModelGraph
from autocompress.models import model_info
from autocompress.space import Candidate, CandidateError, SearchSpace
from autocompress.train import Evaluator, FitConfig, evaluate, resolve_device

log = logging.getLogger(__name__)


def pick_candidate(spec: str, space: SearchSpace, seed: int) -> Candidate:
    """``identity``, ``random``, ``uniform:keep=0.5,w_bits=8`` or a candidate JSON file."""
    if spec == "identity":
        return space.identity()
    if spec == "random":
        return space.sample(np.random.default_rng(seed))
    if spec.startswith("uniform:"):
        values: dict[str, float] = {}
        for item in filter(None, spec.split(":", 1)[1].split(",")):
            key, sep, value = item.partition("=")
            try:
                values[key.strip()] = float(value)
            except ValueError:
                raise CandidateError(f"candidate {spec!r}: {item!r} is not dimension=number") from None
            if not sep:
                raise CandidateError(f"candidate {spec!r}: {item!r} is not dimension=number")
        return space.uniform(**values)
    path = Path(spec)
    if path.exists():
        return space.validate(Candidate.from_json(path.read_text()))
    raise CandidateError(f"candidate {spec!r}: expected identity, random, uniform:dim=value,... or a JSON file")


def run_demo(
    *,
    model: str = "lenet5",
    data: str = "mnist5k",
    space: str | None = None,
    candidate: str = "uniform:keep=0.5,w_bits=8,a_bits=8",
    weights: str | None = None,
    seed: int = 0,
    base_epochs: float = 15.0,
    finetune_epochs: float = 2.0,
    max_train: int | None = None,
    cache_dir: str | Path | None = None,
    progress: bool = True,
    device: str = "cpu",
) -> dict[str, Any]:
    started = time.perf_counter()
    resolve_device(device)  # an unavailable device fails before the data is loaded and the reference trained

    def resolve(net: nn.Module, shape: tuple[int, int, int]) -> tuple[SearchSpace, Candidate]:
        joint = SearchSpace.from_yaml(ModelGraph.from_model(net, shape), space or model_info(model).family)
        return joint, pick_candidate(candidate, joint, seed)

    info = probe_data(data, cache_dir=cache_dir)
    joint, chosen = resolve(build_model(model, info), info.input_shape)  # the architecture is all it needs
    dataset = load_data(data, seed=seed, max_train=max_train, cache_dir=cache_dir)
    base_fit = FitConfig(epochs=base_epochs, lr=0.05, warmup_steps=20, seed=seed, progress=progress)
    base, base_info = trained_base_model(model, dataset, weights=weights, fit=base_fit, cache_dir=cache_dir,
                                         device=device)
    if dataset.input_shape != info.input_shape:  # an image folder mixing grey and colour images
        joint, chosen = resolve(base, dataset.input_shape)
    compressed = materialize(base, chosen, joint)
    resolution = joint.input_resolution(chosen)[0]
    evaluator = Evaluator(
        teacher=base, data=dataset, fidelity="full", device=device,
        fit=FitConfig(epochs=finetune_epochs, lr=0.01, seed=seed, progress=progress),
    )
    result = evaluator(compressed, resolution=resolution if resolution != dataset.input_shape[1] else None)
    test_loader = dataset.loader("test", batch_size=256, resolution=resolution)
    c, _, _ = dataset.input_shape
    base_counts = count_model(base, dataset.input_shape)
    small_counts = count_model(compressed, (c, resolution, resolution))
    report = {
        "model": model, "data": dataset.name, "space": joint.source, "seed": seed,
        "candidate": chosen.to_dict(),
        "base": {"val_accuracy": base_info["val_accuracy"],
                 "test_accuracy": evaluate(base, dataset.loader("test", batch_size=256), device=device),
                 "source": base_info["source"], **_summary(base_counts)},
        "compressed": {"val_accuracy": result.accuracy,
                       "test_accuracy": evaluate(compressed, test_loader, device=device),
                       "fine_tune_steps": result.fine_tune_steps, **_summary(small_counts)},
        "seconds": time.perf_counter() - started,
    }
    log.info("demo finished in %.1f s", report["seconds"])
    return report


def _summary(counts) -> dict[str, Any]:
    return {"params": counts.params, "macs": counts.macs, "bitops": counts.bitops,
            "size_bytes": counts.size_bytes, "uncounted_ops": dict(counts.uncounted)}


def format_report(report: dict[str, Any]) -> str:
    b, c = report["base"], report["compressed"]
    rows = [
        ("val accuracy", f"{b['val_accuracy']:.4f}", f"{c['val_accuracy']:.4f}", ""),
        ("test accuracy", f"{b['test_accuracy']:.4f}", f"{c['test_accuracy']:.4f}", ""),
        ("params", f"{b['params']:,}", f"{c['params']:,}", f"{c['params'] / b['params']:.3f}x"),
        ("MACs", f"{b['macs']:,}", f"{c['macs']:,}", f"{c['macs'] / b['macs']:.3f}x"),
        ("BitOps", f"{b['bitops']:,}", f"{c['bitops']:,}", f"{c['bitops'] / b['bitops']:.3f}x"),
        ("size (KB)", f"{b['size_bytes'] / 1024:.1f}", f"{c['size_bytes'] / 1024:.1f}",
         f"{c['size_bytes'] / b['size_bytes']:.3f}x"),
    ]
    lines = [f"{report['model']} on {report['data']} (seed {report['seed']}), space {report['space']}",
             f"{'':16s}{'reference':>16s}{'compressed':>16s}{'ratio':>10s}"]
    lines += [f"{name:16s}{x:>16s}{y:>16s}{r:>10s}" for name, x, y, r in rows]
    lines.append(f"finished in {report['seconds']:.1f} s")
    return "\n".join(lines)
