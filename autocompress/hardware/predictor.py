"""SignaturePredictor: the cost of layer signatures a measured table lacks, from a regression on those it has.

Like nn-Meter's and LitePred's kernel predictors: one regression per operator
type (1x1 convolution, k x k convolution, depthwise convolution, linear) and
kernel precision, fitted on the profile's own entries, predicting log latency
(and log energy where the entries carry measured energy; otherwise energy
stays the profile's energy model). Features are the shape (channels, spatial
sizes in and out, kernel, stride, groups), the work (MACs) and the bytes moved
at the precision (weights + input and output activations), each with its log.

The model is a ridge regression on the log features (a power law in each
feature: it extrapolates along the scaling of latency with MACs and bytes)
plus boosted regression trees on its residuals (the steps a kernel library
takes with channel blocking and cache sizes, which no power law has).
Trees alone fit the measured range but are flat outside it (a layer wider than
any measured would cost what the widest one does), so the ridge base stays.
Each group keeps the better of ridge and ridge + trees by its own 5-fold
held-out error, which ``autocompress profile fit-predictor`` prints and the
profile stores beside the group.

Everything is stored as plain data in the profile (ridge coefficients,
sklearn's ``tree_`` arrays as JSON lists) and evaluated here with numpy: no
pickle, and no scikit-learn to price. scikit-learn is needed only to fit.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Annotated, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

from autocompress.hardware.signature import LayerSignature

if TYPE_CHECKING:  # the profile holds a predictor; fitting reads a profile
    from autocompress.hardware.profile import HardwareProfile

#: operator types a predictor fits apart (``op_type``)
OP_TYPES = ("conv1x1", "conv_kxk", "depthwise", "linear")
#: raw features of a signature at a precision; every one also enters as its natural log (``log_`` prefix)
RAW_FEATURES = ("in_channels", "out_channels", "in_hw", "out_hw", "kernel", "stride", "groups", "macs",
                "weight_bytes", "activation_bytes", "bytes")
FEATURES = (*RAW_FEATURES, *(f"log_{name}" for name in RAW_FEATURES))
#: the ridge reads the logs only: latency as a product of powers of the features
LOG_FEATURES = FEATURES[len(RAW_FEATURES):]
#: fewer entries than this in a group: no regression for it (its signatures stay unpriced)
MIN_ENTRIES = 20
_BITS = re.compile(r"^w(\d+)a(\d+)$|^[a-z]*?(\d+)$")
Finite = Annotated[float, Field(allow_inf_nan=False)]


def op_type(sig: LayerSignature) -> str:
    """Which regression prices ``sig``: ``"conv1x1"``, ``"conv_kxk"``, ``"depthwise"`` or ``"linear"``."""
    if sig.op == "linear":
        return "linear"
    if sig.groups > 1 and sig.groups == sig.in_channels:
        return "depthwise"
    return "conv1x1" if sig.kernel_size == (1, 1) else "conv_kxk"


def group_key(sig: LayerSignature) -> str:
    """``"conv1x1/int8"``: the operator type and kernel precision a signature is fitted and predicted under."""
    return f"{op_type(sig)}/{sig.precision}"


def precision_bytes(precision: str) -> tuple[float, float]:
    """Bytes per weight and per activation element at a kernel precision: fp32 4/4, int8 1/1, w4a8 0.5/1."""
    m = _BITS.match(precision)
    if not m:
        raise ValueError(f"precision {precision!r}: cannot tell its bit-width (expected e.g. 'fp32', 'int8', 'w4a8')")
    if m.group(1):
        return int(m.group(1)) / 8, int(m.group(2)) / 8
    bits = int(m.group(3)) / 8
    return bits, bits


def features(sigs: Sequence[LayerSignature]) -> np.ndarray:
    """The FEATURES of each signature, one row each (float64)."""
    rows = []
    for s in sigs:
        w_bytes, a_bytes = precision_bytes(s.precision)
        oh, ow = s.out_hw
        weight_bytes = s.weight_params * w_bytes
        activation_bytes = (s.input_elements + s.output_elements) * a_bytes
        rows.append((s.in_channels, s.out_channels, s.in_hw[0] * s.in_hw[1], oh * ow,
                     s.kernel_size[0] * s.kernel_size[1], s.stride[0] * s.stride[1], s.groups, s.macs,
                     weight_bytes, activation_bytes, weight_bytes + activation_bytes))
    raw = np.array(rows, dtype=float).reshape(len(rows), len(RAW_FEATURES))
    return np.concatenate([raw, np.log(np.maximum(raw, 1e-12))], axis=1)


def _row_sums(a: np.ndarray) -> np.ndarray:
    """Each row's sum, column by column: the same order, so the same bits, however many rows (BLAS and numpy's
    pairwise reductions order a row's terms differently with the shape)."""
    out = np.zeros(a.shape[0])
    for j in range(a.shape[1]):
        out += a[:, j]
    return out


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Trees(_Strict):
    """Boosted regression trees as scikit-learn's ``tree_`` arrays, one list per tree.

    At a node, ``x[feature] <= threshold`` goes to ``left``, else ``right``;
    a leaf has ``left == -1`` and its ``value`` is the tree's output. Features
    are compared as float32, as scikit-learn does.
    """

    learning_rate: Finite
    feature: list[list[int]]
    threshold: list[list[Finite]]
    left: list[list[int]]
    right: list[list[int]]
    value: list[list[Finite]]
    _padded: tuple[np.ndarray, ...] | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _same_shapes(self) -> Trees:
        arrays = (self.feature, self.threshold, self.left, self.right, self.value)
        if len({len(a) for a in arrays}) != 1 or not self.feature:
            raise ValueError("feature, threshold, left, right and value must hold one list per tree, and one tree "
                             "or more")
        for t in range(len(self.feature)):
            n = len(self.feature[t])
            if any(len(a[t]) != n for a in arrays) or n == 0:
                raise ValueError(f"tree {t}: its arrays must have one (and the same) length per node")
            left, right, node = np.array(self.left[t]), np.array(self.right[t]), np.arange(n)
            leaf = left == -1
            # children come after their parent (as scikit-learn numbers them), so every walk ends at a leaf
            if (right[leaf] != -1).any() or ((left <= node) | (right <= node) | (left >= n) | (right >= n))[~leaf].any():
                raise ValueError(f"tree {t}: a child index that is not a later node of its {n}, or a half leaf")
            read = np.array(self.feature[t])[~leaf]
            if ((read < 0) | (read >= len(FEATURES))).any():
                raise ValueError(f"tree {t}: a node reads a feature index outside the {len(FEATURES)} FEATURES")
        return self

    def _arrays(self) -> tuple[np.ndarray, ...]:
        """The trees as (trees, nodes) arrays, padded with leaves: every tree walked at once."""
        if self._padded is None:
            shape = (len(self.feature), max(len(f) for f in self.feature))
            feature, left, right = (np.zeros(shape, np.intp), np.full(shape, -1, np.intp), np.full(shape, -1, np.intp))
            threshold, value = np.zeros(shape), np.zeros(shape)
            for t, n in enumerate(len(f) for f in self.feature):
                feature[t, :n] = np.maximum(self.feature[t], 0)  # scikit-learn marks leaves -2; never read
                threshold[t, :n], left[t, :n], right[t, :n], value[t, :n] = (
                    self.threshold[t], self.left[t], self.right[t], self.value[t])
            self._padded = (feature, threshold, left, right, value)
        return self._padded

    def evaluate(self, x32: np.ndarray) -> np.ndarray:
        """Sum of the trees' outputs for each row of ``x32`` (float32 features), times the learning rate."""
        feature, threshold, left, right, value = self._arrays()
        trees = np.arange(feature.shape[0])[None, :]
        rows = np.arange(x32.shape[0])[:, None]
        node = np.zeros((x32.shape[0], feature.shape[0]), dtype=np.intp)
        while True:
            lo = left[trees, node]
            inner = lo != -1
            if not inner.any():
                break
            go_left = x32[rows, feature[trees, node]] <= threshold[trees, node]
            node = np.where(inner, np.where(go_left, lo, right[trees, node]), node)
        return self.learning_rate * _row_sums(value[trees, node])


