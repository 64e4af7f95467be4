"""CostModel: latency, energy, size, MACs and BitOps of a Candidate, without building it.

Like Once-for-All's efficiency predictor, it only knows the search space and a
profile. At construction it prices every choice combination each unit can
take (its groups' keep ratios, rank, bits, sparsity, global scaling) into a
small per-unit table; a candidate's cost is then one table gather per unit,
vectorized over many candidates at once. Rows are the space's encoding
(``space.encoding``), and the shapes come from its ``unit_variants``, the
same walk ``required_signatures`` lists a profile's needs from. A signature
the profile lacks is predicted by the profile's regression if it declares one
(``profile.predictor``), else interpolated if it declares that, otherwise
construction fails naming the missing signatures; ``breakdown`` and
``lookup_sources`` say which figures were measured and which predicted. A
profile with an accelerator model prices each weight/activation bit-width
pair as its own precision (``"w4a8"``), latency and energy alike. Where the
profile holds the model's operations between layers (``profile.graph_ops``),
their share is added to the calibrated layer sums.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from autocompress.hardware.accelerators import layer_cost
from autocompress.hardware.analytic import roofline_ms
from autocompress.hardware.energy import EnergyTable, energy_mj_arrays
from autocompress.hardware.profile import (
    QUANT_CONTEXT,
    SUMMED_FEATURES,
    HardwareProfile,
    ProfileError,
    calibration_features,
    in_context,
)
from autocompress.hardware.signature import LayerSignature, leaf_signatures
from autocompress.space import Candidate, SearchSpace

log = logging.getLogger(__name__)

#: summed over units; SUMMED_FEATURES feed the calibration, latency is calibrated afterwards
_SUMMED = (*SUMMED_FEATURES, "energy_mj", "size_bytes", "macs", "bitops")
#: and per unit: its input activations (millions), what a float<->int8 boundary before it converts
_RAW = (*_SUMMED, "in_mact")
_F = {name: i for i, name in enumerate(_RAW)}
FLOAT_PRECISION = "fp32"
#: how far a model's in-graph/table factor may lie from its calibration's models' before a warning
CONTEXT_TOLERANCE = 0.10


@dataclass(frozen=True)
class Costs:
    latency_ms: float
    energy_mj: float
    size_bytes: float
    macs: float  # effective multiply-accumulates (dense MACs x weight density)
    bitops: float
    energy_method: str
    quantized_layers: int  # leaf layers on quantized kernels (0: an all-float model)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class _UnitTable:
    unit: str
    columns: tuple[int, ...]
    table: np.ndarray  # shape (*choices of each column, len(_RAW))

    def __post_init__(self) -> None:
        # row-major strides turn a row of choice indices into one row of the flattened table
        self.strides = np.array([int(np.prod(self.table.shape[i + 1:-1])) for i in range(len(self.columns))],
                                dtype=np.intp)
        self.flat = self.table.reshape(-1, self.table.shape[-1])


class CostModel:
    """Prices candidates of one space on one profile."""

    def __init__(self, profile: HardwareProfile, space: SearchSpace, *, model: str | None = None,
                 warn_context: bool = True):
        if profile.imported is not None and profile.imported.blocks:
            raise ProfileError(f"profile {profile.name!r} is an imported per-block table "
                               f"({profile.imported.format}, {profile.imported.source_file}): it prices whole blocks "
                               "of its own network space, not the layer signatures of a compression search space; "
                               "price such networks with autocompress.hardware.block_pricing.price_blocks")
        self.profile = profile
        self.space = space
        self.calibration = profile.calibration_for(model, space.graph.input_shape)
        self.graph_ops = profile.graph_ops_for(model, space.graph.input_shape)  # None: not measured for it
        # the quantized sums are taken in this model's context; what is left off is the float layers'
        self.quant_context = profile.quant_context(model, space.graph.input_shape, self.calibration.models)
        off = {p: r for p, r in profile.context_ratios(model, space.graph.input_shape).items()
               if p != QUANT_CONTEXT and abs(r - 1.0) > CONTEXT_TOLERANCE} if warn_context else {}
        if off:
            log.warning("profile %r: %s's layers run in its graph at %s the in-graph/table ratio of the models its "
                        "calibration was fitted on (%s): its predicted latency may be off by about that much; "
                        "`autocompress profile validate PROFILE --models %s` calibrates on it", profile.name, model,
                        ", ".join(f"{r:.2f}x ({p})" for p, r in off.items()),
                        ", ".join(self.calibration.models) or "none", model)
        self.interpolated: set[str] = set()
        self.predicted: set[str] = set()  # signatures the profile's predictor priced
        self._predictor = profile.predictor
        self._predicted_energy: dict[str, float] = {}
        # every signature looked up: its latency and where that came from (see ``breakdown``)
        self._looked_up: dict[str, tuple[float, str]] = {}
        # the model prices every layer of a modelled profile, and the layers without a figure of a measured one
        self._energy_table = EnergyTable.from_dict(profile.energy.table) if profile.energy.table else None
        self._accelerator = profile.accelerator  # prices latency and energy of every signature at every bit-width
        self._lut = {key: entry.latency_ms for key, entry in profile.entries.items()}
        self._lut_energy = {key: entry.energy_mj for key, entry in profile.entries.items()
                            if entry.energy_mj is not None and profile.energy.method != "modelled"}
        missing: set[str] = set()
        self._priced: dict[tuple, np.ndarray] = {}
        self._tables = [self._build(unit, missing) for unit in space.graph.units]
        if missing:
            shown = ", ".join(sorted(missing)[:5])
            how = ("and its predictor covers no such operator type and precision" if self._predictor is not None
                   else "and does not declare interpolation")
            raise ProfileError(f"profile {profile.name!r} has no entry for {len(missing)} layer signature(s) this "
                               f"space can produce, {how}: {shown}{' ...' if len(missing) > 5 else ''} (measure "
                               "them with `autocompress profile measure`, or fit a predictor for unseen signatures "
                               "with `autocompress profile fit-predictor`)")
        del self._priced
        if self.interpolated:
            log.info("cost model: %d signature(s) interpolated from neighbours", len(self.interpolated))
        if self.predicted:
            log.info("cost model: %d signature(s) predicted by the profile's regression", len(self.predicted))

    # -- tables ---------------------------------------------------------------------------
    def _build(self, unit: str, missing: set[str]) -> _UnitTable:
        """The unit's metrics over its shape columns (``Encoding.shape_columns``) and its bits and sparsity."""
        encoding = self.space.encoding
        shape_cols = encoding.shape_columns(unit)
        bit_cols = [encoding.column(unit, dim) for dim in ("w_bits", "a_bits", "sparsity")]
        w_opts, a_opts, sp_opts = (np.array(encoding.columns[c].values, dtype=float) for c in bit_cols)
        precisions = np.array([[self.profile.precision_for(int(w), int(a)) for a in a_opts] for w in w_opts])
        unique_prec = sorted(set(precisions.flat))

        shape_sizes = [len(encoding.columns[c].values) for c in shape_cols]
        table = np.zeros((*shape_sizes, len(w_opts), len(a_opts), len(sp_opts), len(_RAW)))
        for combo_idx, cfg in encoding.unit_variants(unit):  # units dropped by depth scaling cost nothing
            leaves = tuple(leaf_signatures(cfg, FLOAT_PRECISION))
            memo_key = (leaves, tuple(w_opts), tuple(a_opts), tuple(sp_opts))
            if memo_key not in self._priced:  # repeated blocks share shapes: price each shape once
                self._priced[memo_key] = self._price(list(leaves), w_opts, a_opts, sp_opts, precisions,
                                                     unique_prec, missing)
            table[combo_idx] = self._priced[memo_key]
        return _UnitTable(unit, (*shape_cols, *bit_cols), table)

    def _price(self, leaves: list[LayerSignature], w_opts, a_opts, sp_opts, precisions, unique_prec,
               missing: set[str]) -> np.ndarray:
        """Metrics of one unit shape over its (w_bits, a_bits, sparsity) grid."""
        W, A, SP = np.broadcast_arrays(w_opts[:, None, None], a_opts[None, :, None], sp_opts[None, None, :])
        prec = np.broadcast_to(np.vectorize(unique_prec.index)(precisions)[:, :, None], W.shape)
        sp_index = np.broadcast_to(np.arange(len(sp_opts))[None, None, :], W.shape)
        act_bytes = np.where(A >= 32, 4.0, A / 8)  # per element; sub-byte activations stored packed
        out = np.zeros((*W.shape, len(_RAW)))
        if self._accelerator is not None:
            quant = np.array([self._accelerator.quantized(p) for p in unique_prec])[prec]
        elif FLOAT_PRECISION in unique_prec:
            quant = prec != unique_prec.index(FLOAT_PRECISION)
        else:
            quant = np.ones_like(prec, bool)
        for i, leaf in enumerate(leaves):
            params = leaf.weight_params
            nnz = params - np.round(SP * params)
            macs = leaf.macs * nnz / params
            weight_bytes = np.ceil(nnz * W / 8)
            latency = np.zeros((len(unique_prec), len(sp_opts)))
            energy_lut = np.full((len(unique_prec), len(sp_opts)), np.nan)
            for pi, precision in enumerate(unique_prec):
                for si, s in enumerate(sp_opts):
                    sig = replace(leaf, precision=precision, sparsity=float(s) if self.profile.sparse_kernels else 0.0)
                    latency[pi, si] = self._latency(sig, missing)
                    energy_lut[pi, si] = self._lut_energy.get(sig.key, self._predicted_energy.get(sig.key, np.nan))
                    if self._accelerator is not None and np.isnan(energy_lut[pi, si]):
                        # sparsity saves modelled energy even where the kernels do not skip zeros
                        energy_lut[pi, si] = layer_cost(self._accelerator, replace(sig, sparsity=float(s))).energy_mj
            lat = latency[prec, sp_index]
            out[..., _F["sum_float_ms"]] += np.where(quant, 0.0, lat)
            out[..., _F["sum_quant_ms"]] += np.where(quant, lat, 0.0)
            out[..., _F["layers_float"]] += ~quant
            out[..., _F["layers_quant"]] += quant
            out[..., _F["mact_float"]] += np.where(quant, 0.0, leaf.output_elements / 1e6)
            out[..., _F["mact_quant"]] += np.where(quant, leaf.output_elements / 1e6, 0.0)
            if i == 0:
                out[..., _F["in_mact"]] = leaf.input_elements / 1e6
            energy = energy_lut[prec, sp_index]
            if self._energy_table is not None and np.isnan(energy).any():
                energy = np.where(np.isnan(energy), energy_mj_arrays(
                    self._energy_table, macs=macs, weight_bytes=weight_bytes,
                    activation_bytes=(leaf.input_elements + leaf.output_elements) * act_bytes,
                    precision=np.asarray(unique_prec)[prec],
                ), energy)
            out[..., _F["energy_mj"]] += energy
            bitmap = np.where(SP > 0, math.ceil(params / 8), 0)
            bias = 4 * leaf.out_channels if i == len(leaves) - 1 else 0  # folded BN gives every layer a bias
            out[..., _F["size_bytes"]] += weight_bytes + bitmap + bias
            out[..., _F["macs"]] += macs
            out[..., _F["bitops"]] += macs * W * A
        return out

    def _latency(self, sig: LayerSignature, missing: set[str]) -> float:
        if sig.key in self._looked_up:  # the same signature recurs across units and sparsity options
            return self._looked_up[sig.key][0]
        value, source = self._lookup(sig)
        if source is None:
            missing.add(sig.key)
            return 0.0
        self._looked_up[sig.key] = (value, source)
        return value

    def _lookup(self, sig: LayerSignature) -> tuple[float, str | None]:
        """A signature's latency and its source: the table, a model of the device, the predictor or neighbours."""
        value = self._lut.get(sig.key)
        if value is not None:
            return value, self.profile.kind
        if self._accelerator is not None:
            return layer_cost(self._accelerator, sig).latency_ms, "modelled"
        if self.profile.roofline is not None:
            r = self.profile.roofline
            return roofline_ms(sig, peak_macs_per_s=r.peak_macs_per_s, bandwidth_bytes_per_s=r.bandwidth_bytes_per_s,
                               layer_overhead_ms=r.layer_overhead_ms), "modelled"
        if self._predictor is not None and self._predictor.covers(sig):
            latency, energy = self._predictor.predict([sig])
            self.predicted.add(sig.key)
            if not np.isnan(energy[0]):
                self._predicted_energy[sig.key] = float(energy[0])
            return float(latency[0]), "predicted"
        if self.profile.interpolation == "channels":
            value = self._interpolate(sig)
            if value is not None:
                self.interpolated.add(sig.key)
                return value, "interpolated"
        return 0.0, None

    def _interpolate(self, sig: LayerSignature) -> float | None:
        """Linear in MACs between measured neighbours that differ only in channel counts."""
        if not hasattr(self, "_families"):
            self._families: dict[tuple, list[tuple[int, float]]] = {}
            for key, latency in self._lut.items():
                s = LayerSignature.parse(key)
                family = replace(s, in_channels=0, out_channels=0, groups=int(s.groups > 1))
                self._families.setdefault(family.key, []).append((s.macs, latency))
            for points in self._families.values():
                points.sort()
        family = replace(sig, in_channels=0, out_channels=0, groups=int(sig.groups > 1))
        points = self._families.get(family.key)
        if not points:
            return None
        macs = np.array([p[0] for p in points], dtype=float)
        lat = np.array([p[1] for p in points], dtype=float)
        if sig.macs <= macs[0]:
            return float(lat[0] * sig.macs / macs[0]) if macs[0] else float(lat[0])
        if sig.macs >= macs[-1]:
            return float(lat[-1] * sig.macs / macs[-1])
        return float(np.interp(sig.macs, macs, lat))

    # -- prediction -----------------------------------------------------------------------
    def predict_batch(self, indices: np.ndarray) -> dict[str, np.ndarray]:
        """Costs of N encoded candidates: arrays keyed like ``Costs`` fields."""
        indices = np.asarray(indices, dtype=np.intp)
        n = indices.shape[0]
        raw = np.zeros((n, len(_RAW)))
        boundaries = _Boundaries(n)
        for t in self._tables:  # in execution order
            unit = t.flat[indices[:, t.columns] @ t.strides]
            raw += unit
            boundaries.add(unit)
        out = {name: raw[:, _F[name]] for name in _SUMMED}
        out.update(boundaries.features())
        features = in_context(calibration_features(out), self.quant_context)
        out["any_quant"] = features["any_quant"]
        out["graph_ops_ms"] = (self.graph_ops.price(out["mact_float"], out["mact_quant"])
                               if self.graph_ops is not None else np.zeros(n))
        out["latency_ms"] = self.calibration.apply(features) + out["graph_ops_ms"]
        out["latency_sum_ms"] = out["sum_float_ms"] + out["sum_quant_ms"]
        return out

    def predict(self, candidate: Candidate) -> Costs:
        out = self.predict_batch(self.space.encoding.encode([candidate]))
        return Costs(
            latency_ms=float(out["latency_ms"][0]), energy_mj=float(out["energy_mj"][0]),
            size_bytes=float(out["size_bytes"][0]), macs=float(out["macs"][0]), bitops=float(out["bitops"][0]),
            energy_method=self.profile.energy.method, quantized_layers=int(out["layers_quant"][0]),
        )

    def reference(self) -> Costs:
        """The uncompressed model on this profile: what relative budgets refer to."""
        return self.predict(self.space.identity())

    # -- where the figures came from ------------------------------------------------------
    def lookup_sources(self) -> dict[str, int]:
        """How many of the space's distinct signatures were priced from each source.

        Sources: ``"measured"`` (the table of a measured profile; another kind's
        table says its kind), ``"predicted"`` (the profile's regression),
        ``"interpolated"`` (measured neighbours), ``"modelled"`` (a roofline or
        accelerator model).
        """
        counts: dict[str, int] = {}
        for _, source in self._looked_up.values():
            counts[source] = counts.get(source, 0) + 1
        return dict(sorted(counts.items()))

    def breakdown(self, candidate: Candidate) -> list[dict[str, Any]]:
        """The candidate's leaf layers in execution order: unit, signature, latency (ms, before calibration)
        and its source (as in ``lookup_sources``), so a predicted figure is never mistaken for a measured one."""
        rows = []
        for cfg in self.space.layer_configs(candidate):
            precision = self.profile.precision_for(cfg.w_bits, cfg.a_bits)
            sparsity = float(cfg.sparsity) if self.profile.sparse_kernels else 0.0
            for leaf in leaf_signatures(cfg, precision, sparsity):
                latency, source = self._looked_up[leaf.key]
                rows.append({"unit": cfg.name, "signature": leaf.key, "latency_ms": latency, "source": source})
        return rows


