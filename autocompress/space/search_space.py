"""SearchSpace: the per-layer choices and global scaling a model may take.

Built from a ``ModelGraph`` and a YAML spec. It is the only place that turns a
Candidate into concrete layer shapes (``layer_configs``), so the transforms that
build a model and the cost model that never builds one agree by construction.
"""

from __future__ import annotations

import fnmatch
import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from autocompress.graph import ModelGraph, kept_channels
from autocompress.space.candidate import (
    DIMENSIONS,
    IDENTITY,
    IDENTITY_SCALING,
    SCALING_KEYS,
    Candidate,
    CandidateError,
)
from autocompress.space.encoding import Encoding
from autocompress.space.spec import SpaceError, SpaceSpec, parse_spec, read_spec

SELECTORS = {
    "@first": "the first layer the input reaches",
    "@last": "the last layer (the classifier)",
    "@depthwise": "depthwise convolutions",
    "@conv": "all convolutions",
    "@linear": "all linear layers",
}


@dataclass(frozen=True)
class LayerConfig:
    """A unit as a candidate leaves it: what a cost table needs to price it."""

    name: str
    op: str
    in_channels: int
    out_channels: int
    kernel_size: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    groups: int
    in_hw: tuple[int, int]
    out_hw: tuple[int, int]
    w_bits: int
    a_bits: int
    rank: int | None  # None: not factorized
    sparsity: float

    @property
    def dense_macs(self) -> int:
        kh, kw = self.kernel_size
        positions = self.out_hw[0] * self.out_hw[1]
        if self.rank is None:
            return self.out_channels * (self.in_channels // self.groups) * kh * kw * positions
        return self.rank * (self.in_channels * kh * kw + self.out_channels) * positions

    @property
    def weight_params(self) -> int:
        kh, kw = self.kernel_size
        if self.rank is None:
            return self.out_channels * (self.in_channels // self.groups) * kh * kw
        return self.rank * (self.in_channels * kh * kw + self.out_channels)


def full_rank(in_channels: int, out_channels: int, kernel_size: tuple[int, int], groups: int = 1) -> int:
    return min(out_channels, (in_channels // groups) * kernel_size[0] * kernel_size[1])


def rank_for(ratio: float, in_channels: int, out_channels: int, kernel_size: tuple[int, int]) -> int | None:
    """Integer rank for a ratio of the layer's full rank; None when it stays unfactorized."""
    if ratio >= 1.0:
        return None
    return max(1, int(round(ratio * full_rank(in_channels, out_channels, kernel_size))))


class SearchSpace:
    """Per-unit choices (``choices[unit][dim]``) plus scaling choices for one model graph."""

    def __init__(self, graph: ModelGraph, spec: SpaceSpec, source: str = "<space>"):
        self.graph = graph
        self.spec = spec
        self.source = source
        self.name = spec.name
        self.channel_divisor = spec.channel_divisor
        self.choices = self._resolve_choices()
        self.scaling_choices = self._resolve_scaling()

    # -- construction -------------------------------------------------------------
    @classmethod
    def from_yaml(cls, graph: ModelGraph, path_or_name: str | Path) -> SearchSpace:
        spec, source = read_spec(path_or_name)
        return cls(graph, spec, source)

    @classmethod
    def from_dict(cls, graph: ModelGraph, data: Mapping, source: str = "<dict>") -> SearchSpace:
        return cls(graph, parse_spec(dict(data), source), source)

    def _match(self, pattern: str, field: str) -> set[str]:
        units = self.graph.units.values()
        if pattern.startswith("@"):
            if pattern not in SELECTORS:
                raise SpaceError(f"{self.source}: field {field}: unknown selector {pattern!r}; known: {sorted(SELECTORS)}")
            picked = {
                "@first": lambda u: u.name == self.graph.first_unit(),
                "@last": lambda u: u.name == self.graph.last_unit(),
                "@depthwise": lambda u: u.depthwise,
                "@conv": lambda u: u.op == "conv",
                "@linear": lambda u: u.op == "linear",
            }[pattern]
            return {u.name for u in units if picked(u)}
        return {u.name for u in units if fnmatch.fnmatchcase(u.name, pattern)}

    def _resolve_choices(self) -> dict[str, dict[str, tuple]]:
        defaults = {d: [IDENTITY[d]] for d in DIMENSIONS} | self.spec.defaults.given()
        per_unit = {name: dict(defaults) for name in self.graph.units}
        for i, override in enumerate(self.spec.overrides):
            given = override.given()
            matched: set[str] = set()
            for pattern in override.patterns():
                hit = self._match(pattern, f"overrides[{i}].match")
                if not hit:
                    names = ", ".join(sorted(self.graph.units)[:12])
                    raise SpaceError(
                        f"{self.source}: field overrides[{i}].match: pattern {pattern!r} matches no layer "
                        f"of the model (layers: {names}{', ...' if len(self.graph.units) > 12 else ''})"
                    )
                matched |= hit
            for name in matched:
                per_unit[name].update(given)

        choices: dict[str, dict[str, tuple]] = {}
        for name, unit in self.graph.units.items():
            dims = per_unit[name]
            out = {d: tuple(dims[d]) for d in ("w_bits", "a_bits", "sparsity")}
            if not (unit.depthwise or unit.grouped) and full_rank(unit.in_channels, unit.out_channels, unit.kernel_size) > 1:
                out["rank"] = tuple(dims["rank"])
            choices[name] = out
        for group in self.graph.prunable_groups:
            common = set(per_unit[group.out_units[0]]["keep"])
            for member in group.out_units[1:]:
                common &= set(per_unit[member]["keep"])
            if not common:
                raise SpaceError(
                    f"{self.source}: the layers {list(group.out_units)} share output channels (one prune group) "
                    f"but their 'keep' choices have no value in common"
                )
            choices[group.leader] = {"keep": tuple(sorted(common))} | choices[group.leader]
        return choices

    def _resolve_scaling(self) -> dict[str, tuple]:
        s = self.spec.scaling
        if s.mode == "none":
            if any(v is not None for v in (s.phi, s.depth, s.width, s.resolution)):
                raise SpaceError(f"{self.source}: field scaling.mode: 'none' but scaling choices are given; "
                                 "set mode: compound or explicit")
            return {}
        if s.mode == "compound":
            if s.phi is None or any(v is not None for v in (s.depth, s.width, s.resolution)):
                raise SpaceError(f"{self.source}: field scaling: compound mode takes 'phi' choices (with alpha, "
                                 "beta, gamma), not explicit depth/width/resolution")
            for phi in s.phi:  # compared as logarithms: a large |phi| overflows the powers themselves
                if phi * math.log(s.alpha) > 1e-9 or phi * math.log(s.beta) > 1e-9:
                    raise SpaceError(f"{self.source}: field scaling.phi: phi={phi} would deepen or widen a trained "
                                     "model (alpha**phi or beta**phi > 1); use phi <= 0")
                if phi * math.log(s.gamma) > math.log(4.0) or 0.0 in (s.alpha ** phi, s.beta ** phi, s.gamma ** phi):
                    raise SpaceError(f"{self.source}: field scaling.phi: phi={phi} takes a multiplier out of range "
                                     "(gamma**phi must be in (0, 4], alpha**phi and beta**phi above 0)")
            out = {"phi": tuple(s.phi)}
            wants_resolution = s.gamma != 1.0 and any(phi != 0 for phi in s.phi)
        else:
            if s.phi is not None:
                raise SpaceError(f"{self.source}: field scaling.phi: only used with mode: compound")
            out = {k: tuple(v) for k, v in (("depth", s.depth), ("width", s.width), ("resolution", s.resolution)) if v}
            wants_resolution = any(r != 1.0 for r in out.get("resolution", ()))
        if wants_resolution and not self.graph.supports_resolution:
            raise SpaceError(f"{self.source}: field scaling: the model only runs at input size "
                             f"{self.graph.input_shape[1:]}, so the resolution cannot be scaled "
                             "(set gamma: 1.0 or resolution: [1.0])")
        if len(out.get("depth", ())) > 1 and any(b.droppable for b in self.graph.blocks):
            same: dict[tuple[str, ...], list[float]] = {}
            for depth in out["depth"]:
                same.setdefault(tuple(self.graph.dropped_blocks(depth)), []).append(depth)
            repeated = [(dropped, values) for dropped, values in same.items() if len(values) > 1]
            if repeated:  # the search would spend trials on one model under two names
                dropped, values = repeated[0]
                droppable = sum(b.droppable for b in self.graph.blocks)
                raise SpaceError(f"{self.source}: field scaling.depth: {' and '.join(map(str, values))} keep the "
                                 f"same blocks of this model: each drops {len(dropped)} of its {droppable} droppable "
                                 "blocks (a stage of n blocks keeps ceil(depth * n)); give depths that keep "
                                 "different counts")
        if "depth" in out or "phi" in out:
            if not any(b.droppable for b in self.graph.blocks) and (
                any(d < 1 for d in out.get("depth", ())) or (s.alpha != 1.0 and any(p < 0 for p in out.get("phi", ())))
            ):
                raise SpaceError(f"{self.source}: field scaling: depth scaling needs residual blocks inside "
                                 "nn.Sequential stages and this model has none (set alpha: 1.0 or depth: [1.0])")
        return out

    # -- scaling ------------------------------------------------------------------
    def multipliers(self, phi: float) -> dict[str, float]:
        s = self.spec.scaling
        return {"phi": phi, "depth": s.alpha ** phi, "width": s.beta ** phi, "resolution": s.gamma ** phi}

    def scaling_for(self, picked: Mapping[str, float]) -> dict[str, float]:
        if "phi" in self.scaling_choices:
            return self.multipliers(picked["phi"])
        return {k: picked.get(k, IDENTITY_SCALING[k]) for k in SCALING_KEYS}

    def uniform_scalings(self) -> list[dict[str, float]]:
        """Every scaling the space offers, as keywords of :meth:`uniform`, the least scaled first.

        Compound mode: each phi. Explicit mode: every combination of the depth, width and resolution choices,
        ordered by the share of MACs they keep (depth x width² x resolution²), since none of them alone says how
        small a model is. ``[{}]`` where nothing scales. What warm starts, anchors and uniform baselines walk.
        """
        if "phi" in self.scaling_choices:
            return [{"phi": phi} for phi in sorted(self.scaling_choices["phi"], reverse=True)]
        keys = [k for k in ("depth", "width", "resolution") if k in self.scaling_choices]
        combos = [dict(zip(keys, values, strict=True))
                  for values in itertools.product(*(self.scaling_choices[k] for k in keys))]

        def kept(c: dict[str, float]) -> tuple:
            share = c.get("depth", 1.0) * c.get("width", 1.0) ** 2 * c.get("resolution", 1.0) ** 2
            return (-share, *(-c[k] for k in keys))

        return sorted(combos, key=kept) or [{}]

    def input_resolution(self, candidate: Candidate) -> tuple[int, int]:
        _, h, w = self.graph.input_shape
        r = candidate.resolution
        return (h, w) if r == 1.0 else (max(1, round(h * r)), max(1, round(w * r)))

    # -- candidates ---------------------------------------------------------------
    @cached_property
    def encoding(self) -> Encoding:
        """The candidates as rows of choice indices: what the cost model and layer-wise strategies compute on."""
        return Encoding(space=self)

    def sample(self, rng: np.random.Generator | int) -> Candidate:
        """One candidate drawn uniformly, choice by choice."""
        return self.encoding.decode(self.encoding.random(1, rng)[0])

    def choice_values(self, dim: str) -> list:
        """Every value some unit may take for ``dim``, ascending (empty where no unit has the dimension)."""
        return sorted({v for dims in self.choices.values() for v in dims.get(dim, ())})

    def uniform(self, **values: float) -> Candidate:
        """The same value for a dimension everywhere it is free (closest allowed choice elsewhere).

        Keyword names are dimensions (``keep=0.5, w_bits=8``) or scaling keys
        (``phi=-1`` or ``depth=0.5``); unnamed ones take their identity value.
        """
        unknown = set(values) - set(DIMENSIONS) - set(IDENTITY_SCALING)
        if unknown:
            raise CandidateError(f"uniform(): unknown dimension(s) {sorted(unknown)}")

        def closest(options: tuple, want: float) -> float:
            return min(options, key=lambda o: (abs(o - want), -o))

        layers = {
            u: {d: closest(c, values.get(d, IDENTITY[d])) for d, c in dims.items()}
            for u, dims in self.choices.items()
        }
        picked = {k: closest(c, values.get(k, IDENTITY_SCALING[k])) for k, c in self.scaling_choices.items()}
        return Candidate(layers, self.scaling_for(picked))

    def identity(self) -> Candidate:
        """The uncompressed reference, whether or not the space contains it."""
        layers = {u: {d: IDENTITY[d] for d in dims} for u, dims in self.choices.items()}
        return Candidate(layers, IDENTITY_SCALING if "phi" in self.scaling_choices else None)

    def validate(self, candidate: Candidate) -> Candidate:
        """Raise CandidateError naming every value that is not a choice of this space."""
        problems = []
        layers = candidate.layers
        for unit in sorted(set(layers) - set(self.choices)):
            problems.append(f"layers.{unit}: not a layer of this model")
        for unit, dims in self.choices.items():
            got = layers.get(unit, {})
            for dim, options in dims.items():
                if dim not in got:
                    problems.append(f"layers.{unit}.{dim}: missing (choices {list(options)})")
                elif not any(math.isclose(got[dim], o) for o in options):
                    problems.append(f"layers.{unit}.{dim}: {got[dim]} is not one of {list(options)}")
            for dim in set(got) - set(dims):
                problems.append(f"layers.{unit}.{dim}: this dimension does not apply to {unit}")
        scaling = candidate.scaling
        if "phi" in self.scaling_choices:
            phi = candidate.to_dict()["scaling"].get("phi")
            if phi is None or not any(math.isclose(phi, o) for o in self.scaling_choices["phi"]):
                problems.append(f"scaling.phi: {phi} is not one of {list(self.scaling_choices['phi'])}")
            else:
                for key, want in self.multipliers(phi).items():
                    if key != "phi" and not math.isclose(scaling[key], want, rel_tol=1e-6):
                        problems.append(f"scaling.{key}: {scaling[key]} does not follow from phi={phi} ({want})")
        else:
            for key in SCALING_KEYS:
                options = self.scaling_choices.get(key, (IDENTITY_SCALING[key],))
                if not any(math.isclose(scaling[key], o) for o in options):
                    problems.append(f"scaling.{key}: {scaling[key]} is not one of {list(options)}")
        if problems:
            raise CandidateError("candidate does not fit the space: " + "; ".join(problems))
        return candidate

    def contains(self, candidate: Candidate) -> bool:
        try:
            self.validate(candidate)
        except CandidateError:
            return False
        return True

    def log10_size(self) -> float:
        total = sum(math.log10(len(c)) for dims in self.choices.values() for c in dims.values())
        return total + sum(math.log10(len(c)) for c in self.scaling_choices.values())

    # -- concrete shapes ------------------------------------------------------------
    def group_channels(self, candidate: Candidate) -> dict[str, int]:
        """Channels each prunable group keeps: keep ratio x width, rounded to the divisor."""
        return {
            g.leader: kept_channels(g.channels, candidate.get(g.leader, "keep") * candidate.width, self.channel_divisor)
            for g in self.graph.prunable_groups
        }

    def layer_configs(self, candidate: Candidate) -> list[LayerConfig]:
        """Every surviving unit as the candidate leaves it, in execution order."""
        kept = self.group_channels(candidate)
        dropped = self.graph.dropped_units(candidate.depth)
        _, h0, w0 = self.graph.input_shape
        h, w = self.input_resolution(candidate)
        return [
            self.unit_config(
                unit.name, kept, (h / h0, w / w0),
                rank_ratio=candidate.get(unit.name, "rank"), w_bits=int(candidate.get(unit.name, "w_bits")),
                a_bits=int(candidate.get(unit.name, "a_bits")), sparsity=float(candidate.get(unit.name, "sparsity")),
            )
            for unit in sorted(self.graph.units.values(), key=lambda u: u.index)
            if unit.name not in dropped
        ]

    def unit_config(
        self, name: str, kept: Mapping[str, int], resolution_scale: tuple[float, float], *,
        rank_ratio: float = 1.0, w_bits: int = 32, a_bits: int = 32, sparsity: float = 0.0,
    ) -> LayerConfig:
        """One unit given its groups' kept channels and the input-resolution scale.

        The spatial sizes scale with ceil, which is what stride-2 convolutions
        with "same" padding do to an input of any size.
        """
        unit = self.graph.units[name]
        group = self.graph.out_group(name)
        out_c = kept[group] if group else unit.out_channels
        in_c = sum((kept[g] if g in kept else ch) * mult for g, ch, mult in self.graph.in_segments(name))
        if unit.op == "conv":
            rh, rw = resolution_scale
            in_hw = (math.ceil(unit.in_hw[0] * rh), math.ceil(unit.in_hw[1] * rw))
            out_hw = (math.ceil(unit.out_hw[0] * rh), math.ceil(unit.out_hw[1] * rw))
        else:
            in_hw, out_hw = unit.in_hw, unit.out_hw
        return LayerConfig(
            name=name, op=unit.op, in_channels=in_c, out_channels=out_c,
            kernel_size=unit.kernel_size, stride=unit.stride, padding=unit.padding,
            groups=in_c if unit.depthwise else unit.groups, in_hw=in_hw, out_hw=out_hw,
            w_bits=w_bits, a_bits=a_bits,
            rank=rank_for(rank_ratio, in_c, out_c, unit.kernel_size) if "rank" in self.choices[name] else None,
            sparsity=sparsity,
        )

    def describe(self) -> str:
        lines = [f"SearchSpace {self.name!r} from {self.source}: {len(self.choices)} layers, "
                 f"10^{self.log10_size():.1f} candidates"]
        for unit, dims in self.choices.items():
            lines.append(f"  {unit:40s} " + "  ".join(f"{d}={list(c)}" for d, c in dims.items()))
        for key, c in self.scaling_choices.items():
            lines.append(f"  scaling.{key} = {list(c)}")
        return "\n".join(lines)
