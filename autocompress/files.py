"""Reading and writing the JSON files autocompress keeps (plans, manifests), with errors that name file and field."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from pydantic import ValidationError


def read_json(path: str | Path, *, what: str, error: type[Exception]) -> Any:
    """The JSON value in ``path``; ``error`` names the file when it is missing or not JSON."""
    path = Path(path)
    if not path.is_file():
        raise error(f"{path}: no such {what} file")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise error(f"{path}: not valid JSON (truncated or corrupted?): {exc}") from None


def write_json(data: Any, path: str | Path) -> Path:
    """Atomic write, so an interrupted save never leaves half a file."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    os.replace(tmp, path)
    return path


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
