"""Where the data folders that ship with autocompress live.

``search_spaces/`` and ``hw_profiles/`` sit at the top of a source checkout;
a wheel carries copies under ``autocompress/_shipped/`` (see pyproject.toml).
"""

from __future__ import annotations

from pathlib import Path


def shipped_dir(name: str) -> Path | None:
    """The shipped folder ``name`` (``search_spaces`` or ``hw_profiles``), or None if absent."""
    package = Path(__file__).resolve().parent
    for candidate in (package / "_shipped" / name, package.parent / name):
        if candidate.is_dir():
            return candidate
    return None
