"""Small estimators the built-in training entry points put at the end of their pipelines."""
from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin, clone


class ClippedRegressor(RegressorMixin, BaseEstimator):
    """A regressor whose predictions are clipped to [low, high]: the spec's business rule on scores
    (an ensemble of trees can overshoot the label range a little). Recorded as `clip` in model.json."""

    def __init__(self, estimator: Any = None, low: float = -np.inf, high: float = np.inf):
        self.estimator, self.low, self.high = estimator, low, high

    def fit(self, X, y, **kw):
        self.estimator_ = clone(self.estimator).fit(X, y, **kw)
        return self

    def predict(self, X):
        return np.clip(np.asarray(self.estimator_.predict(X), dtype=np.float64), self.low, self.high)
