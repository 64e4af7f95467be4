"""Encoding: a space's candidates as rows of integer choice indices.

The cost model prices rows, and the layer-wise strategies (DDPG, NetAdapt)
step along them, so the row layout is owned here, beside the space it
encodes, and nowhere else. A *column* is one unit's dimension, or one
scaling key under the owner ``"scaling"``.

Every column can encode its identity value even when the space does not
offer it: the uncompressed reference (``SearchSpace.identity``) is what
relative budgets and layer-wise completions start from, so it must be a
row. What the space offers is kept apart in each column (``offered``,
``ladder``), so random rows and ladders never hold an identity the space
does not offer, and no consumer filters identities out again.

``unit_variants`` walks every shape a unit can take; the cost tables and the
list of signatures a profile must hold are both built from it, so they
cannot disagree.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from autocompress.graph import ModelGraph, kept_channels
from autocompress.space.candidate import (
    IDENTITY,
    IDENTITY_SCALING,
    Candidate,
    CandidateError,
    Value,
)

if TYPE_CHECKING:
    from autocompress.space.search_space import LayerConfig, SearchSpace

#: owner of the global scaling columns
SCALING = "scaling"
#: dimensions where a larger value compresses more; for every other one a smaller value does
MORE_COMPRESSED_IS_LARGER = frozenset({"sparsity"})


@dataclass(frozen=True, eq=False)
class Column:
    """One encoded decision: a unit's dimension, or a scaling key (owner ``"scaling"``)."""

    owner: str
    dim: str
    values: tuple[Value, ...]  # every encodable value, ascending: the space's choices and the identity
    offered: np.ndarray  # indices of the space's own choices, in the space's order (what random rows draw)
    ladder: np.ndarray  # the same indices, most compressed first (what layer-wise strategies step along)


def _column(owner: str, dim: str, options: Sequence[Value], identity: Value) -> Column:
    values = tuple(sorted(set(options) | {identity}))
    ordered = sorted(options, reverse=dim in MORE_COMPRESSED_IS_LARGER)
    offered, ladder = (np.array([values.index(v) for v in picks], dtype=np.intp) for picks in (options, ordered))
    offered.flags.writeable = ladder.flags.writeable = False  # shared by every consumer of the encoding
    return Column(owner, dim, values, offered=offered, ladder=ladder)


def _shaping_groups(graph: ModelGraph, unit: str) -> list[str]:
    """Prunable groups that shape a unit: its output group, then its input groups."""
    groups: list[str] = []
    out_group = graph.out_group(unit)
    for g in ([out_group] if out_group else []) + [g for g, _, _ in graph.in_segments(unit)]:
        if g is not None and graph.groups[g].prunable and g not in groups:
            groups.append(g)
    return groups


