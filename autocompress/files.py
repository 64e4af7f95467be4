"""Reading and writing the JSON files autocompress keeps (plans, manifests), with errors that name file and field."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

Model = TypeVar("Model", bound=BaseModel)


def path_exists(path: str | Path) -> bool:
    """Whether ``path`` exists; a name the system cannot look up (too long, a NUL byte) does not."""
    try:
        return Path(path).exists()
    except (OSError, ValueError):
        return False


def read_json(path: str | Path, *, what: str, error: type[Exception]) -> Any:
    """The JSON value in ``path``; ``error`` names the file when it is missing, unreadable or not JSON."""
    path = Path(path)
    if not path_exists(path) or not path.is_file():  # path_exists first: a name too long for is_file() to look up
        raise error(f"{path}: no such {what} file")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise error(f"{path}: not valid JSON (truncated or corrupted?): {exc}") from None
    except UnicodeDecodeError as exc:
        raise error(f"{path}: not UTF-8 JSON (byte {exc.start} is {exc.object[exc.start:exc.start + 1]!r})"
                    ) from None
    except OSError as exc:  # a folder, a file it may not read
        raise error(f"{path}: cannot read the {what} file: {exc.strerror or exc}") from None
    except RecursionError:
        raise error(f"{path}: not valid JSON: nested too deeply to read") from None
    except ValueError as exc:  # a number with more digits than Python converts
        raise error(f"{path}: not valid JSON: {exc}") from None


def content_key(record: Any) -> str:
    """A short digest of a JSON-able record: what a cache entry is named by, so that the same inputs find it."""
    return hashlib.sha1(json.dumps(record, sort_keys=True, default=str).encode()).hexdigest()[:16]


def replace_atomically(path: str | Path, write: Callable[[Path], Any]) -> Path:
    """``write(tmp)`` to a file of its own beside ``path``, then renamed onto it: a reader never sees half a file,
    an interrupted write leaves none, and writers of the same file at once (two workers caching the same base
    model) each rename their own whole file, the last one winning."""
    path = Path(path)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f"{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_json(data: Any, path: str | Path) -> Path:
    """Atomic write, so an interrupted save never leaves half a file."""
    text = json.dumps(data, indent=1) + "\n"
    return replace_atomically(path, lambda tmp: tmp.write_text(text))


def validation_problems(exc: ValidationError, *, limit: int = 10) -> str:
    """A pydantic error as ``field a.b[0]: message (got value); ...``."""
    problems = []
    for err in exc.errors()[:limit]:
        loc = ""
        for part in err["loc"]:
            loc += f"[{part}]" if isinstance(part, int) else (f".{part}" if loc else str(part))
        got = err.get("input")
        shown = "" if isinstance(got, dict | list) else f" (got {got!r})"
        problems.append(f"field {loc or '(top level)'}: {err['msg']}{shown}")
    more = f"; and {len(exc.errors()) - limit} more" if len(exc.errors()) > limit else ""
    return "; ".join(problems) + more


def validate_versioned(data: Any, model: type[Model], *, source: str, key: str, expected: Any,
                       error: type[Exception], hint: str) -> Model:
    """``data`` (a file's JSON) as ``model``, once its version field ``key`` is ``expected``.

    The version is checked first so that a file of another kind or release is
    named as such instead of listing every field it lacks.
    """
    if not isinstance(data, dict):
        raise error(f"{source}: expected a JSON object at the top level")
    if data.get(key) != expected:
        raise error(f"{source}: field {key}: expected {expected!r}, got {data.get(key)!r} ({hint})")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise error(f"{source}: {validation_problems(exc)}") from None
