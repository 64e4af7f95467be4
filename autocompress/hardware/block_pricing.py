"""Block-level pricing of imported per-block tables (ProxylessNAS, Once-for-All).

ProxylessNAS and Once-for-All publish one latency per whole block (a stem
convolution, an inverted-residual block of a given shape, expand, kernel and
stride, the head), measured on the phone, not per layer. Their latency
estimators (``ProxylessNASLatencyTable`` and ``MBv3LatencyTable`` in the
Once-for-All code) price a network by walking its blocks, writing each as the
table's key (``expanded_conv-input:HxWxC-output:HxWxC-expand:E-kernel:K-
stride:S-idskip:0/1``, plus ``-se:0/1-hs:0/1`` in Once-for-All tables) and
summing the means. :class:`BlockCostModel` does the same from plain block
descriptions (:class:`BlockSpec`, or dicts with its fields, such as
``autocompress.models.proxyless.block_specs`` gives), so this pricing layer
never builds a model.

Only what the table lists is priced. A block it lacks is refused, naming the
block and its key: a per-block table has no layers to interpolate between, and
a profile's signature predictor is fitted on layer entries, which an imported
block table does not have. A skipped (identity) block has no entry and costs
nothing, as in the estimators.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from autocompress.hardware.profile import (
    BLOCK_KEY_FIELDS,
    BLOCK_TYPES,
    BlockEntry,
    HardwareProfile,
    ProfileError,
)

__all__ = ["BLOCK_FORMATS", "BlockCostModel", "BlockCosts", "BlockPrice", "BlockSpec", "block_key", "price_blocks"]

#: imported table formats priced block by block
BLOCK_FORMATS = ("proxyless", "ofa")
#: per format, the BlockSpec field behind each of the key's expanded_conv fields (BLOCK_KEY_FIELDS): the key's
#: ``expand`` is the ratio in ProxylessNAS keys and the middle channel count in Once-for-All ones
_KEY_FIELDS: dict[str, tuple[tuple[str, str], ...]] = {
    fmt: tuple(("mid_channels" if fmt == "ofa" and label == "expand" else label, label) for label in labels)
    for fmt, labels in BLOCK_KEY_FIELDS.items()}
#: missing blocks a refusal lists one by one
_SHOWN = 8


@dataclass(frozen=True)
class BlockSpec:
    """One block of a network as a per-block table keys it; ``name`` (the module's name) is for messages only.

    Shapes are ``[H, W, C]`` (a ``Logits`` output may be ``[classes]``).
    ``expand`` is the expansion ratio (ProxylessNAS keys), ``mid_channels``
    the middle channel count (Once-for-All keys); ``idskip``: the block adds
    its input; ``se``: squeeze-excite; ``hs``: hard-swish activation.
    """

    type: str
    input_hwc: tuple[int, ...]
    output_hwc: tuple[int, ...]
    expand: int | None = None
    mid_channels: int | None = None
    kernel: int | None = None
    stride: int | None = None
    idskip: bool | None = None
    se: bool | None = None
    hs: bool | None = None
    name: str = ""

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], where: str = "block") -> BlockSpec:
        """A checked spec from a plain description; errors name ``where`` and the field."""
        if isinstance(data, BlockSpec):
            return data
        if not isinstance(data, Mapping):
            raise ProfileError(f"{where}: expected a mapping of block fields, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ProfileError(f"{where}: unknown field(s) {unknown}; a block has fields {sorted(known)}")
        for required in ("type", "input_hwc", "output_hwc"):
            if required not in data:
                raise ProfileError(f"{where}: field {required!r} is required")
        btype = data["type"]
        if btype not in BLOCK_TYPES:
            raise ProfileError(f"{where}: field type: expected one of {list(BLOCK_TYPES)}, got {btype!r}")
        out: dict[str, Any] = {"type": btype, "name": str(data.get("name", ""))}
        out["input_hwc"] = _shape(data["input_hwc"], f"{where}: field input_hwc", (3,))
        out["output_hwc"] = _shape(data["output_hwc"], f"{where}: field output_hwc",
                                   (1, 3) if btype == "Logits" else (3,))
        for name in ("expand", "mid_channels", "kernel", "stride"):
            value = data.get(name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ProfileError(f"{where}: field {name}: expected a positive integer, got {value!r}")
            out[name] = value
        for name in ("idskip", "se", "hs"):
            value = data.get(name)
            if value is not None and value not in (0, 1):  # True/False, or 0/1 as the keys write them
                raise ProfileError(f"{where}: field {name}: expected true/false or 0/1, got {value!r}")
            out[name] = None if value is None else bool(value)
        return cls(**out)

    @classmethod
    def from_entry(cls, entry: BlockEntry) -> BlockSpec:
        """The spec of a table entry, so entries and networks are keyed by the same function."""
        return cls(type=entry.type, input_hwc=tuple(entry.input_hwc), output_hwc=tuple(entry.output_hwc),
                   expand=entry.expand, mid_channels=entry.mid_channels, kernel=entry.kernel,
                   stride=entry.stride, idskip=entry.idskip, se=entry.se, hs=entry.hs)


def _shape(value: Any, where: str, lengths: tuple[int, ...]) -> tuple[int, ...]:
    ok = (isinstance(value, list | tuple) and len(value) in lengths
          and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value))
    if not ok:
        expected = " or ".join({1: "[classes]", 3: "[H, W, C]"}[n] for n in lengths)
        raise ProfileError(f"{where}: expected {expected} of positive integers, got {value!r}")
    return tuple(value)


def block_key(spec: BlockSpec, format: str) -> str:
    """The key ``format``'s latency estimator queries for ``spec``, field for field as it writes it."""
    if format not in BLOCK_FORMATS:
        raise ProfileError(f"format {format!r} is not priced block by block; expected one of {list(BLOCK_FORMATS)}")
    parts = [spec.type, "input:" + "x".join(map(str, spec.input_hwc)),
             "output:" + "x".join(map(str, spec.output_hwc))]
    if spec.type == "expanded_conv":
        for attr, label in _KEY_FIELDS[format]:
            value = getattr(spec, attr)
            if value is None:
                raise ProfileError(f"{_label(spec)}: expanded_conv keys of {format} tables are made of fields "
                                   f"{[a for a, _ in _KEY_FIELDS[format]]}; field {attr} is missing")
            parts.append(f"{label}:{int(value)}")
    return "-".join(parts)


def _label(spec: BlockSpec) -> str:
    return f"block {spec.name}" if spec.name else f"{spec.type} block"


@dataclass(frozen=True)
class BlockPrice:
    """One block's figure as the table publishes it."""

    name: str
    key: str  # the table's key, as published
    latency_ms: float
    std_ms: float | None
    count: int


@dataclass(frozen=True)
class BlockCosts:
    """A network priced from a per-block table: the sum of its blocks' entries, and each block's share."""

    latency_ms: float
    blocks: tuple[BlockPrice, ...]
    profile: str
    source_file: str

    def breakdown(self) -> list[dict[str, Any]]:
        """One row per priced block: name, key, latency_ms, std_ms, count."""
        return [asdict(b) for b in self.blocks]


class BlockCostModel:
    """Prices networks block by block on an imported ProxylessNAS or Once-for-All profile."""

    def __init__(self, profile: HardwareProfile):
        table = profile.imported
        if table is None or table.format not in BLOCK_FORMATS or not table.blocks:
            what = f"kind {profile.kind!r}" + (f", format {table.format!r}" if table is not None else "")
            raise ProfileError(f"profile {profile.name!r} ({what}) has no per-block table; block pricing needs a "
                               f"profile imported with `autocompress profile import FILE --format proxyless|ofa`")
        self.profile = profile
        self.format = table.format
        self.source_file = table.source_file
        self.input_resolution = table.input_resolution
        self._entries: dict[str, BlockEntry] = {}
        for entry in table.blocks:
            key = block_key(BlockSpec.from_entry(entry), self.format)
            if key in self._entries:
                raise ProfileError(f"profile {profile.name!r} ({table.source_file}): entries "
                                   f"{self._entries[key].key!r} and {entry.key!r} describe the same block")
            self._entries[key] = entry

    def specs(self, blocks: Iterable[BlockSpec | Mapping[str, Any]]) -> list[BlockSpec]:
        """``blocks`` checked; a malformed one is refused naming its position (and name) and the field."""
        out = []
        for i, b in enumerate(blocks):
            name = b.get("name") if isinstance(b, Mapping) else None
            out.append(BlockSpec.from_mapping(b, where=f"block {i}" + (f" ({name})" if name else "")))
        return out

    def missing(self, blocks: Iterable[BlockSpec | Mapping[str, Any]]) -> list[str]:
        """The keys of ``blocks`` the table lacks, in network order (empty: the table covers the network)."""
        keys = [self._key(s) for s in self.specs(blocks)]
        return [k for k in keys if k not in self._entries]

    def price(self, blocks: Iterable[BlockSpec | Mapping[str, Any]]) -> BlockCosts:
        """The network's latency: the sum of its blocks' published means; refused if any block is not listed."""
        specs = self.specs(blocks)
        keyed = [(s, self._key(s)) for s in specs]
        missing = [(s, k) for s, k in keyed if k not in self._entries]
        if missing:
            raise ProfileError(self._refusal(specs, missing))
        prices = []
        for spec, key in keyed:
            entry = self._entries[key]
            prices.append(BlockPrice(name=spec.name, key=entry.key, latency_ms=entry.latency_ms,
                                     std_ms=entry.std_ms, count=entry.count))
        return BlockCosts(latency_ms=math.fsum(p.latency_ms for p in prices), blocks=tuple(prices),
                          profile=self.profile.name, source_file=self.source_file)

    def _key(self, spec: BlockSpec) -> str:
        try:
            return block_key(spec, self.format)
        except ProfileError as exc:
            raise ProfileError(f"profile {self.profile.name!r} ({self.source_file}): {exc}") from None

    def _refusal(self, specs: list[BlockSpec], missing: list[tuple[BlockSpec, str]]) -> str:
        lines = [f"profile {self.profile.name!r} (imported {self.format} table {self.source_file}) has no entry "
                 f"for {len(missing)} block(s) of this network:"]
        stems = [s for s in specs if s.type == "Conv"]
        if self.input_resolution and stems and stems[0].input_hwc[0] != self.input_resolution:
            lines.append(f"  the table was measured at input resolution {self.input_resolution}, the network is "
                         f"described at {stems[0].input_hwc[0]}")
        for spec, key in missing[:_SHOWN]:
            lines.append(f"  {_label(spec)}: {key}{self._hint(spec)}")
        if len(missing) > _SHOWN:
            lines.append(f"  ... and {len(missing) - _SHOWN} more")
        lines.append("A per-block table prices only the blocks it lists (there is no predictor for unseen "
                     f"blocks): choose blocks it covers, or measure these on {self.profile.device.name}.")
        return "\n".join(lines)

    def _hint(self, spec: BlockSpec) -> str:
        """For an inverted-residual block: the expand/kernel choices the table has at the same shapes."""
        if spec.type != "expanded_conv":
            return ""
        same = [e for e in self._entries.values()
                if e.type == "expanded_conv" and tuple(e.input_hwc) == spec.input_hwc
                and tuple(e.output_hwc) == spec.output_hwc and e.stride == spec.stride]
        if not same:
            return " (the table has no block with this input, output and stride)"
        names = [attr for attr, _ in _KEY_FIELDS[self.format] if attr != "stride"]
        choices = sorted({tuple(int(getattr(e, n)) for n in names) for e in same})
        return f" (at this shape the table has ({', '.join(names)}) {choices})"


def price_blocks(profile: HardwareProfile, blocks: Iterable[BlockSpec | Mapping[str, Any]]) -> BlockCosts:
    """``blocks`` priced on ``profile``'s per-block table; see :class:`BlockCostModel`."""
    return BlockCostModel(profile).price(blocks)
