"""The YAML file format of a search space, validated with pydantic.

Kept apart from ``SearchSpace`` so the file format can grow versions while the
in-memory space stays one shape. Every error names the file and the field.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AllowInfNan,
    BaseModel,
    ConfigDict,
    Field,
    StrictFloat,
    StrictInt,
    ValidationError,
    field_validator,
)

from autocompress.files import path_exists, validation_problems
from autocompress.shipped import shipped_dir

VALID_BITS = (2, 3, 4, 5, 6, 7, 8, 32)


class SpaceError(ValueError):
    """A search space that cannot be loaded or does not fit the model."""


Number = StrictInt | Annotated[StrictFloat, AllowInfNan(False)]
Factor = Annotated[float, Field(gt=0, allow_inf_nan=False)]
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
    alpha: Factor = 1.2
    beta: Factor = 1.1
    gamma: Factor = 1.15
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
        if v is None:
            return v
        bad = [x for x in v if not finite(x)]
        if bad:
            raise ValueError(f"expected finite exponents, got {bad}")
        return _unique_sorted([float(x) for x in v])


def finite(x: int | float) -> bool:
    """Whether ``x`` is a finite number; an integer too large for a float is not."""
    try:
        return math.isfinite(x)
    except OverflowError:  # an integer beyond any float
        return False


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


def yaml_problem(exc: yaml.YAMLError) -> str:
    """A YAML error on one line: what is wrong and where (PyYAML's own text spans several, with a snippet)."""
    mark, problem = getattr(exc, "problem_mark", None), getattr(exc, "problem", None)
    if mark is None or problem is None:  # a character YAML does not allow: its text says which, and where
        return " ".join(str(exc).replace('in "<unicode string>",', "at").split())
    context = getattr(exc, "context", None)
    return " ".join(f"line {mark.line + 1}, column {mark.column + 1}: {problem}{f' ({context})' if context else ''}"
                    .split())


def load_yaml(path: Path, error: type[Exception]) -> Any:
    """The YAML value in the file at ``path``; every way it cannot be read is ``error`` naming the file."""
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise error(f"{path}: not UTF-8 text (byte {exc.start} is {exc.object[exc.start:exc.start + 1]!r})") from None
    except OSError as exc:
        raise error(f"{path}: cannot read the file: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise error(f"{path}: not valid YAML: {yaml_problem(exc)}") from None
    except RecursionError:
        raise error(f"{path}: not valid YAML: nested too deeply to read") from None
    except ValueError as exc:  # a number with more digits than Python converts
        raise error(f"{path}: not valid YAML: {exc}") from None


def read_spec(path_or_name: str | Path) -> tuple[SpaceSpec, str]:
    """Load a space file by path, or by name from the shipped ``search_spaces/``."""
    path = Path(path_or_name)
    if not path.suffix and not path_exists(path):
        path = shipped_spaces_dir() / f"{path_or_name}.yaml"
        if not path_exists(path):
            names = sorted(p.stem for p in shipped_spaces_dir().glob("*.yaml"))
            raise SpaceError(f"unknown search space {str(path_or_name)!r}; shipped spaces: {names}, or give a YAML path")
    if not path_exists(path):
        raise SpaceError(f"{path}: no such search-space file")
    if path.is_dir():
        raise SpaceError(f"{path}: a folder, not a search-space file")
    return parse_spec(load_yaml(path, SpaceError), str(path)), str(path)
