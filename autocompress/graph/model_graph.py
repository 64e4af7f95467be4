"""ModelGraph: the compressible units of a model and how their channels are coupled.

Everything downstream (search spaces, transforms, the cost model) reasons about a
model through this object, so it records exactly what a candidate can change:
each Conv2d/Linear with its shapes and input resolution, the prune groups that
Torch-Pruning's dependency graph couples across residual adds and concats, and
the residual blocks that depth scaling may drop.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass, field

import torch
import torch_pruning as tp
from torch import nn

log = logging.getLogger(__name__)

UNIT_TYPES = (nn.Conv2d, nn.Linear)


class GraphError(ValueError):
    """The model cannot be traced or analysed."""


@dataclass(frozen=True)
class Unit:
    """One compressible layer, keyed by its qualified module name."""

    name: str
    index: int  # execution order
    op: str  # "conv" or "linear"
    in_channels: int
    out_channels: int
    kernel_size: tuple[int, int] = (1, 1)
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1
    bias: bool = True
    in_hw: tuple[int, int] = (1, 1)  # conv: input H x W; linear: (tokens, 1)
    out_hw: tuple[int, int] = (1, 1)

    @property
    def depthwise(self) -> bool:
        return self.op == "conv" and self.groups > 1 and self.groups == self.in_channels == self.out_channels

    @property
    def grouped(self) -> bool:
        """Grouped but not depthwise: channels cannot be removed freely."""
        return self.groups > 1 and not self.depthwise

    @property
    def weight_params(self) -> int:
        kh, kw = self.kernel_size
        return self.out_channels * (self.in_channels // self.groups) * kh * kw

    @property
    def macs(self) -> int:
        return self.weight_params * self.out_hw[0] * self.out_hw[1]


@dataclass(frozen=True)
class PruneGroup:
    """Output channels of several units that must be removed together.

    ``leader`` (the member that comes first in the model's module order) names the
    group everywhere: in search spaces, candidates and cost tables.
    ``in_units`` lists consumers whose input channels shrink with the group, with
    a multiplier (a Linear after ``flatten`` sees each channel H*W times).
    """

    leader: str
    channels: int
    out_units: tuple[str, ...]
    in_units: tuple[tuple[str, int], ...]
    prunable: bool
    reason: str = ""


@dataclass(frozen=True)
class Block:
    """A child of an ``nn.Sequential`` that holds units; depth scaling drops these."""

    name: str
    run: int  # index of its run (a non-droppable head followed by droppable repeats)
    droppable: bool  # input shape == output shape, so it can become an identity
    units: tuple[str, ...]


def kept_channels(channels: int, keep: float, divisor: int = 1) -> int:
    """How many channels a keep ratio leaves; shared by the pruner and the cost model."""
    if keep >= 1.0:
        return channels
    n = int(round(channels * keep / divisor)) * divisor
    return max(min(divisor, channels), min(n, channels))


@dataclass
class ModelGraph:
    input_shape: tuple[int, ...]  # (C, H, W) without batch
    units: dict[str, Unit]
    groups: dict[str, PruneGroup]  # by leader
    blocks: list[Block] = field(default_factory=list)
    supports_resolution: bool = False
    _out_group: dict[str, str] = field(default_factory=dict, repr=False)
    _in_segments: dict[str, tuple[tuple[str | None, int, int], ...]] = field(default_factory=dict, repr=False)

    # -- construction -------------------------------------------------------------
    @classmethod
    def from_model(cls, model: nn.Module, input_shape: Iterable[int]) -> ModelGraph:
        """Trace ``model`` on one zero-valued sample of ``input_shape`` (C, H, W)."""
        input_shape = tuple(int(s) for s in input_shape)
        was_training = model.training
        model.eval()
        try:
            example = torch.zeros((1, *input_shape))
            units, shapes = _trace_units(model, example)
            if not units:
                raise GraphError("the model has no Conv2d or Linear layer to compress")
            groups, out_group, in_segments = _prune_groups(model, example, units)
            blocks = _find_blocks(model, shapes, units)
            supports_resolution = _runs_at_other_resolution(model, input_shape)
        finally:
            model.train(was_training)
        return cls(
            input_shape=input_shape,
            units=units,
            groups=groups,
            blocks=blocks,
            supports_resolution=supports_resolution,
            _out_group=out_group,
            _in_segments=in_segments,
        )

    # -- queries --------------------------------------------------------------------
    def out_group(self, unit: str) -> str | None:
        """Leader of the group that prunes this unit's output channels (None: fixed)."""
        group = self._out_group.get(unit)
        return group if group is not None and self.groups[group].prunable else None

    def in_segments(self, unit: str) -> tuple[tuple[str | None, int, int], ...]:
        """(group leader or None, channels, multiplier) pieces of the unit's input."""
        return self._in_segments[unit]

    @property
    def prunable_groups(self) -> list[PruneGroup]:
        return [g for g in self.groups.values() if g.prunable]

    def dropped_blocks(self, depth: float) -> list[str]:
        """Blocks removed at a depth multiplier: EfficientNet keeps ceil(d * n) per run."""
        if depth >= 1.0:
            return []
        runs: dict[int, list[Block]] = {}
        for block in self.blocks:
            runs.setdefault(block.run, []).append(block)
        dropped = []
        for run in runs.values():
            keep = max(1, math.ceil(depth * len(run)))
            dropped += [b.name for b in run[keep:] if b.droppable]
        return dropped

    def dropped_units(self, depth: float) -> set[str]:
        names = set(self.dropped_blocks(depth))
        return {u for b in self.blocks if b.name in names for u in b.units}

    def first_unit(self) -> str:
        return min(self.units.values(), key=lambda u: u.index).name

    def last_unit(self) -> str:
        return max(self.units.values(), key=lambda u: u.index).name

    def summary(self) -> str:
        lines = [f"ModelGraph: input {self.input_shape}, {len(self.units)} units, "
                 f"{len(self.prunable_groups)} prunable groups, {len(self.blocks)} blocks "
                 f"({sum(b.droppable for b in self.blocks)} droppable)"]
        for u in sorted(self.units.values(), key=lambda u: u.index):
            kind = "dw" if u.depthwise else u.op
            lines.append(f"  {u.index:3d} {u.name:40s} {kind:6s} {u.in_channels:5d} -> {u.out_channels:5d} "
                         f"k{u.kernel_size[0]} s{u.stride[0]} in {u.in_hw[0]}x{u.in_hw[1]}  "
                         f"group {self.out_group(u.name) or '-'}")
        return "\n".join(lines)


# -- tracing helpers ---------------------------------------------------------------

def _pair(v: int | tuple[int, ...]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[-1]))