class Regressor(_Strict):
    """``intercept + coef . (x[features] - mean) / scale`` plus the trees (on all FEATURES), in log units."""

    form: Literal["ridge", "ridge+trees"]
    features: list[str]  # the columns the ridge reads, by name
    intercept: Finite
    mean: list[Finite]
    scale: list[Annotated[float, Field(gt=0.0, allow_inf_nan=False)]]
    coef: list[Finite]
    trees: Trees | None = None

    @field_validator("features")
    @classmethod
    def _known_features(cls, v: list[str]) -> list[str]:
        unknown = [name for name in v if name not in FEATURES]
        if unknown:
            raise ValueError(f"unknown feature(s) {unknown}; this autocompress computes {list(FEATURES)}")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> Regressor:
        if not len(self.features) == len(self.mean) == len(self.scale) == len(self.coef):
            raise ValueError("features, mean, scale and coef must have one value per feature")
        if (self.trees is None) != (self.form == "ridge"):
            raise ValueError(f"form {self.form!r} {'has no' if self.form == 'ridge' else 'needs'} trees")
        return self

    def evaluate(self, x: np.ndarray) -> np.ndarray:
        """Log-unit predictions for rows of ``x`` (all FEATURES, float64)."""
        cols = [FEATURES.index(name) for name in self.features]
        z = (x[:, cols] - np.asarray(self.mean)) / np.asarray(self.scale)
        out = self.intercept + _row_sums(z * np.asarray(self.coef))
        if self.trees is not None:
            out = out + self.trees.evaluate(x.astype(np.float32))
        return out


