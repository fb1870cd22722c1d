"""Metrics and comparisons for regression and ranking models: Spearman's rank correlation (the
primary metric), MAE and RMSE, and the non-inferiority rule on Spearman.

* **One Spearman.** r is Pearson's correlation of the ranks. Its interval is Fisher's z with the
  Bonett & Wright (2000) variance for Spearman, (1 + r²/2) / (n - 3), back-transformed by tanh.
* **Two models on the same rows** (the registration test days, a shadow): r_c = r(y, candidate)
  and r_p = r(y, production) share y, so they are dependent. The interval of Δ = r_c - r_p is
  Zou's (2007) for two overlapping correlations: it combines each correlation's own interval with
  their correlation, estimated from r(candidate, production). When an entity (an account) repeats,
  a paired bootstrap resampling whole entities replaces it.
* **Two models on different rows** (a canary's arms): Zou's interval for independent
  correlations.

The rule is the AUC rule's (`rule.py`) on Δ Spearman: promote iff low > -tolerance, roll back iff
high < -tolerance, else inconclusive - and inconclusive below `min_rows` labelled rows per arm.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.stats import rankdata

from .auc import has_repeats, z_two_sided
from .rule import Counts, Evidence

MIN_ROWS = 200  # labelled rows per compared arm before a regression comparison may decide
DEFAULT_BOOTSTRAP = 1000


def _clean(y, *scores) -> tuple[np.ndarray, ...]:
    arrays = [np.asarray(y, dtype=float).ravel()] + [np.asarray(s, dtype=float).ravel() for s in scores]
    ok = np.all([np.isfinite(a) for a in arrays], axis=0)
    return tuple(a[ok] for a in arrays)


def _pearson(a: np.ndarray, b: np.ndarray) -> float | None:
    if len(a) < 3:
        return None
    a, b = a - a.mean(), b - b.mean()
    den = math.sqrt(float(a @ a) * float(b @ b))
    return None if den == 0 else float(a @ b) / den


def spearman(y, s) -> float | None:
    """Spearman's rank correlation (average ranks for ties); None when undefined."""
    y, s = _clean(y, s)
    return _pearson(rankdata(y), rankdata(s))


def fisher_se(r: float, n: int) -> float:
    """Standard error of atanh(r) for a Spearman correlation (Bonett & Wright 2000)."""
    return math.sqrt((1 + r * r / 2) / (n - 3))


def spearman_interval(r: float, n: int, level: float = 0.95) -> tuple[float, float]:
    """Two-sided `level` interval of one Spearman correlation on `n` rows."""
    z = math.atanh(max(min(r, 1 - 1e-12), -1 + 1e-12))
    h = z_two_sided(level) * fisher_se(r, n)
    return math.tanh(z - h), math.tanh(z + h)


def regression_metrics(y, p, level: float = 0.95) -> dict:
    """Test metrics of a regression or ranking model: Spearman with its standard error (delta
    method on Fisher's z) and interval, MAE and RMSE with theirs, and the rows they were measured on."""
    y, p = _clean(y, p)
    n = int(len(y))
    r = spearman(y, p) if n >= 4 else None
    err = p - y
    out: dict = {"n": n, "spearman": None, "spearman_se": None, "spearman_low": None, "spearman_high": None,
                 "mae": None, "mae_se": None, "rmse": None, "rmse_se": None, "mean_label": None,
                 "mean_prediction": None}
    rd = lambda v: None if v is None else round(float(v), 6)  # noqa: E731
    if n:
        mae, mse = float(np.mean(np.abs(err))), float(np.mean(err ** 2))
        out.update(mae=rd(mae), rmse=rd(math.sqrt(mse)), mean_label=rd(y.mean()), mean_prediction=rd(p.mean()))
        if n > 1:
            out["mae_se"] = rd(np.std(np.abs(err), ddof=1) / math.sqrt(n))
            # delta method: se(sqrt(MSE)) = se(MSE) / (2 sqrt(MSE))
            out["rmse_se"] = rd(np.std(err ** 2, ddof=1) / math.sqrt(n) / (2 * math.sqrt(mse))) if mse > 0 else 0.0
    if r is not None and n > 3:
        lo, hi = spearman_interval(r, n, level)
        out.update(spearman=rd(r), spearman_se=rd((1 - r * r) * fisher_se(r, n)), spearman_low=rd(lo),
                   spearman_high=rd(hi))
    out["level"] = level
    return out


