"""The ``cifar10:PATH`` source: the CIFAR-10 python batches, read with an unpickler that admits numpy arrays only."""

from __future__ import annotations

import codecs
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from autocompress.data.base import DataError, SourceData, Split, existing_path


def _latin1_encode(obj: str, encoding: str = "latin1", errors: str = "strict") -> bytes:
    """``_codecs.encode`` restricted to latin-1: how protocol-2 pickles spell bytes."""
    if encoding.lower().replace("-", "").replace("_", "") not in ("latin1", "iso88591"):
        raise DataError(f"pickle asked for codec {encoding!r}; only latin-1 is allowed")
    return codecs.encode(obj, "latin1", errors)


def _allowed_globals() -> dict[tuple[str, str], Any]:
    try:
        from numpy._core import multiarray
    except ImportError:  # numpy < 2
        from numpy.core import multiarray  # type: ignore[no-redef]
    allowed: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): _latin1_encode,
    }
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(module, "_reconstruct")] = multiarray._reconstruct
        allowed[(module, "scalar")] = multiarray.scalar
    return allowed


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays and builtin containers only: a pickle is code, and CIFAR
    batches come from the internet, so any other global (os.system, ...) is refused."""

    _allowed = _allowed_globals()

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise DataError(
                f"refusing to unpickle {module}.{name}: only numpy arrays and "
                "builtin containers are allowed in CIFAR batch files"
            ) from None


def _unpickle(path: Path) -> dict[Any, Any]:
    try:
        with open(path, "rb") as fh:
            obj = _RestrictedUnpickler(fh, encoding="bytes").load()
    except DataError as exc:
        raise DataError(f"{path}: {exc}") from None
    except (
        pickle.UnpicklingError,
        EOFError,
        AttributeError,
        TypeError,
        ValueError,
        IndexError,
    ) as exc:
        raise DataError(
            f"{path}: not a readable CIFAR pickle ({type(exc).__name__}: {exc})"
        ) from exc
    if not isinstance(obj, dict):
        raise DataError(f"{path}: expected a pickled dict, got {type(obj).__name__}")
    return obj


def _get(d: dict[Any, Any], key: str, path: Path) -> Any:
    for k in (key.encode(), key):
        if k in d:
            return d[k]
    raise DataError(f"{path}: missing key {key!r}; keys are {sorted(map(str, d))}")


CIFAR_SHAPE = (3, 32, 32)


def _cifar_batch(path: Path, num_classes: int) -> Split:
    d = _unpickle(path)
    x, y = np.asarray(_get(d, "data", path)), np.asarray(_get(d, "labels", path))
    if x.dtype != np.uint8 or x.ndim != 2 or x.shape[1] != 3072:
        raise DataError(f"{path}: 'data' must be uint8 N x 3072, got {x.dtype} {x.shape}")
    if y.shape != (len(x),) or not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{path}: 'labels' must be {len(x)} integers, got {y.dtype} {y.shape}")
    if len(y) and (y.min() < 0 or y.max() >= num_classes):
        raise DataError(
            f"{path}: labels must lie in 0..{num_classes - 1}, got {y.min()}..{y.max()}"
        )
    return x.reshape(-1, *CIFAR_SHAPE), y.astype(np.int64)


def cifar10_folder(arg: str) -> tuple[Path, list[Path], list[str]]:
    """The folder, its train batch files and the class names; the image batches are not read."""
    expected = "the CIFAR-10 python folder with data_batch_1..5, test_batch and batches.meta"
    root = existing_path(arg, "cifar10", expected)
    if not root.is_dir():
        raise DataError(
            f"cifar10:{arg}: not a folder (expected {expected}; extract the .tar.gz first)"
        )
    train_files = sorted(root.glob("data_batch_*"))
    for needed in ("batches.meta", "test_batch"):
        if not (root / needed).is_file():
            raise DataError(f"cifar10:{arg}: missing {root / needed} (expected {expected})")
    if not train_files:
        raise DataError(f"cifar10:{arg}: no data_batch_* files in {root} (expected {expected})")
    meta = root / "batches.meta"
    names = _get(_unpickle(meta), "label_names", meta)
    return root, train_files, [n.decode() if isinstance(n, bytes) else str(n) for n in names]


def cifar10(arg: str, *, cache_dir: Path | None = None) -> SourceData:
    """The CIFAR-10 python batches folder (data_batch_*, test_batch, batches.meta)."""
    root, train_files, classes = cifar10_folder(arg)
    batches = [_cifar_batch(p, len(classes)) for p in train_files]
    train = (np.concatenate([b[0] for b in batches]), np.concatenate([b[1] for b in batches]))
    return SourceData(
        root.name,
        classes,
        {"train": train, "test": _cifar_batch(root / "test_batch", len(classes))},
    )