class HeldOut(_Strict):
    """How far held-out predictions fell from the entries: k-fold, each entry predicted by a fit without it."""

    folds: int
    seed: int
    n: int
    median_abs_rel_error: Finite  # median |predicted / table - 1|
    p90_abs_rel_error: Finite
    within_10pct: Finite  # fraction with |predicted / table - 1| <= 0.1
    #: the other form's median error on the same folds (what the chosen form was picked over)
    alternative: dict[str, Finite] = {}


class GroupPredictor(_Strict):
    """The regressions of one operator type at one precision, what they were fitted on and how well they held out."""

    op_type: Literal["conv1x1", "conv_kxk", "depthwise", "linear"]
    precision: str
    fitted_on: Annotated[int, Field(ge=1)]
    latency: Regressor  # log latency_ms
    latency_held_out: HeldOut
    energy: Regressor | None = None  # log energy_mj; None: the profile's energy model prices energy
    energy_held_out: HeldOut | None = None
    #: per raw feature, [min, max] over the entries fitted on: beyond them a prediction extrapolates
    ranges: dict[str, tuple[float, float]] = {}


class SignaturePredictor(_Strict):
    """Per-group regressions a profile declares for the signatures its table lacks (``profile.predictor``)."""

    target: str = "log latency_ms (and log energy_mj where entries hold measured energy)"
    features: list[str] = list(FEATURES)
    date: str
    command: str = ""
    #: by ``group_key``: ``"conv1x1/fp32"``
    groups: dict[str, GroupPredictor]
    #: groups with entries but too few to fit (fewer than MIN_ENTRIES), or sparse entries: left to the table
    skipped: dict[str, int] = {}

    @field_validator("features")
    @classmethod
    def _same_features(cls, v: list[str]) -> list[str]:
        if list(v) != list(FEATURES):
            raise ValueError(f"fitted on features {v}; this autocompress computes {list(FEATURES)} "
                             "(fit the predictor again with `autocompress profile fit-predictor`)")
        return v

    @model_validator(mode="after")
    def _keys_match(self) -> SignaturePredictor:
        for key, group in self.groups.items():
            if key != f"{group.op_type}/{group.precision}":
                raise ValueError(f"group {key!r} holds {group.op_type}/{group.precision}")
        return self

    def covers(self, sig: LayerSignature) -> bool:
        """Whether a regression prices ``sig`` (dense signatures of a fitted operator type and precision)."""
        return not sig.sparsity and group_key(sig) in self.groups

    def predict(self, sigs: Iterable[LayerSignature]) -> tuple[np.ndarray, np.ndarray]:
        """Latency (ms) and energy (mJ, NaN where the group has no energy regression) of each signature.

        Signatures it does not cover (``covers``) come back NaN in both.
        """
        sigs = list(sigs)
        latency = np.full(len(sigs), np.nan)
        energy = np.full(len(sigs), np.nan)
        by_group: dict[str, list[int]] = {}
        for i, sig in enumerate(sigs):
            if self.covers(sig):
                by_group.setdefault(group_key(sig), []).append(i)
        for key, idx in by_group.items():
            group = self.groups[key]
            x = features([sigs[i] for i in idx])
            latency[idx] = np.exp(group.latency.evaluate(x))
            if group.energy is not None:
                energy[idx] = np.exp(group.energy.evaluate(x))
        return latency, energy

    def summary(self) -> str:
        """One line per group: entries fitted on, form, held-out error."""
        lines = [f"  {'group':16s} {'fitted on':>9s} {'form':12s} {'med err%':>9s} {'p90 err%':>9s} "
                 f"{'<=10%':>6s} {'energy':>8s}"]
        for key in sorted(self.groups):
            g = self.groups[key]
            h = g.latency_held_out
            energy = f"{g.energy_held_out.median_abs_rel_error:7.1%}" if g.energy_held_out else "model"
            lines.append(f"  {key:16s} {g.fitted_on:9d} {g.latency.form:12s} {100 * h.median_abs_rel_error:9.1f} "
                         f"{100 * h.p90_abs_rel_error:9.1f} {h.within_10pct:6.0%} {energy:>8s}")
        for key, n in sorted(self.skipped.items()):
            lines.append(f"  {key:16s} {n:9d} not fitted (fewer than {MIN_ENTRIES} entries, or sparse)")
        return "\n".join(lines)