@dataclass(frozen=True)
class SpearmanDelta:
    """Δ = Spearman(candidate) - Spearman(production) with its interval."""
    method: str
    level: float
    delta: float
    low: float
    high: float
    r_candidate: float
    r_production: float
    n_candidate: int
    n_production: int

    @property
    def se(self) -> float:
        return (self.high - self.low) / (2 * z_two_sided(self.level))


def zou_overlapping(y, s_production, s_candidate, level: float = 0.95) -> SpearmanDelta | None:
    """Zou (2007), overlapping dependent correlations r(y, candidate) and r(y, production) on the
    same rows, with Fisher/Bonett-Wright intervals for each."""
    y, sp, sc = _clean(y, s_production, s_candidate)
    n = len(y)
    if n < 10:
        return None
    ry, rp, rc = rankdata(y), rankdata(sp), rankdata(sc)
    r1, r2, r12 = _pearson(ry, rc), _pearson(ry, rp), _pearson(rc, rp)
    if r1 is None or r2 is None or r12 is None:
        return None
    l1, u1 = spearman_interval(r1, n, level)
    l2, u2 = spearman_interval(r2, n, level)
    c = (((r12 - r1 * r2 / 2) * (1 - r1 * r1 - r2 * r2 - r12 * r12) + r12 ** 3)
         / max((1 - r1 * r1) * (1 - r2 * r2), 1e-12))
    d = r1 - r2
    low = d - math.sqrt(max((r1 - l1) ** 2 + (u2 - r2) ** 2 - 2 * c * (r1 - l1) * (u2 - r2), 0.0))
    high = d + math.sqrt(max((u1 - r1) ** 2 + (r2 - l2) ** 2 - 2 * c * (u1 - r1) * (r2 - l2), 0.0))
    return SpearmanDelta("paired Spearman, Zou (2007) interval", level, d, low, high, r1, r2, n, n)


def zou_independent(y_candidate, s_candidate, y_production, s_production, level: float = 0.95) -> SpearmanDelta | None:
    """Zou (2007) for two correlations on independent rows (a canary's two arms)."""
    yc, sc = _clean(y_candidate, s_candidate)
    yp, sp = _clean(y_production, s_production)
    if len(yc) < 10 or len(yp) < 10:
        return None
    r1, r2 = spearman(yc, sc), spearman(yp, sp)
    if r1 is None or r2 is None:
        return None
    l1, u1 = spearman_interval(r1, len(yc), level)
    l2, u2 = spearman_interval(r2, len(yp), level)
    d = r1 - r2
    return SpearmanDelta("unpaired Spearman, Zou (2007) interval", level, d,
                         d - math.sqrt((r1 - l1) ** 2 + (u2 - r2) ** 2), d + math.sqrt((u1 - r1) ** 2 + (r2 - l2) ** 2),
                         r1, r2, len(yc), len(yp))


def bootstrap_paired(y, s_production, s_candidate, clusters=None, level: float = 0.95,
                     n_boot: int = DEFAULT_BOOTSTRAP, seed: int = 0) -> SpearmanDelta | None:
    """Paired percentile bootstrap of Δ Spearman, resampling whole clusters (entities) when given."""
    y = np.asarray(y, dtype=float).ravel()
    sp, sc = np.asarray(s_production, dtype=float).ravel(), np.asarray(s_candidate, dtype=float).ravel()
    ok = np.isfinite(y) & np.isfinite(sp) & np.isfinite(sc)
    y, sp, sc = y[ok], sp[ok], sc[ok]
    n = len(y)
    if n < 10:
        return None
    r1, r2 = spearman(y, sc), spearman(y, sp)
    if r1 is None or r2 is None:
        return None
    rng = np.random.default_rng(seed)
    if clusters is not None:
        keys = np.asarray(clusters, dtype=object).ravel()[ok]
        _, inverse = np.unique(keys.astype(str), return_inverse=True)
        groups = [np.flatnonzero(inverse == g) for g in range(inverse.max() + 1)]
    else:
        groups = None
    deltas = np.empty(n_boot)
    for b in range(n_boot):
        if groups is None:
            idx = rng.integers(0, n, n)
        else:
            idx = np.concatenate([groups[g] for g in rng.integers(0, len(groups), len(groups))])
        a, c, p = rankdata(y[idx]), rankdata(sc[idx]), rankdata(sp[idx])
        d1, d2 = _pearson(a, c), _pearson(a, p)
        deltas[b] = np.nan if d1 is None or d2 is None else d1 - d2
    deltas = deltas[np.isfinite(deltas)]
    if len(deltas) < n_boot // 2:
        return None
    alpha = (1 - level) / 2
    low, high = np.quantile(deltas, [alpha, 1 - alpha])
    what = "entity-clustered" if groups is not None else "row"
    return SpearmanDelta(f"paired Spearman, {what} bootstrap ({len(deltas)} resamples)", level, r1 - r2,
                         float(low), float(high), r1, r2, n, n)


