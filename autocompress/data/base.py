"""What every data source returns and raises: uint8 NCHW splits, class names, a :class:`DataError`.

A source only reads and validates; it never carves splits or normalises. It hands
back the splits it *has* (``train`` always; ``val``/``test`` when the source ships
them) and :func:`autocompress.data.load_data` carves the rest, seeded. Keeping the
sources this dumb means a new source is one function plus one registry entry
(:data:`autocompress.data.sources.SOURCES`).

Every failure is a :class:`DataError` naming the spec or file and what was expected,
because bad input must get a clear error (DESIGN.md, "Contracts worth keeping").
"""

from __future__ import annotations

import lzma
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

Split = tuple[np.ndarray, np.ndarray]  # (x uint8 N x C x H x W, y int64 N)


class DataError(ValueError):
    """Bad data spec or unreadable / invalid data file; the message says which and why."""


#: what opening or reading a damaged zip (an image zip, an .npz) raises: a bad header or CRC, a truncated or
#: corrupt stream, a compression method that is not supported, an encrypted entry (RuntimeError)
ZIP_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, lzma.LZMAError, EOFError, OSError,
              NotImplementedError, RuntimeError, ValueError)


@dataclass
class SourceData:
    """What a source returns: its name, class names and the splits it ships."""

    name: str
    classes: list[str]
    splits: dict[str, Split] = field(default_factory=dict)  # keys within {"train", "val", "test"}


def existing_path(arg: str, kind: str, expected: str) -> Path:
    """The path of a ``kind:PATH`` spec, which must exist; ``expected`` says what it should be."""
    if not arg:
        raise DataError(f"data spec {kind!r} needs a path: {kind}:PATH ({expected})")
    try:
        path = Path(arg).expanduser()
        found = path.exists()
    except (OSError, RuntimeError, ValueError):  # a name too long to look up, ~user unknown, a NUL byte
        found = False
    if not found:
        raise DataError(f"{kind}:{arg}: no such file or directory (expected {expected})")
    return path