# -- fitting (scikit-learn) ------------------------------------------------------------------
def _fit_ridge(x: np.ndarray, y: np.ndarray, alpha: float) -> Regressor:
    from sklearn.linear_model import Ridge

    cols = [FEATURES.index(name) for name in LOG_FEATURES]
    xs = x[:, cols]
    mean, scale = xs.mean(axis=0), xs.std(axis=0)
    # a constant feature (one kernel size, one stride) weighs nothing: its spread is rounding error at most, and
    # dividing by that would blow up a signature where it differs
    scale = np.where(scale > 1e-6, scale, 1.0)
    ridge = Ridge(alpha=alpha).fit((xs - mean) / scale, y)
    return Regressor(form="ridge", features=list(LOG_FEATURES), intercept=float(ridge.intercept_),
                     mean=mean.tolist(), scale=scale.tolist(), coef=[float(c) for c in ridge.coef_])


def _fit(x: np.ndarray, y: np.ndarray, form: str, *, seed: int, trees: int, depth: int,
         learning_rate: float) -> Regressor:
    base = _fit_ridge(x, y, alpha=1.0)
    if form == "ridge":
        return base
    from sklearn.ensemble import GradientBoostingRegressor

    residual = y - base.evaluate(x)
    gbr = GradientBoostingRegressor(n_estimators=trees, max_depth=depth, learning_rate=learning_rate,
                                    subsample=0.8, min_samples_leaf=5, random_state=seed)
    gbr.fit(x.astype(np.float32), residual)
    init = float(np.asarray(gbr.init_.predict(x[:1].astype(np.float32))).ravel()[0])
    estimators = [est[0].tree_ for est in gbr.estimators_]
    stored = Trees(
        learning_rate=learning_rate,
        feature=[t.feature.tolist() for t in estimators],
        threshold=[t.threshold.tolist() for t in estimators],
        left=[t.children_left.tolist() for t in estimators],
        right=[t.children_right.tolist() for t in estimators],
        value=[t.value.reshape(-1).tolist() for t in estimators],
    )
    return base.model_copy(update={"form": "ridge+trees", "trees": stored, "intercept": base.intercept + init})