def _trace_units(model: nn.Module, example: torch.Tensor) -> tuple[dict[str, Unit], dict[str, tuple]]:
    """Record each unit's input/output shapes (and every module's, for blocks) with hooks."""
    shapes: dict[str, tuple] = {}
    order: list[str] = []
    handles = []

    def hook(name):
        def fn(module, args, output):
            if name in shapes or not args or not isinstance(args[0], torch.Tensor):
                return
            if isinstance(output, torch.Tensor):
                shapes[name] = (tuple(args[0].shape), tuple(output.shape))
                order.append(name)
        return fn

    for name, module in model.named_modules():
        if name:
            handles.append(module.register_forward_hook(hook(name)))
    try:
        with torch.no_grad():
            model(example)
    except Exception as exc:  # the user's model rejects the input: say which shape we tried
        raise GraphError(f"tracing the model with an input of shape {tuple(example.shape)} failed: {exc}") from exc
    finally:
        for h in handles:
            h.remove()

    units: dict[str, Unit] = {}
    modules = dict(model.named_modules())
    for name in order:
        m = modules[name]
        if not isinstance(m, UNIT_TYPES):
            continue
        (in_shape, out_shape) = shapes[name]
        if isinstance(m, nn.Conv2d):
            units[name] = Unit(
                name=name, index=len(units), op="conv", in_channels=m.in_channels,
                out_channels=m.out_channels, kernel_size=_pair(m.kernel_size), stride=_pair(m.stride),
                padding=_pair(m.padding) if not isinstance(m.padding, str) else (0, 0),
                dilation=_pair(m.dilation), groups=m.groups, bias=m.bias is not None,
                in_hw=(in_shape[-2], in_shape[-1]), out_hw=(out_shape[-2], out_shape[-1]),
            )
        else:
            tokens = math.prod(in_shape[1:-1]) if len(in_shape) > 2 else 1
            units[name] = Unit(
                name=name, index=len(units), op="linear", in_channels=m.in_features,
                out_channels=m.out_features, bias=m.bias is not None,
                in_hw=(tokens, 1), out_hw=(tokens, 1),
            )
    unused = [n for n, m in modules.items() if isinstance(m, UNIT_TYPES) and n not in units]
    if unused:
        log.warning("units never called in forward (left uncompressed): %s", ", ".join(unused))
    return units, shapes


