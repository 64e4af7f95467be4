"""The uncompressed reference model: built for the data, loaded or trained, and cached.

Every relative budget and every distillation teacher refers to this model, so
it is built the same way everywhere: the zoo/user builder gets the data's input
channels, classes and (where it takes one) input size; trained weights come from
a user file (``weights_only=True``) or from a seeded training run cached by a
key of everything that shaped it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from autocompress.data import DataInfo, ImageData
from autocompress.files import content_key, replace_atomically
from autocompress.models import ModelError, create_model, model_info
from autocompress.train import FitConfig, evaluate, resolve_device, train_base

log = logging.getLogger(__name__)


def builder_kwargs(name: str, input_shape: Sequence[int], num_classes: int, **kwargs: Any) -> dict[str, Any]:
    """The keywords ``build_model`` gives the builder: what a ``CompressionPlan`` records to rebuild it."""
    c, h, _ = input_shape
    options: dict[str, Any] = {"in_channels": int(c), "num_classes": int(num_classes)}
    if ":" not in name and "input_size" in model_info(name).default_kwargs:
        options["input_size"] = int(h)
    return options | kwargs


def build_model(name: str, data: ImageData | DataInfo, **kwargs: Any) -> nn.Module:
    """``create_model`` with the data's channels, classes and input size filled in (``probe_data`` suffices)."""
    return create_model(name, **builder_kwargs(name, data.input_shape, data.num_classes, **kwargs))


def load_weights(model: nn.Module, path: str | Path) -> nn.Module:
    path = Path(path)
    if not path.exists():
        raise ModelError(f"{path}: no such weights file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickled code, truncated file, not a torch file
        reason = " ".join(str(exc).split())  # torch's message spans several lines
        raise ModelError(f"{path}: not a loadable state_dict (weights_only=True): {reason}") from exc
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError) as exc:
        raise ModelError(f"{path}: weights do not fit the model: {' '.join(str(exc).split())}") from exc
    return model


def _cache_key(name: str, data: ImageData, fit: FitConfig, kwargs: dict) -> str:
    record = {"model": name, "kwargs": kwargs, "data": data.name, "shape": data.input_shape,
              "n_train": len(data.train_y), "classes": data.num_classes,
              "fit": fit.to_dict() | {"progress": None}, "torch": torch.__version__}
    return content_key(record)


def trained_base_model(
    name: str,
    data: ImageData,
    *,
    weights: str | Path | None = None,
    fit: FitConfig | None = None,
    cache_dir: str | Path | None = None,
    model_kwargs: dict[str, Any] | None = None,
    device: str | torch.device = "cpu",
) -> tuple[nn.Module, dict[str, Any]]:
    """The reference model in eval mode on the CPU, and where it came from (with its val accuracy).

    ``device`` is where it trains and is evaluated; it is no part of the cache key,
    and the cached weights are saved from the CPU, so a model trained on a GPU is
    reused on a machine without one.
    """
    device = resolve_device(device)
    model_kwargs = model_kwargs or {}
    model = build_model(name, data, **model_kwargs)
    fit = fit or FitConfig()
    if weights is not None:
        load_weights(model, weights)
        info: dict[str, Any] = {"source": "weights", "path": str(weights)}
    else:
        key = _cache_key(name, data, fit, model_kwargs)
        cached = Path(cache_dir) / f"base-{key}.pt" if cache_dir else None
        if cached is not None and cached.exists():
            load_weights(model, cached)
            info = {"source": "cache", "path": str(cached)}
            log.info("base model loaded from cache %s", cached)
        else:
            log.info("training the base model %s on %s (%s epochs)", name, data.name, fit.epochs)
            metrics = train_base(model, data, fit, device=device)
            info = {"source": "trained", "train": metrics}
            if cached is not None:
                cached.parent.mkdir(parents=True, exist_ok=True)
                replace_atomically(cached, lambda tmp: torch.save(model.state_dict(), tmp))
                info["path"] = str(cached)
    model.eval()
    trained = info.get("train", {}).get("val_accuracy")  # train_base measured it on the same split
    info["val_accuracy"] = trained if trained is not None else evaluate(model, data.loader("val", batch_size=256),
                                                                        device=device)
    return model, info