def _errors(y: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    return np.abs(np.exp(predicted - y) - 1.0)


def _cross_validate(x: np.ndarray, y: np.ndarray, *, folds: int, seed: int, **fit_options) -> dict[str, np.ndarray]:
    """Held-out log predictions of each form: every row predicted by the fit on the other folds."""
    from sklearn.model_selection import KFold

    out = {form: np.zeros_like(y) for form in ("ridge", "ridge+trees")}
    for train, test in KFold(n_splits=folds, shuffle=True, random_state=seed).split(x):
        for form in out:
            out[form][test] = _fit(x[train], y[train], form, seed=seed, **fit_options).evaluate(x[test])
    return out


def _held_out(y: np.ndarray, cv: Mapping[str, np.ndarray], folds: int, seed: int) -> tuple[str, HeldOut]:
    """The form with the lower median held-out error, and its figures."""
    medians = {form: float(np.median(_errors(y, p))) for form, p in cv.items()}
    best = min(medians, key=lambda form: (medians[form], form))
    err = _errors(y, cv[best])
    return best, HeldOut(folds=folds, seed=seed, n=len(y), median_abs_rel_error=medians[best],
                         p90_abs_rel_error=float(np.percentile(err, 90)), within_10pct=float(np.mean(err <= 0.1)),
                         alternative={f: m for f, m in medians.items() if f != best})


def fit_predictor(profile: HardwareProfile, *, folds: int = 5, seed: int = 0, trees: int = 150, depth: int = 3,
                  learning_rate: float = 0.1, date: str = "", command: str = "",
                  progress=None) -> SignaturePredictor:
    """Fit one regression per operator type and precision on ``profile``'s entries, with held-out error.

    Each group is cross-validated (``folds``-fold, shuffled with ``seed``) for
    both forms; the one with the lower median held-out error is refitted on
    all the group's entries. Energy gets its own regression where every entry
    of the group has a measured figure. ``progress(done, total)`` is called
    after each group.
    """
    if folds < 2:
        raise ValueError(f"folds: expected at least 2, got {folds}")
    if not profile.entries:
        raise ValueError(f"profile {profile.name!r} has no entries to fit a predictor on")
    measured_energy = profile.energy.method != "modelled"
    grouped: dict[str, list[tuple[LayerSignature, float, float | None]]] = {}
    skipped: dict[str, int] = {}
    for key, entry in profile.entries.items():
        sig = LayerSignature.parse(key)
        if sig.sparsity:  # sparse kernels: too few shapes per sparsity to fit; they stay table-only
            skipped[f"{group_key(sig)}:sparse"] = skipped.get(f"{group_key(sig)}:sparse", 0) + 1
            continue
        energy = entry.energy_mj if measured_energy and entry.energy_mj else None
        grouped.setdefault(group_key(sig), []).append((sig, entry.latency_ms, energy))
    options = {"trees": trees, "depth": depth, "learning_rate": learning_rate}
    groups: dict[str, GroupPredictor] = {}
    for done, (key, rows) in enumerate(sorted(grouped.items()), start=1):
        rows = [r for r in rows if r[1] > 0]  # a zero latency has no log: nothing to learn from it
        if len(rows) < MIN_ENTRIES:
            skipped[key] = len(rows)
            if progress is not None:
                progress(done, len(grouped))
            continue
        sigs = [r[0] for r in rows]
        x = features(sigs)
        k = min(folds, len(rows))
        y = np.log([r[1] for r in rows])
        form, held = _held_out(y, _cross_validate(x, y, folds=k, seed=seed, **options), k, seed)
        group = GroupPredictor(op_type=op_type(sigs[0]), precision=sigs[0].precision, fitted_on=len(rows),
                               latency=_fit(x, y, form, seed=seed, **options), latency_held_out=held,
                               ranges={name: (float(x[:, i].min()), float(x[:, i].max()))
                                       for i, name in enumerate(RAW_FEATURES)})
        if all(r[2] is not None and r[2] > 0 for r in rows):
            e = np.log([r[2] for r in rows])
            e_form, e_held = _held_out(e, _cross_validate(x, e, folds=k, seed=seed, **options), k, seed)
            group = group.model_copy(update={"energy": _fit(x, e, e_form, seed=seed, **options),
                                             "energy_held_out": e_held})
        groups[key] = group
        if progress is not None:
            progress(done, len(grouped))
    if not groups:
        raise ValueError(f"profile {profile.name!r}: no operator type has {MIN_ENTRIES} or more entries at one "
                         f"precision to fit on ({dict(sorted(skipped.items()))})")
    return SignaturePredictor(date=date, command=command, groups=groups, skipped=skipped)


def relative_errors(predicted: Sequence[float], actual: Sequence[float]) -> np.ndarray:
    """|predicted / actual - 1| per element."""
    return np.abs(np.asarray(predicted, dtype=float) / np.asarray(actual, dtype=float) - 1.0)


__all__ = ["FEATURES", "MIN_ENTRIES", "OP_TYPES", "GroupPredictor", "HeldOut", "Regressor", "SignaturePredictor",
           "Trees", "features", "fit_predictor", "group_key", "op_type", "precision_bytes", "relative_errors"]