def _prune_groups(model: nn.Module, example: torch.Tensor, units: dict[str, Unit]):
    """Prune groups from Torch-Pruning's dependency graph, named by their first member."""
    names = {m: n for n, m in model.named_modules()}
    try:
        dg = tp.DependencyGraph().build_dependency(model, example_inputs=example, verbose=False)
    except Exception as exc:
        raise GraphError(f"Torch-Pruning could not build the dependency graph: {exc}") from exc

    order = {n: i for i, n in enumerate(names.values())}
    groups: dict[str, PruneGroup] = {}
    out_group: dict[str, str] = {}
    in_pieces: dict[str, list[tuple[str, int, int]]] = {}
    for group in dg.get_all_groups(root_module_types=UNIT_TYPES):
        outs, ins, reasons = [], [], []
        channels = len(group[0].idxs)
        for dep, idxs in group:
            module = dep.target.module
            name = names.get(module)
            is_out = dg.is_out_channel_pruning_fn(dep.handler)
            if is_out and not dep.target.outputs:
                reasons.append("feeds the model output")
            if name in units:
                if is_out:
                    outs.append(name)
                    if units[name].grouped:
                        reasons.append(f"grouped conv {name}")
                else:
                    ins.append((name, max(1, len(idxs) // channels)))
                    if units[name].grouped:
                        reasons.append(f"grouped conv {name}")
        outs = sorted(set(outs), key=order.__getitem__)
        if not outs:
            continue
        leader = outs[0]
        groups[leader] = PruneGroup(
            leader=leader, channels=channels, out_units=tuple(outs), in_units=tuple(ins),
            prunable=not reasons, reason="; ".join(dict.fromkeys(reasons)),
        )
        for name in outs:
            out_group[name] = leader
        for name, mult in ins:
            in_pieces.setdefault(name, []).append((leader, channels, mult))

    in_segments: dict[str, tuple] = {}
    for name, u in units.items():
        if u.depthwise and name in out_group:
            # a depthwise conv's inputs follow its outputs (Torch-Pruning lists only the latter)
            leader = out_group[name]
            in_segments[name] = ((leader, groups[leader].channels, 1),)
            continue
        pieces = in_pieces.get(name, [])
        covered = sum(c * m for _, c, m in pieces)
        rest = u.in_channels - covered
        if rest < 0:
            raise GraphError(f"inconsistent channel coupling for {name}: {covered} > {u.in_channels}")
        in_segments[name] = tuple(pieces) + (((None, rest, 1),) if rest else ())
    return groups, out_group, in_segments


def _find_blocks(model: nn.Module, shapes: dict[str, tuple], units: dict[str, Unit]) -> list[Block]:
    """Children of Sequentials that hold units, grouped into head + repeats runs."""
    blocks: list[Block] = []
    run = -1
    for seq_name, seq in model.named_modules():
        if not isinstance(seq, nn.Sequential):
            continue
        prev_was_block = False
        for child_name, child in seq.named_children():
            name = f"{seq_name}.{child_name}" if seq_name else child_name
            members = tuple(u for u in units if u == name or u.startswith(name + "."))
            if not members or isinstance(child, (nn.Sequential, *UNIT_TYPES)) or name not in shapes:
                prev_was_block = False
                continue
            in_shape, out_shape = shapes[name]
            droppable = in_shape == out_shape
            if not droppable or not prev_was_block:
                run += 1
            blocks.append(Block(name=name, run=run, droppable=droppable, units=members))
            prev_was_block = True
    return blocks


def _runs_at_other_resolution(model: nn.Module, input_shape: tuple[int, ...]) -> bool:
    """Resolution scaling needs a model that accepts other input sizes (global pooling)."""
    if len(input_shape) != 3:
        return False
    c, h, w = input_shape
    try:
        with torch.no_grad():
            model(torch.zeros(1, c, h + 8, w + 8))
        return True
    except Exception:
        return False
