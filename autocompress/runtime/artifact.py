"""A deployed ONNX file as a user receives it: the top-1 accuracy it scores in ONNX Runtime, and how to feed it.

The exporter writes, into every ONNX file it hands out, a JSON record of the
preprocessing its model was trained and scored with (input name, shape, dtype,
scaling, per-channel mean/std, resize) under :data:`PREPROCESSING_KEY` in the
file's ``metadata_props``; :func:`onnx_metadata` and :func:`read_preprocessing`
read it back with nothing but ``onnx``. :func:`onnx_accuracy` scores the file
itself (not the PyTorch model it came from) in a session made like the ones the
exporter times (:func:`~autocompress.runtime.onnx_runtime.ort_session`), so an
int8 artifact that lost accuracy to its kernels shows it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

#: the ``metadata_props`` key whose value is the JSON preprocessing record of an exported file
PREPROCESSING_KEY = "autocompress.preprocessing"


def onnx_accuracy(path: str | Path, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], *,
                  threads: int = 2) -> float:
    """Top-1 accuracy of the ONNX file ``path`` in ONNX Runtime (CPU) over labelled ``batches``.

    ``batches``: ``(images [N, C, H, W], labels [N])`` pairs, images already at
    the model's input resolution and normalized as the model expects (see
    :func:`read_preprocessing` for files the exporter wrote). A file with a fixed
    batch size (the exporter's are batch 1) is run that many images at a time,
    the last chunk padded; a dynamic batch dimension takes each batch whole.
    ``threads``: ORT intra-op threads. Raises ``ValueError`` naming the file and
    the batch when shapes or labels do not fit, or when there is no image at all.
    """
    from autocompress.runtime.onnx_runtime import ort_session

    path = Path(path)
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be an integer >= 1, got {threads!r}")
    session = ort_session(path, threads=threads)
    inputs = session.get_inputs()
    if len(inputs) != 1:
        raise ValueError(f"{path}: the model takes {len(inputs)} inputs {[i.name for i in inputs]}, "
                         "onnx_accuracy feeds one image tensor")
    spec = inputs[0]
    if len(spec.shape) != 4:
        raise ValueError(f"{path}: input {spec.name!r} has shape {spec.shape}, expected [N, C, H, W]")
    fixed = spec.shape[0] if isinstance(spec.shape[0], int) and spec.shape[0] > 0 else None
    correct = total = 0
    for i, (x, y) in enumerate(batches):
        images, labels = _numpy(x).astype(np.float32, copy=False), _numpy(y)
        if images.ndim != 4 or any(isinstance(want, int) and want != got
                                   for want, got in zip(spec.shape[1:], images.shape[1:], strict=True)):
            raise ValueError(f"{path}: batch {i}: images of shape {list(images.shape)}, the model takes "
                             f"{spec.shape} (resize and normalize as recorded under {PREPROCESSING_KEY!r} "
                             "in the file's metadata)")
        if labels.ndim != 1 or len(labels) != len(images):
            raise ValueError(f"{path}: batch {i}: labels of shape {list(labels.shape)}, expected "
                             f"[{len(images)}] (one class index per image)")
        logits = _run(session, spec.name, images, fixed)
        if logits.ndim != 2 or len(logits) != len(images):
            raise ValueError(f"{path}: output of shape {list(logits.shape)} for {len(images)} image(s), "
                             "expected [N, classes] logits")
        correct += int((logits.argmax(1) == labels).sum())
        total += len(labels)
    if total == 0:
        raise ValueError(f"{path}: no images to score (batches was empty)")
    return correct / total


def _numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor, on any device
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def _run(session, name: str, images: np.ndarray, fixed: int | None) -> np.ndarray:
    """Logits of ``images``: in one call, or ``fixed`` images at a time (the last chunk padded, then cut)."""
    if fixed is None:
        return session.run(None, {name: np.ascontiguousarray(images)})[0]
    out = []
    for start in range(0, len(images), fixed):
        chunk = images[start:start + fixed]
        n = len(chunk)
        if n < fixed:
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], fixed - n, axis=0)])
        out.append(session.run(None, {name: np.ascontiguousarray(chunk)})[0][:n])
    return np.concatenate(out)


def onnx_metadata(path: str | Path) -> dict[str, str]:
    """The ``metadata_props`` of the ONNX file ``path`` as a plain mapping."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ONNX model file not found: {path}")
    model = onnx.load(str(path))
    return {p.key: p.value for p in model.metadata_props}


def read_preprocessing(path: str | Path) -> dict[str, Any]:
    """The preprocessing record the exporter wrote into the ONNX file ``path`` (:data:`PREPROCESSING_KEY`)."""
    meta = onnx_metadata(path)
    if PREPROCESSING_KEY not in meta:
        raise ValueError(f"{path}: no {PREPROCESSING_KEY!r} in the model's metadata_props (keys: {sorted(meta)}); "
                         "it was not written by autocompress's exporter, or by an older version")
    try:
        record = json.loads(meta[PREPROCESSING_KEY])
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: metadata {PREPROCESSING_KEY!r} is not valid JSON: {exc}") from None
    if not isinstance(record, dict):
        raise ValueError(f"{path}: metadata {PREPROCESSING_KEY!r} must be a JSON object, got {type(record).__name__}")
    return record