def decide_spearman(delta: SpearmanDelta | None, tolerance: float, *, source: str, paired: bool,
                    n_candidate: int, n_production: int, min_rows: int = MIN_ROWS) -> Evidence:
    """The non-inferiority rule on Δ Spearman; inconclusive with fewer than `min_rows` labelled
    rows in a compared arm. The Evidence's auc_* fields carry the two Spearman values."""
    cand, prod = Counts(n_candidate, 0), Counts(n_production, 0)
    base = dict(source=source, tolerance=tolerance, candidate=cand, production=prod, paired=paired, metric="spearman")
    if delta is not None:
        base.update(method=delta.method, level=delta.level, delta=delta.delta, low=delta.low, high=delta.high,
                    se=delta.se, auc_candidate=delta.r_candidate, auc_production=delta.r_production)
    where = f"{source}: " if source else ""
    arms = [("candidate", n_candidate)] + ([] if paired else [("production", n_production)])
    short = [f"{name} has {n} labelled rows" for name, n in arms if n < min_rows]
    if short:
        return Evidence(verdict="inconclusive", **base,
                        reason=f"{where}inconclusive: too few labels ({'; '.join(short)}; need {min_rows} per arm)")
    if delta is None:
        return Evidence(verdict="inconclusive", **base, reason=f"{where}inconclusive: Spearman undefined")
    rows = f"{n_candidate:,} rows" if paired else f"{n_candidate:,} + {n_production:,} rows"
    what = (f"{where}{delta.method} on {rows}: ΔSpearman {delta.delta:+.4f} ({delta.r_candidate:.4f} vs "
            f"{delta.r_production:.4f}), {delta.level:.0%} CI [{delta.low:+.4f}, {delta.high:+.4f}]")
    if delta.low > -tolerance:
        return Evidence(verdict="promote", **base, reason=f"{what}; lower bound > -{tolerance:g}: non-inferior")
    if delta.high < -tolerance:
        return Evidence(verdict="rollback", **base,
                        reason=f"{what}; upper bound < -{tolerance:g}: worse by more than the tolerance")
    return Evidence(verdict="inconclusive", **base, reason=f"{what} contains -{tolerance:g}: inconclusive")


def compare_spearman_paired(y, s_production, s_candidate, *, tolerance: float, source: str = "",
                            level: float = 0.95, clusters=None, min_rows: int = MIN_ROWS,
                            method: str = "auto", n_boot: int = DEFAULT_BOOTSTRAP, seed: int = 0) -> Evidence:
    """Both models scored on the same labelled rows: Zou's interval, or (method "bootstrap", or
    "auto" with a repeating entity) a paired bootstrap clustered on `clusters`."""
    boot = method == "bootstrap" or (method == "auto" and has_repeats(clusters))
    delta = (bootstrap_paired(y, s_production, s_candidate, clusters if has_repeats(clusters) else None, level,
                              n_boot, seed) if boot else zou_overlapping(y, s_production, s_candidate, level))
    n = int(len(_clean(y, s_production, s_candidate)[0]))
    return decide_spearman(delta, tolerance, source=source, paired=True, n_candidate=n, n_production=n,
                           min_rows=min_rows)


def compare_spearman_unpaired(y_candidate, s_candidate, y_production, s_production, *, tolerance: float,
                              source: str = "", level: float = 0.95, min_rows: int = MIN_ROWS) -> Evidence:
    """Each labelled row scored by one arm (a canary): Zou's interval for independent correlations."""
    delta = zou_independent(y_candidate, s_candidate, y_production, s_production, level)
    nc, np_ = len(_clean(y_candidate, s_candidate)[0]), len(_clean(y_production, s_production)[0])
    return decide_spearman(delta, tolerance, source=source, paired=False, n_candidate=nc, n_production=np_,
                           min_rows=min_rows)


def spearman_difference(y, a, b, level: float = 0.95, method: str = "zou", clusters=None, *,
                        tolerance: float = 0.02, source: str = "", min_rows: int = MIN_ROWS,
                        n_boot: int = DEFAULT_BOOTSTRAP, seed: int = 0) -> Evidence:
    """Δ = Spearman(y, a) - Spearman(y, b) of two models `a` (the candidate) and `b` (production)
    scored on the same rows, as the `Evidence` the gate reads: Zou's (2007) interval for
    overlapping correlations (`method="zou"`) or a paired bootstrap (`"bootstrap"`), clustered on
    `clusters` when an entity repeats there."""
    if method not in ("zou", "bootstrap"):
        raise ValueError(f"method must be 'zou' or 'bootstrap', not {method!r}")
    return compare_spearman_paired(y, b, a, tolerance=tolerance, source=source, level=level, clusters=clusters,
                                   min_rows=min_rows, method=method, n_boot=n_boot, seed=seed)


