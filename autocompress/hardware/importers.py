"""Import published hardware lookup tables as profiles of kind ``imported``.

A user who cannot run on a device often has its table from a paper's code:
ProxylessNAS and Once-for-All per-block latency tables (YAML), APQ's BitFusion
per-layer latency/energy table (JSON), or a table of their own. Each importer
parses every key into structured fields (the key is kept beside them, as
published, so nothing later re-parses strings), records where the file came from (name,
sha256) and what is known about it (device, units, measured or simulated), and
refuses a malformed key or value with an error that names the file, the key
and what was expected. Entries stay in the source's structure (blocks, or
layers at bit-width pairs). Per-block tables are priced block by block
(``autocompress.hardware.block_pricing``); the layer cost model prices
neither kind.

Generic layout (``format="generic"``): a CSV file with a header row, or a JSON
list of objects, one row per layer at one bit-width pair. Columns
:data:`GENERIC_REQUIRED` must be present; :data:`GENERIC_OPTIONAL` may be.
``op`` is ``conv`` or ``linear`` (a linear layer: ``in_h`` is its token
count, ``kernel``, ``stride`` and ``groups`` are 1); ``in_w`` defaults to
``in_h`` (1 for linear), ``padding`` to ``kernel // 2``.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from autocompress.files import validation_problems
from autocompress.hardware.profile import (
    BLOCK_KEY_FIELDS,
    BLOCK_TYPES,
    BlockEntry,
    DeviceInfo,
    EnergySpec,
    HardwareProfile,
    ImportedTable,
    LayerEntry,
    PartEntry,
    ProfileError,
    Provenance,
)
from autocompress.versions import versions

FORMATS = ("proxyless", "ofa", "apq", "generic")
GENERIC_REQUIRED = ("op", "in_channels", "out_channels", "in_h", "kernel", "stride", "groups", "w_bits", "a_bits",
                    "latency_ms")
GENERIC_OPTIONAL = ("energy_mj", "in_w", "padding", "std_ms", "count")


class TableImportError(ProfileError):
    """A published table that cannot be imported: unknown format, malformed key or value."""


@dataclass(frozen=True)
class _Known:
    """What is known about the tables of one format beyond what the file says."""

    device: DeviceInfo
    runtime: str
    obtained: str
    units: dict[str, str]
    source: str
    notes: str = ""
    batch_size: int = 1
    precisions: dict[str, str] = field(default_factory=dict)


_KNOWN = {
    "proxyless": _Known(
        device=DeviceInfo(name="Google Pixel 1", notes="phone CPU; TFLite, batch 1, per the ProxylessNAS paper"),
        runtime="tflite", obtained="measured", units={"latency": "ms"},
        source="ProxylessNAS mobile latency lookup table (as downloaded by the ProxylessNAS / Once-for-All code)",
        notes="per-block means over `count` runs; the thread count is not stated (recorded as 1); "
              "expand is the expansion ratio"),
    "ofa": _Known(
        device=DeviceInfo(name="Samsung Galaxy Note10", notes="phone, per the Once-for-All paper"),
        runtime="not stated", obtained="measured", units={"latency": "ms"},
        source="Once-for-All latency lookup table (as downloaded by the Once-for-All code)",
        notes="per-block means over `count` runs, one table per input resolution; runtime, threads and batch "
              "are not stated (recorded as 1); expand is the middle channel count"),
    "apq": _Known(
        device=DeviceInfo(name="BitFusion bit-flexible accelerator", notes="simulated, batch 1"),
        runtime="simulator", obtained="simulated", units={"latency": "ms", "energy": "mJ"},
        source="APQ BitFusion lookup table (mit-han-lab/apq, lut/BitFusion_new.b1.dict; BSD-style licence, "
               "copyright 2020 T. Wang, K. Wang, H. Cai, J. Lin, Z. Liu, S. Han)",
        notes="figures come from a BitFusion simulator, not from hardware; units are not stated in the file "
              "(ms and mJ, as APQ reports its results); parts 'head' and 'tail' are the network's fixed first "
              "and last layers, added once per model"),
    "generic": _Known(device=DeviceInfo(name="unknown device"), runtime="unknown", obtained="unknown",
                      units={"latency": "ms", "energy": "mJ"}, source="generic per-layer table"),
}

_BLOCK_EXAMPLE = {
    "proxyless": "'expanded_conv-input:56x56x24-output:28x28x40-expand:3-kernel:5-stride:2-idskip:0' "
                 "or 'Conv-input:224x224x3-output:112x112x32'",
    "ofa": "'expanded_conv-input:28x28x40-output:28x28x40-expand:120-kernel:3-stride:1-idskip:1-se:1-hs:0' "
           "or 'Conv-input:224x224x3-output:112x112x16'",
}
_HWC = re.compile(r"^(\d+)x(\d+)x(\d+)$")
_APQ_KEY = re.compile(r"^\((\d+), *(\d+), *(\d+), *(\d+), *(\d+), *(\d+), *(\d+)\)-W(\d+)A(\d+)$")
_APQ_EXAMPLE = "'(Cin, Cout, Hin, k, stride, pad, groups)-W{w}A{a}', e.g. '(96, 456, 14, 1, 1, 0, 1)-W4A4'"
_APQ_PARTS = ("head", "tail")


def import_table(path: str | Path, format: str, *, name: str | None = None, device: str | None = None,
                 runtime: str | None = None, obtained: str | None = None, command: str = "") -> HardwareProfile:
    """A profile of kind ``imported`` from the published table at ``path``.

    ``format``: one of :data:`FORMATS`. ``device``, ``runtime`` and
    ``obtained`` override what is known about the format's tables (for a table
    of the same layout from another device); ``name`` defaults to the file's stem.
    """
    if format not in FORMATS:
        raise TableImportError(f"unknown table format {format!r}; expected one of {list(FORMATS)}")
    path = Path(path)
    if not path.is_file():
        raise TableImportError(f"{path}: no such table file")
    known = _KNOWN[format]
    raw = path.read_bytes()
    blocks: list[BlockEntry] = []
    layers: list[LayerEntry] = []
    parts: list[PartEntry] = []
    resolution = None
    if format in ("proxyless", "ofa"):
        blocks = _block_table(path, raw, format)
        stems = {tuple(b.input_hwc) for b in blocks if b.type == "Conv"}
        if len(stems) != 1:
            raise TableImportError(f"{path}: expected exactly one stem 'Conv-...' block giving the input "
                                   f"resolution, found {len(stems)}")
        resolution = next(iter(stems))[0]
    elif format == "apq":
        layers, parts = _apq_table(path, raw)
    else:
        layers = _generic_table(path, raw)
    if obtained is not None and obtained not in ("measured", "simulated", "unknown"):
        raise TableImportError(f"obtained={obtained!r}: expected 'measured', 'simulated' or 'unknown'")
    has_energy = any(e.energy_mj is not None for e in [*layers, *parts])
    units = known.units if has_energy else {k: v for k, v in known.units.items() if k != "energy"}
    table = ImportedTable(format=format, source_file=path.name, sha256=hashlib.sha256(raw).hexdigest(),
                          obtained=obtained or known.obtained, units=units, input_resolution=resolution,
                          notes=known.notes, blocks=blocks, layers=layers, parts=parts)
    pairs = sorted({(e.w_bits, e.a_bits) for e in layers})
    precisions = known.precisions or {f"w{w}a{a}": f"as in the table ({table.obtained})" for w, a in pairs}
    return HardwareProfile(
        name=name or path.stem, kind="imported",
        device=DeviceInfo(name=device) if device else known.device,
        runtime=runtime or known.runtime, threads=1, batch_size=known.batch_size,
        repetitions="as published: " + ("mean over `count` runs per block" if blocks else
                                        f"one {table.obtained} figure per entry"),
        precisions=precisions,
        energy=EnergySpec(method="imported" if has_energy else "none",
                          notes=f"{table.obtained} energy from the imported table" if has_energy else ""),
        provenance=Provenance(command=command or f"import_table({path.name!r}, {format!r})",
                              date=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                              versions=versions(), source=known.source),
        imported=table,
    )


# -- ProxylessNAS / Once-for-All: per-block YAML -------------------------------------------------------
def _block_table(path: Path, raw: bytes, fmt: str) -> list[BlockEntry]:
    try:
        data = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise TableImportError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict) or not data:
        raise TableImportError(f"{path}: expected a YAML mapping of block keys to {{count, mean, var|std}}")
    blocks = []
    for key, value in data.items():
        try:
            fields = _parse_block_key(str(key), fmt)
            fields.update(_block_value(value))
            blocks.append(BlockEntry(key=str(key), **fields))
        except (ValueError, ValidationError) as exc:
            detail = validation_problems(exc) if isinstance(exc, ValidationError) else str(exc)
            raise TableImportError(f"{path}: key {key!r}: {detail}") from None
    return blocks


def _parse_block_key(key: str, fmt: str) -> dict[str, Any]:
    btype, *rest = key.split("-")
    if btype not in BLOCK_TYPES:
        raise ValueError(f"block type {btype!r} is not one of {list(BLOCK_TYPES)}; "
                         f"expected a key like {_BLOCK_EXAMPLE[fmt]}")
    values: dict[str, str] = {}
    for part in rest:
        name, sep, value = part.partition(":")
        if not sep or not value or name in values:
            raise ValueError(f"{part!r} is not a NAME:VALUE field (or repeats one); "
                             f"expected a key like {_BLOCK_EXAMPLE[fmt]}")
        values[name] = value
    expected = ("input", "output", *(BLOCK_KEY_FIELDS[fmt] if btype == "expanded_conv" else ()))
    if set(values) != set(expected):
        raise ValueError(f"fields {list(values)}; {btype} blocks of a {fmt} table have fields {list(expected)}")
    out: dict[str, Any] = {"type": btype, "input_hwc": _hwc(values["input"], "input")}
    if btype == "Logits" and values["output"].isdigit():
        out["output_hwc"] = [_positive(values["output"], "output")]
    else:
        out["output_hwc"] = _hwc(values["output"], "output")
    if btype == "expanded_conv":
        for name in ("expand", "kernel", "stride"):
            out[name] = _positive(values[name], name)
        for name in BLOCK_KEY_FIELDS[fmt][3:]:  # idskip (and se, hs)
            if values[name] not in ("0", "1"):
                raise ValueError(f"field {name}: expected 0 or 1, got {values[name]!r}")
            out[name] = values[name] == "1"
        # ProxylessNAS keys give the expansion ratio, Once-for-All keys the middle channel count
        out["mid_channels"] = out["expand"] * out["input_hwc"][2] if fmt == "proxyless" else out["expand"]
    return out


def _block_value(value: Any) -> dict[str, Any]:
    expected = "expected a mapping {count, mean} with var or std"
    if not isinstance(value, Mapping):
        raise ValueError(f"value {value!r}: {expected}")
    unknown = set(value) - {"count", "mean", "var", "std"}
    if unknown or "count" not in value or "mean" not in value:
        raise ValueError(f"value fields {sorted(map(str, value))}: {expected}")
    out = {"count": value["count"], "latency_ms": _number(value["mean"], "mean")}
    if "var" in value:
        out["var_ms2"] = _number(value["var"], "var")
        out["std_ms"] = math.sqrt(out["var_ms2"])
    if "std" in value:
        out["std_ms"] = _number(value["std"], "std")
    return out


def _hwc(text: str, name: str) -> list[int]:
    m = _HWC.match(text)
    if not m or not all(int(g) > 0 for g in m.groups()):
        raise ValueError(f"field {name}: expected HxWxC with positive integers, got {text!r}")
    return [int(g) for g in m.groups()]


def _positive(text: str, name: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise ValueError(f"field {name}: expected a positive integer, got {text!r}")
    return int(text)


def _number(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{name}: expected a finite number >= 0, got {value!r}")
    return float(value)


# -- APQ: per-layer JSON at weight/activation bit-width pairs -----------------------------------------
def _apq_table(path: Path, raw: bytes) -> tuple[list[LayerEntry], list[PartEntry]]:
    data = _json(path, raw)
    if not isinstance(data, dict) or not data:
        raise TableImportError(f"{path}: expected a JSON object of layer keys ({_APQ_EXAMPLE}) to "
                               "{latency, energy}")
    layers, parts = [], []
    for key, value in data.items():
        try:
            latency, energy = _apq_value(value)
            if key in _APQ_PARTS:
                parts.append(PartEntry(name=key, latency_ms=latency, energy_mj=energy))
                continue
            m = _APQ_KEY.match(key)
            if not m:
                raise ValueError(f"expected {_APQ_EXAMPLE}, or one of {list(_APQ_PARTS)}")
            cin, cout, hin, k, stride, pad, groups, w, a = (int(g) for g in m.groups())
            layers.append(_layer(key, "conv", cin, cout, (hin, hin), k, stride, pad, groups, w, a, latency,
                                 energy))
        except (ValueError, ValidationError) as exc:
            detail = validation_problems(exc) if isinstance(exc, ValidationError) else str(exc)
            raise TableImportError(f"{path}: key {key!r}: {detail}") from None
    return layers, parts


def _apq_value(value: Any) -> tuple[float, float]:
    if not isinstance(value, Mapping) or set(value) != {"latency", "energy"}:
        raise ValueError(f"value {value!r}: expected an object {{\"latency\": ms, \"energy\": mJ}}")
    return _number(value["latency"], "latency"), _number(value["energy"], "energy")


def _layer(key: str, op: str, cin: int, cout: int, in_hw: tuple[int, int], kernel: int, stride: int,
           padding: int, groups: int, w_bits: int, a_bits: int, latency_ms: float, energy_mj: float | None,
           std_ms: float | None = None, count: int | None = None) -> LayerEntry:
    """A checked layer entry: channels divisible by groups, a non-empty output."""
    if groups < 1 or cin % groups or cout % groups:
        raise ValueError(f"groups {groups} must divide in_channels {cin} and out_channels {cout}")
    if op == "conv" and any((size + 2 * padding - kernel) // stride + 1 < 1 for size in in_hw):
        raise ValueError(f"kernel {kernel} with padding {padding} does not fit input {in_hw[0]}x{in_hw[1]}")
    return LayerEntry(key=key, op=op, in_channels=cin, out_channels=cout, in_hw=in_hw, kernel=kernel, stride=stride,
                      padding=padding, groups=groups, w_bits=w_bits, a_bits=a_bits, latency_ms=latency_ms,
                      energy_mj=energy_mj, std_ms=std_ms, count=count)


def _json(path: Path, raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise TableImportError(f"{path}: not valid JSON (truncated or corrupted?): {exc}") from None


# -- generic: CSV or JSON rows ------------------------------------------------------------------------
def _generic_table(path: Path, raw: bytes) -> list[LayerEntry]:
    suffix = path.suffix.lower()
    if suffix == ".csv":
        try:
            reader = csv.DictReader(raw.decode("utf-8-sig").splitlines())
            rows = [(row, reader.line_num) for row in reader]
            header = reader.fieldnames or []
        except (UnicodeDecodeError, csv.Error) as exc:
            raise TableImportError(f"{path}: not a readable CSV file: {exc}") from None
        _check_columns(path, header)
    elif suffix == ".json":
        data = _json(path, raw)
        if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
            raise TableImportError(f"{path}: expected a JSON list of row objects with fields "
                                   f"{list(GENERIC_REQUIRED)} (optional: {list(GENERIC_OPTIONAL)})")
        rows = [(r, None) for r in data]
        for number, row in enumerate(data, start=1):
            _check_columns(path, list(row), where=f"row {number}: ")
    else:
        raise TableImportError(f"{path}: a generic table is a .csv or .json file, not {suffix or 'no suffix'!r}")
    if not rows:
        raise TableImportError(f"{path}: the table has no rows")
    layers: list[LayerEntry] = []
    seen: dict[tuple, str] = {}
    for number, (row, line) in enumerate(rows, start=1):
        key = f"row {number}"
        where = f"{key}" + (f" (line {line})" if line else "")
        if None in row:  # csv.DictReader files cells beyond the header under None
            raise TableImportError(f"{path}: {where}: more cells than the header has columns")
        try:
            entry = _generic_row(key, row)
        except (ValueError, ValidationError) as exc:
            detail = validation_problems(exc) if isinstance(exc, ValidationError) else str(exc)
            raise TableImportError(f"{path}: {where}: {detail}") from None
        ident = entry.model_dump(include={"op", "in_channels", "out_channels", "in_hw", "kernel", "stride", "padding",
                                          "groups", "w_bits", "a_bits"})
        ident_key = tuple(ident.values())
        if ident_key in seen:
            raise TableImportError(f"{path}: {where}: the same layer and bit-widths as {seen[ident_key]}")
        seen[ident_key] = key
        layers.append(entry)
    return layers


def _check_columns(path: Path, columns: list[str], where: str = "") -> None:
    missing = [c for c in GENERIC_REQUIRED if c not in columns]
    unknown = [c for c in columns if c not in GENERIC_REQUIRED + GENERIC_OPTIONAL]
    if missing or unknown:
        raise TableImportError(f"{path}: {where}" + (f"missing column(s) {missing}" if missing else "")
                               + ("; " if missing and unknown else "")
                               + (f"unknown column(s) {unknown}" if unknown else "")
                               + f"; expected {list(GENERIC_REQUIRED)}, optionally {list(GENERIC_OPTIONAL)}")


def _generic_row(key: str, row: Mapping[str, Any]) -> LayerEntry:
    def value(name: str, kind: type, default: Any = None) -> Any:
        v = row.get(name)
        if v is None or (isinstance(v, str) and not v.strip()):
            if default is None and name in GENERIC_REQUIRED:
                raise ValueError(f"column {name}: a value is required")
            return default
        try:
            if isinstance(v, bool):
                raise ValueError
            got = kind(v.strip()) if isinstance(v, str) else kind(v)
            if kind is int and isinstance(v, float) and v != got:
                raise ValueError
        except (TypeError, ValueError):
            raise ValueError(f"column {name}: expected {'an integer' if kind is int else 'a number'}, "
                             f"got {v!r}") from None
        return got

    op = str(row.get("op") or "").strip().lower()
    if op not in ("conv", "linear"):
        raise ValueError(f"column op: expected 'conv' or 'linear', got {row.get('op')!r}")
    cin, cout, in_h = value("in_channels", int), value("out_channels", int), value("in_h", int)
    kernel, stride, groups = value("kernel", int), value("stride", int), value("groups", int)
    if op == "linear" and (kernel, stride, groups) != (1, 1, 1):
        raise ValueError(f"a linear layer has kernel, stride and groups 1, got {kernel}, {stride}, {groups}")
    in_w = value("in_w", int, 1 if op == "linear" else in_h)
    padding = value("padding", int, kernel // 2 if op == "conv" else 0)
    latency = _number(value("latency_ms", float), "column latency_ms")
    energy = value("energy_mj", float)
    std = value("std_ms", float)
    return _layer(key, op, cin, cout, (in_h, in_w), kernel, stride, padding, groups, value("w_bits", int),
                  value("a_bits", int), latency, None if energy is None else _number(energy, "column energy_mj"),
                  None if std is None else _number(std, "column std_ms"), value("count", int))