class _Boundaries:
    """Float<->quantized switches between consecutive units that run (depth scaling drops some), and the input
    activations each switch converts, accumulated unit by unit in execution order over n candidates."""

    def __init__(self, n: int):
        self.count, self.mact = np.zeros(n), np.zeros(n)
        self.previous = np.full(n, -1.0)  # the last running unit's kind: -1 none yet, 0 float, 1 quantized

    def add(self, unit: np.ndarray) -> None:
        """``unit``: one unit's (n, len(_RAW)) metrics."""
        runs = unit[:, _F["layers_float"]] + unit[:, _F["layers_quant"]] > 0
        quant = (unit[:, _F["layers_quant"]] > 0).astype(float)
        switch = runs & (self.previous >= 0) & (quant != self.previous)
        self.count += switch
        self.mact += np.where(switch, unit[:, _F["in_mact"]], 0.0)
        self.previous = np.where(runs, quant, self.previous)

    def features(self) -> dict[str, np.ndarray]:
        return {"boundaries": self.count, "boundary_mact": self.mact}


def required_signatures(space: SearchSpace, precisions: Iterable[str], *, sparse_kernels: bool = False) -> list[str]:
    """Every leaf signature ``space`` can produce at the given kernel precisions (for profiling).

    It walks the same unit variants the cost tables are built from, so a
    profile measured from this list prices every candidate of the space.
    """
    precisions = list(precisions)
    encoding = space.encoding
    keys: set[str] = set()
    for unit in space.graph.units:
        sparsities = encoding.columns[encoding.column(unit, "sparsity")].values if sparse_kernels else (0.0,)
        for _, cfg in encoding.unit_variants(unit):
            for leaf in leaf_signatures(cfg, FLOAT_PRECISION):
                for prec in precisions:
                    for sp in sparsities:
                        keys.add(replace(leaf, precision=prec, sparsity=float(sp)).key)
    return sorted(keys)
