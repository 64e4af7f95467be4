"""The ``npz:PATH`` source: images and labels saved with ``numpy.savez`` (no pickles)."""

from __future__ import annotations

from pathlib import Path
from tokenize import TokenError

import numpy as np

from autocompress.data.base import ZIP_ERRORS, DataError, SourceData, Split, existing_path


def _npz_images(x: np.ndarray, key: str, label: str) -> np.ndarray:
    """Accept N x H x W, N x H x W x C or N x C x H x W; uint8 or float in [0, 1]."""
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4:
        chan = (x.shape[1] <= 4, x.shape[3] <= 4)
        if chan == (False, True):
            x = x.transpose(0, 3, 1, 2)
        elif chan == (False, False):
            raise DataError(
                f"{label}: {key!r} has shape {x.shape}; cannot tell the channel axis "
                "(expected N x H x W, N x H x W x C or N x C x H x W with C <= 4)"
            )
    else:
        raise DataError(
            f"{label}: {key!r} must be N x H x W, N x H x W x C or N x C x H x W, got shape {x.shape}"
        )
    if x.dtype == np.uint8:
        return np.ascontiguousarray(x)
    if np.issubdtype(x.dtype, np.floating):
        if x.size and (not np.isfinite(x).all() or x.min() < 0 or x.max() > 1):
            raise DataError(
                f"{label}: {key!r} is float but not within [0, 1] (expected uint8 0..255 or float 0..1)"
            )
        return np.ascontiguousarray(np.rint(x * 255.0).astype(np.uint8))
    raise DataError(f"{label}: {key!r} has dtype {x.dtype}; expected uint8 or float in [0, 1]")


def _npz_labels(y: np.ndarray, n: int, key: str, label: str) -> np.ndarray:
    if y.shape != (n,) or not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{label}: {key!r} must be {n} integer labels, got {y.dtype} {y.shape}")
    if n and y.min() < 0:
        raise DataError(f"{label}: {key!r} has negative labels; expected class indices 0..K-1")
    return y.astype(np.int64)


def npz(arg: str, *, cache_dir: Path | None = None) -> SourceData:
    """An .npz with x_train/y_train (optionally x_val/y_val, x_test/y_test) or x/y; optional classes."""
    path = existing_path(
        arg, "npz", "an .npz with keys x_train,y_train[,x_val,y_val][,x_test,y_test] or x,y"
    )
    label = f"npz:{arg}"
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (*ZIP_ERRORS, AttributeError, SyntaxError, TokenError) as exc:  # numpy reads .npy headers as Python
        raise DataError(f"{label}: not a readable .npz archive without pickles ({exc})") from exc
    if "x" in arrays and "x_train" in arrays:
        raise DataError(f"{label}: has both 'x' and 'x_train'; use one naming scheme")
    prefixes = (
        {"train": "_train", "val": "_val", "test": "_test"} if "x" not in arrays else {"train": ""}
    )
    splits: dict[str, Split] = {}
    for split, suffix in prefixes.items():
        kx, ky = f"x{suffix}", f"y{suffix}"
        if kx not in arrays and ky not in arrays and split != "train":
            continue
        for k in (kx, ky):
            if k not in arrays:
                raise DataError(
                    f"{label}: missing key {k!r}; keys are {sorted(arrays)} "
                    "(expected x_train,y_train[,x_val,y_val][,x_test,y_test] or x,y)"
                )
        x = _npz_images(arrays[kx], kx, label)
        splits[split] = (x, _npz_labels(arrays[ky], len(x), ky, label))
    shapes = {s: x.shape[1:] for s, (x, _) in splits.items()}
    if len(set(shapes.values())) > 1:
        raise DataError(f"{label}: splits differ in image shape (C, H, W): {shapes}")
    num_classes = 1 + max((int(y.max()) for _, y in splits.values() if len(y)), default=-1)
    classes = [str(i) for i in range(num_classes)]
    if "classes" in arrays:
        classes = [str(c) for c in arrays["classes"].tolist()]
        if len(classes) < num_classes:
            raise DataError(
                f"{label}: 'classes' names {len(classes)} classes but labels go up to {num_classes - 1}"
            )
    return SourceData(path.stem, classes, splits)