class Encoding:
    """Columns, encode/decode, random rows, ladders and unit variants of one space."""

    def __init__(self, *, space: SearchSpace):
        self.space = space
        columns = [_column(unit, dim, options, IDENTITY[dim])
                   for unit, dims in space.choices.items() for dim, options in dims.items()]
        columns += [_column(SCALING, key, options, IDENTITY_SCALING[key])
                    for key, options in space.scaling_choices.items()]
        self.columns: tuple[Column, ...] = tuple(columns)
        self.scaling_columns = tuple(i for i, c in enumerate(columns) if c.owner == SCALING)
        self._index = {(c.owner, c.dim): i for i, c in enumerate(columns)}
        self._value_index = [{float(v): j for j, v in enumerate(c.values)} for c in columns]
        self._scaling_states: dict[tuple[int, ...], tuple[dict[str, float], tuple[float, float], set[str]]] = {}

    def __len__(self) -> int:
        return len(self.columns)

    def column(self, owner: str, dim: str) -> int:
        """Index of a unit's dimension (or of a scaling key under ``"scaling"``) in encoded rows."""
        return self._index[(owner, dim)]

    # -- rows <-> candidates ------------------------------------------------------------------
    def encode(self, candidates: Iterable[Candidate]) -> np.ndarray:
        """(N, columns) choice indices; a dimension a candidate leaves out takes its identity value."""
        rows = []
        for candidate in candidates:
            scaling = candidate.scaling
            row = []
            for column, lookup in zip(self.columns, self._value_index, strict=True):
                if column.owner == SCALING:
                    value = scaling.get(column.dim, IDENTITY_SCALING[column.dim])
                else:
                    value = candidate.get(column.owner, column.dim)
                try:
                    row.append(lookup[float(value)])
                except KeyError:
                    raise CandidateError(f"{column.owner}.{column.dim}: {value} is not one of the encoded "
                                         f"choices {list(column.values)}") from None
            rows.append(row)
        return np.asarray(rows, dtype=np.intp).reshape(len(rows), len(self.columns))

    def decode(self, row: np.ndarray) -> Candidate:
        """The candidate one row of choice indices stands for (the inverse of ``encode``)."""
        layers: dict[str, dict[str, Value]] = {}
        picked: dict[str, Value] = {}
        for column, index in zip(self.columns, row, strict=True):
            value = column.values[int(index)]
            if column.owner == SCALING:
                picked[column.dim] = value
            else:
                layers.setdefault(column.owner, {})[column.dim] = value
        return Candidate(layers, self.space.scaling_for(picked) if self.space.scaling_choices else None)

    def random(self, n: int, rng: np.random.Generator | int = 0) -> np.ndarray:
        """(n, columns) rows drawn uniformly from the space's own choices, column by column."""
        rng = np.random.default_rng(rng)
        return np.stack([c.offered[rng.integers(len(c.offered), size=n)] for c in self.columns], axis=1)

    # -- unit variants --------------------------------------------------------------------------
    def shape_columns(self, unit: str) -> tuple[int, ...]:
        """Columns that set a unit's shape: the scaling keys, the keep ratio of each group shaping it, its rank."""
        groups = [self.column(g, "keep") for g in _shaping_groups(self.space.graph, unit)]
        rank = [self.column(unit, "rank")] if "rank" in self.space.choices[unit] else []
        return (*self.scaling_columns, *groups, *rank)

    def unit_variants(self, unit: str) -> Iterator[tuple[tuple[int, ...], LayerConfig]]:
        """Every shape ``unit`` can take at identity bits and sparsity, with its index in each shape column.

        The indices run over every encodable value (identity included), in
        row-major order of ``shape_columns(unit)``; combinations whose depth
        scaling drops the unit are skipped.
        """
        graph, space = self.space.graph, self.space
        columns = self.shape_columns(unit)
        n_scaling = len(self.scaling_columns)
        groups = _shaping_groups(graph, unit)
        for combo in itertools.product(*(range(len(self.columns[c].values)) for c in columns)):
            scale, resolution_scale, dropped = self._scaling_state(combo[:n_scaling])
            if unit in dropped:
                continue
            keeps = combo[n_scaling:n_scaling + len(groups)]
            kept = {g: kept_channels(graph.groups[g].channels,
                                     self.columns[self.column(g, "keep")].values[k] * scale["width"],
                                     space.channel_divisor)
                    for g, k in zip(groups, keeps, strict=True)}
            rank_ratio = self.columns[columns[-1]].values[combo[-1]] if "rank" in space.choices[unit] else 1.0
            yield combo, space.unit_config(unit, kept, resolution_scale, rank_ratio=rank_ratio)

    def _scaling_state(self, indices: tuple[int, ...]) -> tuple[dict[str, float], tuple[float, float], set[str]]:
        """Multipliers, input-resolution scale and dropped units of one scaling choice (computed once)."""
        if indices not in self._scaling_states:
            picked = {self.columns[c].dim: self.columns[c].values[i]
                      for c, i in zip(self.scaling_columns, indices, strict=True)}
            scale = self.space.scaling_for(picked)
            h, w = self.space.input_resolution(Candidate({}, scale))
            h0, w0 = self.space.graph.input_shape[1:]
            self._scaling_states[indices] = (scale, (h / h0, w / w0), self.space.graph.dropped_units(scale["depth"]))
        return self._scaling_states[indices]
