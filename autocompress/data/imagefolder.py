"""The ``imagefolder:PATH`` source: a folder or .zip of images in ImageFolder layout, decoded with PIL.

``<root>/<class>/<image>`` (val and test carved later) or
``<root>/{train,val,test}/<class>/<image>``; a single wrapping folder, as zips
of a folder have, is looked through. Decoded images can be cached as .npz,
keyed by every file's path, size and modification time.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import re
import stat
import time
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from autocompress.data.base import ZIP_ERRORS, DataError, SourceData, Split, existing_path

logger = logging.getLogger(__name__)

Groups = dict[str, dict[str, list[PurePosixPath]]]  # image files by split, then class

IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
)
_CACHE_VERSION = "imagefolder-v1"
_GREY_MODES = ("1", "L", "LA", "I", "I;16", "F")  # PIL modes decoded as one channel
_DRIVE = re.compile(r"^[A-Za-z]:")  # a Windows drive, as in C:/evil.png


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


def _layout(files: list[PurePosixPath], label: str) -> Groups:
    """Group files as {split: {class: [files]}}; split "train" alone means "carve the rest"."""
    skip = 0
    tops = {f.parts[0] for f in files if len(f.parts) > 1}
    if len(tops) == 1 and all(len(f.parts) >= 3 for f in files):
        skip = 1  # a single wrapping folder (typical zip of a folder): look inside it
        tops = {f.parts[1] for f in files}
    split_layout = "train" in tops and ("test" in tops or "val" in tops)
    groups: Groups = {}
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
            gray = im.mode in _GREY_MODES
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


def _imagefolder_path(arg: str, cache_dir: Path | None) -> tuple[Path, str, Path | None]:
    """The folder or zip, the dataset's name and its decoded cache file (None: no cache)."""
    path = existing_path(
        arg, "imagefolder", "a folder or .zip of <class>/<image> or {train,test}/<class>/<image>"
    )
    name = path.name[:-4] if path.name.lower().endswith(".zip") else path.name
    cache_file = None if cache_dir is None else Path(cache_dir) / f"imagefolder-{name}-{_cache_key(path)}.npz"
    return path, name, cache_file


@contextmanager
def _imagefolder_files(
    path: Path, label: str
) -> Iterator[tuple[Groups, Callable[[PurePosixPath], bytes]]]:
    """The files grouped by split and class, and a reader of one file's bytes."""
    if path.is_dir():
        files = _image_members([p.relative_to(path).as_posix() for p in path.rglob("*")])
        yield _layout(files, label), lambda f: (path / f).read_bytes()
        return
    try:
        zf = zipfile.ZipFile(path)
    except ZIP_ERRORS as exc:
        raise DataError(f"{label}: not a readable folder or .zip file ({exc})") from exc
    with zf:
        members = _zip_members(zf, label)
        files = _image_members([m.filename for m in members.values()])
        yield _layout(files, label), lambda f: _read_member(zf, members[f], label)


def _zip_members(zf: zipfile.ZipFile, label: str) -> dict[PurePosixPath, zipfile.ZipInfo]:
    """The zip's entries by path, once every entry is known safe: nothing is read or decoded before.

    An entry that would land outside the archive's folder if extracted (``..``,
    an absolute or drive path, with either slash), a symbolic link, or a path
    given twice (which of the two is the image?) refuses the whole zip.
    """
    members: dict[PurePosixPath, zipfile.ZipInfo] = {}
    for info in zf.infolist():
        name = info.filename
        parts = PurePosixPath(name.replace("\\", "/")).parts
        if name.startswith(("/", "\\")) or ".." in parts or (parts and _DRIVE.match(parts[0])):
            raise DataError(f"{label}: entry {name!r} points outside the archive (an absolute or '..' path); "
                            "refusing the zip")
        if stat.S_ISLNK(info.external_attr >> 16):
            raise DataError(f"{label}: entry {name!r} is a symbolic link; expected image files and folders only")
        path = PurePosixPath(name)
        if path in members:
            first = members[path].filename
            twice = "twice" if first == name else f"twice (as {first!r} and {name!r})"
            raise DataError(f"{label}: the zip holds {name!r} {twice}; expected each path once")
        members[path] = info
    return members


def _read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, label: str) -> bytes:
    """One entry's bytes; a damaged, encrypted or unsupported entry is a DataError naming it."""
    try:
        return zf.read(info)
    except ZIP_ERRORS as exc:
        raise DataError(f"{label}: cannot read entry {info.filename!r} ({exc})") from exc


def imagefolder_header(arg: str, *, cache_dir: Path | None = None) -> tuple[str, tuple[int, int, int], int] | None:
    """(name, C x H x W, classes) from the layout and the first image's header; None when a decoded cache
    exists (loading it is as cheap). C is the first image's: a folder that mixes grey and colour images
    decodes to 3 channels."""
    path, name, cache_file = _imagefolder_path(arg, cache_dir)
    if cache_file is not None and cache_file.exists():
        return None
    from PIL import Image

    label = f"imagefolder:{arg}"
    with _imagefolder_files(path, label) as (groups, read):
        first = next(f for per_class in groups["train"].values() for f in per_class)
        try:
            with Image.open(io.BytesIO(read(first))) as im:  # reads the header, decodes nothing
                width, height = im.size
                channels = 1 if im.mode in _GREY_MODES else 3
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
            raise DataError(f"{label}: cannot read image {first}: {exc}") from exc
    return name, (channels, height, width), len(groups["train"])


def imagefolder(arg: str, *, cache_dir: Path | None = None) -> SourceData:
    """A folder or .zip in ImageFolder layout, decoded with PIL; cached as .npz if asked."""
    path, name, cache_file = _imagefolder_path(arg, cache_dir)
    label = f"imagefolder:{arg}"
    if cache_file is not None and cache_file.exists() and (cached := _read_cache(cache_file)) is not None:
        logger.info("%s: loaded decoded images from cache %s", label, cache_file)
        return cached
    t0 = time.perf_counter()
    with _imagefolder_files(path, label) as (groups, read):
        src = _build_imagefolder(name, groups, read, label)
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
    groups: Groups,
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
