"""Accuracy predictor: what a candidate would score, before it is trained.

Once-for-All fits an accuracy predictor on trained sub-networks and lets an
evolutionary search, priced by its latency tables, exploit it. Here the
trained trials are few (tens, not thousands), so the predictor starts from
the per-layer sensitivity table's additive prior and learns only corrections:

1. a line ``accuracy ~ a + b * prior`` (how fine-tuning shrinks the drops the
   prior counts, once three trials are trained);
2. with enough trials, a ridge regression on the residuals whose features are
   each column's drop, with leave-one-out cross-validated shrinkage, so a column
   whose cost the prior over- or under-states gets its own weight.

Plain least squares and scikit-learn's ``RidgeCV``: small, deterministic, and
its held-out error is reported so a user can see how far to trust it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.linear_model import RidgeCV

from autocompress.search.sensitivity import Sensitivity

#: trained trials before the line is fitted, and before residual columns are
MIN_FOR_LINE = 3
MIN_FOR_RIDGE = 8


@dataclass
class AccuracyPredictor:
    """``prior -> line -> ridge on residuals``, fitted on (encoded row, accuracy) pairs."""

    sensitivity: Sensitivity
    intercept: float = 0.0
    slope: float = 1.0
    ridge: RidgeCV | None = None
    fitted_on: int = 0
    loo_rmse: float | None = None  # leave-one-out root-mean-square error of the ridge on the trials

    @classmethod
    def fit(cls, sensitivity: Sensitivity, rows: np.ndarray, accuracies: Sequence[float]) -> AccuracyPredictor:
        y = np.asarray(accuracies, dtype=float)
        model = cls(sensitivity, fitted_on=len(y))
        if len(y) < MIN_FOR_LINE:
            return model
        prior = sensitivity.prior(rows)
        if np.ptp(prior) > 1e-9:
            slope, intercept = np.polyfit(prior, y, 1)
            model.slope, model.intercept = float(max(slope, 0.0)), float(intercept)
            if slope <= 0:  # the prior does not rank these trials: predict their mean, let the ridge correct
                model.intercept = float(y.mean())
        else:
            model.slope, model.intercept = 0.0, float(y.mean())
        residual = y - model._line(prior)
        if len(y) >= MIN_FOR_RIDGE:
            features = sensitivity.features(rows)
            ridge = RidgeCV(alphas=np.logspace(-4, 2, 13), store_cv_results=True).fit(features, residual)
            model.ridge = ridge
            loo = ridge.cv_results_[:, list(ridge.alphas).index(ridge.alpha_)]
            model.loo_rmse = float(np.sqrt(np.mean(loo)))
        return model

    def _line(self, prior: np.ndarray) -> np.ndarray:
        if self.fitted_on < MIN_FOR_LINE:
            return prior
        return self.intercept + self.slope * prior

    def predict(self, rows: np.ndarray) -> np.ndarray:
        """Predicted accuracy of encoded rows (the additive prior alone before three trials are trained)."""
        rows = np.atleast_2d(rows)
        out = self._line(self.sensitivity.prior(rows))
        if self.ridge is not None:
            out = out + self.ridge.predict(self.sensitivity.features(rows))
        return out
