"""Statistics behind rollout decisions: the DeLong variance of an AUC and the confidence interval
of the AUC difference between two arms.

DeLong's method (Sun & Xu 2014 mid-rank formulation, O(n log n)) estimates the variance of an AUC
from the structural components of the Mann-Whitney statistic; no bootstrap, exact for ties.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from ..schema import LABEL


def _midranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks with ties given their average rank."""
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    n = len(x)
    ranks_sorted = np.empty(n, dtype=float)
    i = 0
    while i < n:
        j = i
        while j < n and xs[j] == xs[i]:
            j += 1
        ranks_sorted[i:j] = 0.5 * (i + j - 1) + 1
        i = j
    out = np.empty(n, dtype=float)
    out[order] = ranks_sorted
    return out


def delong_auc_variance(y: Sequence[int], s: Sequence[float]) -> tuple[float, float] | None:
    """(AUC, DeLong variance of the AUC) for labels `y` in {0,1} and scores `s`; None if a class
    is missing. Uses the mid-rank formulation of Sun & Xu (2014), O(n log n):
    V10_i (per positive) = (R_i - Rpos_i) / n, V01_j (per negative) = 1 - (R_j - Rneg_j) / m,
    var = Var(V10) / m + Var(V01) / n with m positives, n negatives, R the ranks in the pooled
    sample and Rpos/Rneg the ranks within each class (ties count one half)."""
    y = np.asarray(y).astype(int).ravel()
    s = np.asarray(s, dtype=float).ravel()
    if len(y) != len(s):
        raise ValueError("labels and scores differ in length")
    keep = np.isfinite(s)
    y, s = y[keep], s[keep]
    pos, neg = s[y == 1], s[y == 0]
    m, n = len(pos), len(neg)
    if m == 0 or n == 0:
        return None
    r_all = _midranks(np.concatenate([pos, neg]))
    r_pos, r_neg = _midranks(pos), _midranks(neg)
    v10 = (r_all[:m] - r_pos) / n
    v01 = 1.0 - (r_all[m:] - r_neg) / m
    auc = float(v10.mean())
    s10 = float(np.var(v10, ddof=1)) if m > 1 else 0.0
    s01 = float(np.var(v01, ddof=1)) if n > 1 else 0.0
    return auc, s10 / m + s01 / n


def _z(level: float) -> float:
    from scipy.stats import norm  # noqa: PLC0415 - heavy: scipy

    if not 0 < level < 1:
        raise ValueError("level must be in (0, 1)")
    return float(norm.ppf(0.5 + level / 2))


def auc_difference_ci(y_cand, s_cand, y_prod, s_prod, level: float = 0.95) -> dict[str, float] | None:
    """DeLong confidence interval for AUC(candidate) - AUC(production).

    The arms are **unpaired**: routing sends each patient to one variant, so the two AUCs are
    estimated on disjoint, independent samples and the variance of the difference is the sum of
    the two DeLong variances (no covariance term, unlike the paired DeLong test on one test set).
    The interval is the normal approximation diff +/- z * sqrt(var1 + var2).

    Returns {"diff", "low", "high", "se", "auc_candidate", "auc_production", "level"}, or None
    when either arm lacks positives or negatives.
    """
    a = delong_auc_variance(y_cand, s_cand)
    b = delong_auc_variance(y_prod, s_prod)
    if a is None or b is None:
        return None
    diff = a[0] - b[0]
    se = math.sqrt(a[1] + b[1])
    z = _z(level)
    return {"diff": diff, "low": diff - z * se, "high": diff + z * se, "se": se,
            "auc_candidate": a[0], "auc_production": b[0], "level": level}


def ci_from_labelled(frame, candidate: str = "green", production: str = "blue",
                     level: float = 0.95) -> dict[str, float] | None:
    """`auc_difference_ci` from a labelled-predictions frame (`PredictionStore.labelled()`:
    columns variant, score, readmitted_30d)."""
    c = frame[frame["variant"] == candidate]
    p = frame[frame["variant"] == production]
    return auc_difference_ci(c[LABEL].to_numpy(), c["score"].to_numpy(dtype=float),
                             p[LABEL].to_numpy(), p["score"].to_numpy(dtype=float), level)
