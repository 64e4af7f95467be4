"""CompressionPlan: the JSON that rebuilds one compressed model with no data and no training.

A plan holds what ``materialize`` needs besides the trained weights: the model
builder and its keyword arguments (a registered name from
:mod:`autocompress.models` or ``"package.module:callable"``), the input shape the
model graph is traced at, the search space as data (the spec itself, not a path
that may move) and the candidate. Like Torch-Pruning's pruning history it
replays onto a fresh model by module name: ``plan.build()`` builds the
uncompressed model with random weights and materializes the candidate on it.

Only the *structure* comes from the plan. Which channels pruning keeps, the
low-rank factors and the sparsity masks depend on the weights they are chosen
from, so the built model's values mean nothing until the member's saved state
dict is loaded: it overwrites every parameter and buffer (masks, activation
observers, BatchNorm statistics) with the values the exported model had.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import torch
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    PrivateAttr,
    ValidationError,
    field_validator,
)
from torch import nn

from autocompress.compress.materialize import materialize
from autocompress.files import read_json, validate_versioned, validation_problems, write_json
from autocompress.graph import GraphError, ModelGraph
from autocompress.models import ModelError, create_model
from autocompress.space import Candidate, CandidateError, SearchSpace, SpaceSpec

PLAN_SCHEMA_VERSION = 1
PLAN_NAME = "plan.json"
#: seed of the throw-away weights a plan builds on (kept off the caller's global RNG)
BUILD_SEED = 0


class PlanError(ValueError):
    """A plan file that cannot be read, or a plan that does not build; the message names the file and field."""


def _to_candidate(value: Any) -> Candidate:
    if isinstance(value, Candidate):
        return value
    try:
        return Candidate.from_dict(value)
    except CandidateError as exc:
        raise ValueError(str(exc)) from None


PlanCandidate = Annotated[Candidate, PlainValidator(_to_candidate),
                          PlainSerializer(lambda c: c.to_dict(), return_type=dict)]
Positive = Annotated[int, Field(ge=1)]


class ModelBuilder(BaseModel):
    """``create_model(name, **kwargs)``: how the uncompressed model is built."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Annotated[str, Field(min_length=1)]  # registered name or "package.module:callable"
    kwargs: dict[str, Any] = {}

    @field_validator("kwargs")
    @classmethod
    def _json_values(cls, v: dict[str, Any]) -> dict[str, Any]:
        try:
            return json.loads(json.dumps(v))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"keyword arguments must be JSON values: {exc}") from None


class CompressionPlan(BaseModel):
    """Builder + kwargs, input shape, space spec and candidate of one compressed model."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: Literal[1] = PLAN_SCHEMA_VERSION
    builder: ModelBuilder
    input_shape: tuple[Positive, Positive, Positive]  # (C, H, W) the graph is traced at (the reference's input)
    space: SpaceSpec
    space_source: str = ""  # where the spec was read from when the plan was made (for people; not read back)
    candidate: PlanCandidate
    _source: str = PrivateAttr(default="<plan>")

    @classmethod
    def create(cls, *, model: str, model_kwargs: Mapping[str, Any] | None = None, input_shape: Sequence[int],
               space: SearchSpace, candidate: Candidate) -> CompressionPlan:
        """The plan of ``candidate`` in ``space``; ``model``/``model_kwargs`` must build the space's model."""
        if candidate != space.identity():
            space.validate(candidate)
        try:
            return cls(builder=ModelBuilder(name=model, kwargs=dict(model_kwargs or {})),
                       input_shape=tuple(int(d) for d in input_shape), space=space.spec, space_source=space.source,
                       candidate=candidate)
        except ValidationError as exc:
            raise PlanError(f"<plan>: {validation_problems(exc)}") from None

    def build(self) -> nn.Module:
        """The compressed model in eval mode: the plan's structure on throw-away weights.

        Load the member's saved state dict into it (``load_state_dict``, strict)
        before using it; the build needs no data and trains nothing.
        """
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(BUILD_SEED)
            return self._build()

    def _build(self) -> nn.Module:
        where = self._source
        try:
            base = create_model(self.builder.name, **self.builder.kwargs).eval()
        except ModelError as exc:
            raise PlanError(f"{where}: field builder: {exc}") from None
        try:
            graph = ModelGraph.from_model(base, self.input_shape)
        except GraphError as exc:
            raise PlanError(f"{where}: field input_shape: {exc}") from None
        space = SearchSpace(graph, self.space, source=f"{where} (field space)")
        try:
            model = materialize(base, self.candidate, space)
        except CandidateError as exc:
            raise PlanError(f"{where}: field candidate: {exc}") from None
        return model.eval()

    # -- files -------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Atomic write, so an interrupted save never leaves half a plan."""
        return write_json(self.model_dump(mode="json"), path)

    @classmethod
    def load(cls, path: str | Path) -> CompressionPlan:
        return cls.from_data(read_json(path, what="plan", error=PlanError), str(path))

    @classmethod
    def from_data(cls, data: Any, source: str = "<plan>") -> CompressionPlan:
        plan = validate_versioned(data, cls, source=source, key="schema_version", expected=PLAN_SCHEMA_VERSION,
                                  error=PlanError, hint="not a plan, or written by another autocompress version")
        plan._source = source
        return plan


__all__ = ["PLAN_NAME", "PLAN_SCHEMA_VERSION", "CompressionPlan", "ModelBuilder", "PlanError"]
