"""What a data spec holds (name, image shape, class count), learned without loading the images.

A search checks its space, profile and budgets on an untrained model before it
trains the reference, and building that model needs only the input shape and
the class count. CIFAR-10 reads its class names; an image folder lists its
files and reads one image's header (unless a decoded cache exists); the rest
(mnist5k, digits, npz) load in well under a second and are simply loaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from autocompress.data.cifar10 import CIFAR_SHAPE, cifar10_folder
from autocompress.data.imagefolder import imagefolder_header
from autocompress.data.sources import load_source, spec_parts


@dataclass(frozen=True)
class DataInfo:
    """The part of a dataset a model is built for: what ``build_model`` reads from ``ImageData`` too."""

    name: str
    input_shape: tuple[int, int, int]
    num_classes: int


def probe_data(spec: str, *, cache_dir: str | Path | None = None) -> DataInfo:
    """Name, C x H x W and class count of ``spec``; a bad spec fails as ``load_data`` would (``DataError``)."""
    kind, arg = spec_parts(spec)
    cache = Path(cache_dir).expanduser() if cache_dir is not None else None
    if kind == "cifar10":
        root, _, classes = cifar10_folder(arg)
        return DataInfo(root.name, CIFAR_SHAPE, len(classes))
    if kind == "imagefolder" and (header := imagefolder_header(arg, cache_dir=cache)) is not None:
        return DataInfo(*header)
    src = load_source(spec, cache_dir=cache)
    c, h, w = src.splits["train"][0].shape[1:]
    return DataInfo(src.name, (int(c), int(h), int(w)), len(src.classes))
