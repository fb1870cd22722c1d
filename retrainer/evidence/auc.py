"""AUC differences with their sampling error: paired and unpaired DeLong, and a bootstrap
clustered on a pseudonym when one patient contributes several rows.

DeLong's method in the mid-rank form of Sun & Xu (2014), O(n log n), exact for ties. For a model
scored on m positives and n negatives the structural components are

    V10_i = (R_i - Rpos_i) / n        per positive i,
    V01_j = 1 - (R_j - Rneg_j) / m    per negative j,

with R the mid-ranks in the pooled sample and Rpos/Rneg the mid-ranks within each class; the AUC
is mean(V10) and its variance Var(V10)/m + Var(V01)/n.

**Paired** (both models scored on the same rows, same outcomes): with S the 2x2 covariance
S10/m + S01/n of the two models' components, var(AUC_c - AUC_p) = S_cc + S_pp - 2 S_cp. The
covariance term is what makes a paired comparison on one test set far more precise than two
independent samples of the same size.

**Unpaired** (each row scored by one arm only, as in a canary without shadow scoring): the two
AUCs are independent, var(diff) = var_c + var_p.

**Clustered bootstrap**: DeLong assumes independent rows. When the same patient pseudonym appears
more than once among the compared rows (readmissions), rows are resampled by pseudonym (all rows
of a patient together) and the interval is the percentile interval of the replicates.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy.stats import norm, rankdata

DEFAULT_BOOTSTRAP = 1000


def _clean(y, *scores) -> tuple[np.ndarray, ...]:
    y = np.asarray(y).astype(int).ravel()
    ss = [np.asarray(s, dtype=float).ravel() for s in scores]
    for s in ss:
        if len(s) != len(y):
            raise ValueError("labels and scores differ in length")
    keep = np.ones(len(y), dtype=bool)
    for s in ss:
        keep &= np.isfinite(s)
    return (y[keep], *(s[keep] for s in ss))


def _components(y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(V10 per positive, V01 per negative) for one model."""
    pos, neg = s[y == 1], s[y == 0]
    m, n = len(pos), len(neg)
    r_all = rankdata(np.concatenate([pos, neg]))
    v10 = (r_all[:m] - rankdata(pos)) / n
    v01 = 1.0 - (r_all[m:] - rankdata(neg)) / m
    return v10, v01


def auc_of(y, s) -> float | None:
    """Mann-Whitney AUC (ties count one half); None when a class is missing."""
    y, s = _clean(y, s)
    if not (y == 1).any() or not (y == 0).any():
        return None
    return float(_components(y, s)[0].mean())


def delong_auc_variance(y: Sequence[int], s: Sequence[float]) -> tuple[float, float] | None:
    """(AUC, DeLong variance of the AUC) for labels in {0, 1} and scores; None if a class is
    missing. Non-finite scores are dropped."""
    y, s = _clean(y, s)
    m, n = int((y == 1).sum()), int((y == 0).sum())
    if m == 0 or n == 0:
        return None
    v10, v01 = _components(y, s)
    s10 = float(np.var(v10, ddof=1)) if m > 1 else 0.0
    s01 = float(np.var(v01, ddof=1)) if n > 1 else 0.0
    return float(v10.mean()), s10 / m + s01 / n


def z_two_sided(level: float) -> float:
    """The normal quantile of a two-sided `level` interval (1.96 for 0.95)."""
    if not 0 < level < 1:
        raise ValueError("level must be in (0, 1)")
    return float(norm.ppf(0.5 + level / 2))


@dataclass(frozen=True)
class AUCDelta:
    """AUC(candidate) - AUC(production) with its interval and the sample it came from."""

    method: str  # "paired DeLong" | "unpaired DeLong" | "clustered bootstrap (paired)" | ...
    delta: float
    low: float
    high: float
    se: float
    level: float
    auc_candidate: float
    auc_production: float
    n_candidate: int
    pos_candidate: int
    n_production: int
    pos_production: int

    @property
    def neg_candidate(self) -> int:
        return self.n_candidate - self.pos_candidate

    @property
    def neg_production(self) -> int:
        return self.n_production - self.pos_production

    def to_dict(self) -> dict:
        d = dict(self.__dict__)
        d["neg_candidate"], d["neg_production"] = self.neg_candidate, self.neg_production
        return d