def _cluster_mean_se(v: np.ndarray, clusters) -> float:
    """Standard error of mean(v): i.i.d. rows, or cluster-robust (sums per cluster) when given."""
    n = len(v)
    if clusters is None or not has_repeats(clusters):
        return float(np.std(v, ddof=1) / math.sqrt(n))
    _, inv = np.unique(np.asarray(clusters, dtype=object).astype(str), return_inverse=True)
    sums = np.bincount(inv, weights=v - v.mean())
    g = len(sums)
    return float(math.sqrt(g / (g - 1) * float(sums @ sums)) / n) if g > 1 else float("nan")


def error_difference(y, a, b, metric: str = "mae", level: float = 0.95, clusters=None) -> dict | None:
    """The paired difference MAE(a) - MAE(b) or RMSE(a) - RMSE(b) on the same rows (lower is better:
    a negative Δ favours `a`), with its standard error (per-row differences, cluster-robust when an
    entity repeats; RMSE by the delta method) and a normal `level` interval. None below 3 rows."""
    if metric not in ("mae", "rmse"):
        raise ValueError(f"metric must be 'mae' or 'rmse', not {metric!r}")
    y, a, b = (np.asarray(v, dtype=float).ravel() for v in (y, a, b))
    ok = np.isfinite(y) & np.isfinite(a) & np.isfinite(b)
    y, a, b = y[ok], a[ok], b[ok]
    clusters = None if clusters is None else np.asarray(clusters, dtype=object).ravel()[ok]
    n = len(y)
    if n < 3:
        return None
    ea, eb = a - y, b - y
    if metric == "mae":
        d = np.abs(ea) - np.abs(eb)
        delta, se = float(d.mean()), _cluster_mean_se(d, clusters)
    else:
        ma, mb = float(np.mean(ea ** 2)), float(np.mean(eb ** 2))
        if ma <= 0 or mb <= 0:
            return None
        # delta method on sqrt(MSE_a) - sqrt(MSE_b): a linear combination of per-row squared errors
        v = ea ** 2 / (2 * math.sqrt(ma)) - eb ** 2 / (2 * math.sqrt(mb))
        delta, se = math.sqrt(ma) - math.sqrt(mb), _cluster_mean_se(v, clusters)
    h = z_two_sided(level) * se
    return {"metric": metric, "delta": round(delta, 6), "se": round(se, 6), "low": round(delta - h, 6),
            "high": round(delta + h, 6), "level": level, "n": int(n), "lower_is_better": True,
            "method": "paired differences" + (", entity-clustered" if clusters is not None and has_repeats(clusters)
                                              else "")}


def pool_spearman(pieces, tolerance: float, *, source: str = "pooled", level: float = 0.95,
                  min_rows: int = MIN_ROWS) -> Evidence:
    """Independent Spearman comparisons (the registration test days, matured shadow rows or arms)
    pooled by inverse-variance weighting of Δ, then the rule. Pieces without an interval add
    nothing; none usable is inconclusive."""
    pieces = [p for p in pieces if p is not None]
    usable = [p for p in pieces if p.delta is not None and p.se]
    n_c = sum(p.candidate.n for p in usable)
    n_p = sum(p.production.n for p in usable)
    paired = all(p.paired for p in usable) if usable else True
    if not usable:
        return decide_spearman(None, tolerance, source=source, paired=paired, n_candidate=n_c, n_production=n_p,
                               min_rows=min_rows)
    w = np.array([1 / p.se ** 2 for p in usable])
    d = float(np.sum(w * np.array([p.delta for p in usable])) / w.sum())
    se = float(1 / math.sqrt(w.sum()))
    h = z_two_sided(level) * se
    first = usable[0]
    method = first.method if len(usable) == 1 else f"inverse-variance pool of {len(usable)} Spearman comparisons"
    delta = SpearmanDelta(method, level, d, d - h, d + h, float(first.auc_candidate or 0.0),
                          float(first.auc_production or 0.0), n_c, n_p)
    return decide_spearman(delta, tolerance, source=source, paired=paired, n_candidate=n_c, n_production=n_p,
                           min_rows=min_rows)
