"""The YAML file format of a search space, validated with pydantic.

Kept apart from ``SearchSpace`` so the file format can grow versions while the
in-memory space stays one shape. Every error names the file and the field.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictFloat,
    StrictInt,
    ValidationError,
    field_validator,
)

from autocompress.files import validation_problems
from autocompress.shipped import shipped_dir

VALID_BITS = (2, 3, 4, 5, 6, 7, 8, 32)


class SpaceError(ValueError):
    """A search space that cannot be loaded or does not fit the model."""


Number = StrictInt | StrictFloat
Choices = Annotated[list[Number], Field(min_length=1)]
BitChoices = Annotated[list[StrictInt], Field(min_length=1)]


def _unique_sorted(values: list) -> list:
    if len(set(values)) != len(values):
        raise ValueError(f"choices repeat a value: {values}")
    return sorted(values)


class DimensionChoices(BaseModel):
    """Choices for each per-layer dimension; a missing one means "leave unchanged"."""

    model_config = ConfigDict(extra="forbid")

    keep: Choices | None = None
    w_bits: BitChoices | None = None
    a_bits: BitChoices | None = None
    rank: Choices | None = None
    sparsity: Choices | None = None

    @field_validator("keep", "rank")
    @classmethod
    def _ratio(cls, v: list | None) -> list | None:
        if v is None:
            return v
        bad = [x for x in v if not 0.0 < x <= 1.0]
        if bad:
            raise ValueError(f"expected ratios in (0, 1], got {bad}")
        return _unique_sorted([float(x) for x in v])

    @field_validator("sparsity")
    @classmethod
    def _fraction(cls, v: list | None) -> list | None:
        if v is None:
            return v
        bad = [x for x in v if not 0.0 <= x < 1.0]
        if bad:
            raise ValueError(f"expected fractions of weights zeroed in [0, 1), got {bad}")
        return _unique_sorted([float(x) for x in v])

    @field_validator("w_bits", "a_bits")
    @classmethod
    def _bits(cls, v: list | None) -> list | None:
        if v is None:
            return v
        bad = [x for x in v if x not in VALID_BITS]
        if bad:
            raise ValueError(f"expected bit-widths in 2..8 or 32 (32 = not quantized), got {bad}")
        return _unique_sorted(v)

    def given(self) -> dict[str, list]:
        return {k: v for k, v in self.model_dump().items() if v is not None}


class Override(DimensionChoices):
    """Choices for the layers whose names match ``match`` (glob patterns or selectors)."""

    match: str | Annotated[list[str], Field(min_length=1)]

    def patterns(self) -> list[str]:
        return [self.match] if isinstance(self.match, str) else list(self.match)


class ScalingSpec(BaseModel):
    """EfficientNet compound scaling (phi with alpha, beta, gamma) or explicit multipliers."""

    model_config = ConfigDict(extra="forbid")

    mode: Literal["none", "compound", "explicit"] = "none"
    phi: Choices | None = None
    alpha: Annotated[float, Field(gt=0)] = 1.2
    beta: Annotated[float, Field(gt=0)] = 1.1
    gamma: Annotated[float, Field(gt=0)] = 1.15
    depth: Choices | None = None
    width: Choices | None = None
    resolution: Choices | None = None

    @field_validator("depth", "width")
    @classmethod
    def _shrink_only(cls, v: list | None) -> list | None:
        if v is None:
            return v
        bad = [x for x in v if not 0.0 < x <= 1.0]
        if bad:
            raise ValueError(f"expected multipliers in (0, 1] (a trained model can be thinned, not widened), got {bad}")
        return _unique_sorted([float(x) for x in v])

    @field_validator("resolution")
    @classmethod
    def _positive(cls, v: list | None) -> list | None:
        if v is None:
            return v
        bad = [x for x in v if not 0.0 < x <= 4.0]
        if bad:
            raise ValueError(f"expected resolution multipliers in (0, 4], got {bad}")
        return _unique_sorted([float(x) for x in v])

    @field_validator("phi")
    @classmethod
    def _phi(cls, v: list | None) -> list | None:
        return None if v is None else _unique_sorted([float(x) for x in v])


class SpaceSpec(BaseModel):
    """One ``search_spaces/*.yaml`` file."""

    model_config = ConfigDict(extra="forbid")

    version: Literal[1] = 1
    name: str
    description: str = ""
    defaults: DimensionChoices = DimensionChoices()
    overrides: list[Override] = []
    scaling: ScalingSpec = ScalingSpec()
    channel_divisor: Annotated[int, Field(ge=1)] = 1


def parse_spec(data: Any, source: str) -> SpaceSpec:
    if not isinstance(data, dict):
        raise SpaceError(f"{source}: expected a mapping at the top level, got {type(data).__name__}")
    try:
        return SpaceSpec.model_validate(data)
    except ValidationError as exc:
        raise SpaceError(f"{source}: {validation_problems(exc)}") from None


def shipped_spaces_dir() -> Path:
    folder = shipped_dir("search_spaces")
    if folder is None:
        raise SpaceError("no search_spaces/ folder found beside the autocompress package")
    return folder


def read_spec(path_or_name: str | Path) -> tuple[SpaceSpec, str]:
    """Load a space file by path, or by name from the shipped ``search_spaces/``."""
    path = Path(path_or_name)
    if not path.suffix and not path.exists():
        path = shipped_spaces_dir() / f"{path_or_name}.yaml"
        if not path.exists():
            names = sorted(p.stem for p in shipped_spaces_dir().glob("*.yaml"))
            raise SpaceError(f"unknown search space {str(path_or_name)!r}; shipped spaces: {names}, or give a YAML path")
    if not path.exists():
        raise SpaceError(f"{path}: no such search-space file")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise SpaceError(f"{path}: not valid YAML: {exc}") from None
    return parse_spec(data, str(path)), str(path)