def paired_delong(y, s_production, s_candidate, level: float = 0.95) -> AUCDelta | None:
    """Paired DeLong interval of AUC(candidate) - AUC(production), both scored on the same rows;
    None when a class is missing. Rows where either score is not finite are dropped."""
    y, sp, sc = _clean(y, s_production, s_candidate)
    m, n = int((y == 1).sum()), int((y == 0).sum())
    if m == 0 or n == 0:
        return None
    v10c, v01c = _components(y, sc)
    v10p, v01p = _components(y, sp)
    auc_c, auc_p = float(v10c.mean()), float(v10p.mean())
    s10 = np.cov(np.vstack([v10c, v10p]), ddof=1) if m > 1 else np.zeros((2, 2))
    s01 = np.cov(np.vstack([v01c, v01p]), ddof=1) if n > 1 else np.zeros((2, 2))
    cov = s10 / m + s01 / n
    var = float(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    se = math.sqrt(max(var, 0.0))
    z = z_two_sided(level)
    d = auc_c - auc_p
    return AUCDelta("paired DeLong", d, d - z * se, d + z * se, se, level, auc_c, auc_p,
                    len(y), m, len(y), m)


def unpaired_delong(y_candidate, s_candidate, y_production, s_production,
                    level: float = 0.95) -> AUCDelta | None:
    """DeLong interval of AUC(candidate) - AUC(production) on two independent samples (each row
    scored by one arm); None when either arm lacks a class."""
    yc, sc = _clean(y_candidate, s_candidate)
    yp, sp = _clean(y_production, s_production)
    a, b = delong_auc_variance(yc, sc), delong_auc_variance(yp, sp)
    if a is None or b is None:
        return None
    d = a[0] - b[0]
    se = math.sqrt(a[1] + b[1])
    z = z_two_sided(level)
    return AUCDelta("unpaired DeLong", d, d - z * se, d + z * se, se, level, a[0], b[0],
                    len(yc), int(yc.sum()), len(yp), int(yp.sum()))


def _valid_key(x) -> bool:
    return x is not None and x == x and str(x) not in ("", "<NA>", "nan", "None")


def _cluster_index(clusters: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """Row indices grouped by cluster key; a missing key is a cluster of its own row."""
    keys = np.array([str(x) if _valid_key(x) else f"\x00row{i}" for i, x in enumerate(clusters)])
    codes, inverse = np.unique(keys, return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    bounds = np.flatnonzero(np.diff(inverse[order])) + 1
    return codes, np.split(order, bounds)


def _resample(groups: list[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    pick = rng.integers(0, len(groups), size=len(groups))
    return np.concatenate([groups[i] for i in pick]) if len(groups) else np.empty(0, dtype=int)


def _fast_auc(y: np.ndarray, s: np.ndarray) -> float:
    m = int(y.sum())
    n = len(y) - m
    if m == 0 or n == 0:
        return float("nan")
    r = rankdata(s)
    return float((r[y == 1].sum() - m * (m + 1) / 2) / (m * n))


def _percentile(deltas: np.ndarray, level: float) -> tuple[float, float, float]:
    deltas = deltas[np.isfinite(deltas)]
    if len(deltas) < 2:
        raise ValueError("too few usable bootstrap replicates")
    a = (1 - level) / 2
    return float(np.quantile(deltas, a)), float(np.quantile(deltas, 1 - a)), float(np.std(deltas, ddof=1))


def clustered_bootstrap_paired(y, s_production, s_candidate, clusters, level: float = 0.95,
                               n_boot: int = DEFAULT_BOOTSTRAP, seed: int = 0) -> AUCDelta | None:
    """Paired AUC difference with a percentile interval from resampling whole clusters (all rows
    of one pseudonym together). None when a class is missing."""
    y = np.asarray(y).astype(int).ravel()
    sp, sc = np.asarray(s_production, float).ravel(), np.asarray(s_candidate, float).ravel()
    cl = np.asarray(clusters, dtype=object).ravel()
    keep = np.isfinite(sp) & np.isfinite(sc)
    y, sp, sc, cl = y[keep], sp[keep], sc[keep], cl[keep]
    m = int(y.sum())
    if m == 0 or m == len(y):
        return None
    _, groups = _cluster_index(cl)
    rng = np.random.default_rng(seed)
    deltas = np.empty(n_boot)
    for b in range(n_boot):
        idx = _resample(groups, rng)
        deltas[b] = _fast_auc(y[idx], sc[idx]) - _fast_auc(y[idx], sp[idx])
    auc_c, auc_p = _fast_auc(y, sc), _fast_auc(y, sp)
    low, high, se = _percentile(deltas, level)
    return AUCDelta("clustered bootstrap (paired)", auc_c - auc_p, low, high, se, level, auc_c, auc_p,
                    len(y), m, len(y), m)


def clustered_bootstrap_unpaired(y_candidate, s_candidate, c_candidate, y_production, s_production,
                                 c_production, level: float = 0.95, n_boot: int = DEFAULT_BOOTSTRAP,
                                 seed: int = 0) -> AUCDelta | None:
    """Unpaired AUC difference, each arm resampled by its own clusters."""
    arms = []
    for y, s, c in ((y_candidate, s_candidate, c_candidate), (y_production, s_production, c_production)):
        y = np.asarray(y).astype(int).ravel()
        s = np.asarray(s, float).ravel()
        c = np.asarray(c, dtype=object).ravel()
        keep = np.isfinite(s)
        y, s, c = y[keep], s[keep], c[keep]
        if y.sum() == 0 or y.sum() == len(y):
            return None
        arms.append((y, s, _cluster_index(c)[1]))
    rng = np.random.default_rng(seed)
    deltas = np.empty(n_boot)
    for b in range(n_boot):
        (yc, sc, gc), (yp, sp, gp) = arms
        ic, ip = _resample(gc, rng), _resample(gp, rng)
        deltas[b] = _fast_auc(yc[ic], sc[ic]) - _fast_auc(yp[ip], sp[ip])
    (yc, sc, _), (yp, sp, _) = arms
    auc_c, auc_p = _fast_auc(yc, sc), _fast_auc(yp, sp)
    low, high, se = _percentile(deltas, level)
    return AUCDelta("clustered bootstrap (unpaired)", auc_c - auc_p, low, high, se, level, auc_c, auc_p,
                    len(yc), int(yc.sum()), len(yp), int(yp.sum()))


def has_repeats(clusters) -> bool:
    """True when some non-null cluster key appears more than once."""
    if clusters is None:
        return False
    arr = np.asarray(clusters, dtype=object).ravel()
    keys = [str(x) for x in arr if _valid_key(x)]
    return len(keys) > len(set(keys))
