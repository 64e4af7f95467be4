"""Candidate: one point of a joint compression space.

The same plain object travels from a strategy to the study to the exporter, so
it is JSON-first: ``to_dict``/``from_dict`` round-trip exactly, equality and
hashing go through the canonical JSON, and nothing in it refers to a model.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

Value = int | float

#: every per-layer dimension, in a fixed order; "keep" is stored on prune-group leaders only
DIMENSIONS = ("keep", "w_bits", "a_bits", "rank", "sparsity")
#: value of each dimension that leaves a layer untouched
IDENTITY = {"keep": 1.0, "w_bits": 32, "a_bits": 32, "rank": 1.0, "sparsity": 0.0}
SCALING_KEYS = ("depth", "width", "resolution")
#: "phi" is kept beside the multipliers it produced when the space uses compound scaling
SCALING_EXTRA = ("phi",)
#: value of each scaling key that leaves the model at its trained depth, width and input size
IDENTITY_SCALING = {"phi": 0.0, "depth": 1.0, "width": 1.0, "resolution": 1.0}


class CandidateError(ValueError):
    """A candidate that does not fit its space, or a malformed candidate file."""


def _clean(value: Any, where: str, integer: bool = False) -> Value:
    """Bit-widths are ints and everything else floats, so equal candidates hash equal."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise CandidateError(f"{where}: expected a number, got {value!r}")
    if integer:
        if not float(value).is_integer():
            raise CandidateError(f"{where}: expected an integer bit-width, got {value!r}")
        return int(value)
    return float(value)


class Candidate:
    """Per-layer choices (``layers[unit][dim]``) plus global scaling multipliers."""

    __slots__ = ("_layers", "_scaling", "_json")

    def __init__(self, layers: Mapping[str, Mapping[str, Value]], scaling: Mapping[str, Value] | None = None):
        cleaned: dict[str, dict[str, Value]] = {}
        for unit, dims in layers.items():
            if not isinstance(dims, Mapping):
                raise CandidateError(f"layers.{unit}: expected a mapping of dimension -> value")
            unknown = set(dims) - set(DIMENSIONS)
            if unknown:
                raise CandidateError(f"layers.{unit}: unknown dimension(s) {sorted(unknown)}; known: {DIMENSIONS}")
            cleaned[unit] = {
                d: _clean(dims[d], f"layers.{unit}.{d}", integer=d.endswith("bits")) for d in DIMENSIONS if d in dims
            }
        scale = {k: IDENTITY_SCALING[k] for k in SCALING_KEYS}
        for key, value in (scaling or {}).items():
            if key not in SCALING_KEYS + SCALING_EXTRA:
                raise CandidateError(f"scaling.{key}: unknown key; known: {SCALING_KEYS + SCALING_EXTRA}")
            scale[key] = _clean(value, f"scaling.{key}")
        self._layers = cleaned
        self._scaling = scale
        self._json = json.dumps({"layers": cleaned, "scaling": scale}, sort_keys=True, separators=(",", ":"))

    # -- access -------------------------------------------------------------------
    @property
    def layers(self) -> Mapping[str, Mapping[str, Value]]:
        return {u: dict(d) for u, d in self._layers.items()}

    @property
    def scaling(self) -> Mapping[str, float]:
        return dict(self._scaling)

    def get(self, unit: str, dim: str) -> Value:
        """The unit's value, or the identity value when the dimension does not apply to it."""
        return self._layers.get(unit, {}).get(dim, IDENTITY[dim])

    @property
    def depth(self) -> float:
        return self._scaling["depth"]

    @property
    def width(self) -> float:
        return self._scaling["width"]

    @property
    def resolution(self) -> float:
        return self._scaling["resolution"]

    # -- serialisation --------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return json.loads(self._json)

    def to_json(self) -> str:
        return self._json

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Candidate:
        if not isinstance(data, Mapping) or "layers" not in data:
            raise CandidateError("a candidate is a mapping with 'layers' (and optionally 'scaling')")
        return cls(data["layers"], data.get("scaling"))

    @classmethod
    def from_json(cls, text: str) -> Candidate:
        try:
            return cls.from_dict(json.loads(text))
        except json.JSONDecodeError as exc:
            raise CandidateError(f"candidate JSON is malformed: {exc}") from exc

    def flat(self) -> dict[str, Value]:
        """``{"unit:dim": value, "scaling:key": value}``: the form samplers store."""
        out: dict[str, Value] = {f"{u}:{d}": v for u, dims in self._layers.items() for d, v in dims.items()}
        out.update({f"scaling:{k}": v for k, v in self._scaling.items()})
        return out

    @classmethod
    def from_flat(cls, flat: Mapping[str, Value]) -> Candidate:
        layers: dict[str, dict[str, Value]] = {}
        scaling: dict[str, Value] = {}
        for key, value in flat.items():
            owner, _, dim = key.rpartition(":")
            if not owner:
                raise CandidateError(f"flat key {key!r}: expected 'unit:dimension' or 'scaling:key'")
            if owner == "scaling":
                scaling[dim] = value
            else:
                layers.setdefault(owner, {})[dim] = value
        return cls(layers, scaling)

    @property
    def key(self) -> str:
        """Short stable digest, for file names and caches."""
        return hashlib.sha1(self._json.encode()).hexdigest()[:12]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Candidate) and other._json == self._json

    def __hash__(self) -> int:
        return hash(self._json)

    def __repr__(self) -> str:
        return f"Candidate({len(self._layers)} layers, scaling={self._scaling}, key={self.key})"
