"""A label-free AUC estimate from calibrated probabilities, in the manner of NannyML's CBPE
(confidence-based performance estimation).

If a model's score p is a calibrated probability, P(y = 1 | p) = p, so each unlabelled row is a
positive with probability p_i and a negative with probability 1 - p_i. CBPE rebuilds the expected
ROC curve from these probabilities (expected true positives above a threshold = the sum of p above
it, expected false positives = the sum of 1 - p) and integrates it. The same quantity in closed
form is the expected Mann-Whitney AUC, ranking rows by their score, with every ordered pair (i, j)
weighted by the chance that i is a positive and j a negative:

    AUC_est = Σ_{i≠j} p_i (1 - p_j) [1(p_i > p_j) + ½ 1(p_i = p_j)] / Σ_{i≠j} p_i (1 - p_j).

**Interval.** The labels that will mature are Bernoulli(p_i) draws, so the AUC they will show is
random even when the model is perfectly calibrated. `estimate_auc` draws `n_boot` label vectors
y* ~ Bernoulli(p), computes the AUC each would give on these rows, and reports the percentile
interval: under calibration it covers the realised AUC `level` of the time.

**Only for calibrated models.** The estimate is only as good as the calibration, so
`calibration_check` runs at registration on the validation month (Hosmer-Lemeshow over `n_bins`
risk groups with n_bins degrees of freedom, as the month was not used to fit the model, plus the
expected calibration error over the same groups). A model that fails it, or was never checked,
gets no estimate (`refused=True` with the reason).

**Comparison.** `estimate_difference` compares two variants' estimates, Δ_est = AUC_est(candidate)
- AUC_est(production), with a percentile interval from label draws made independently per arm
(conservative for paired shadow rows, whose realised AUCs are positively correlated). The
candidate is `worse` iff the upper bound < -tolerance. This can roll a canary back but never
promote one: it is an estimate, not evidence from labels.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy.stats import chi2, rankdata

from retrainer.errors import DataError

DEFAULT_BINS = 10
DEFAULT_ECE_TOLERANCE = 0.05
DEFAULT_BOOT = 1000
MIN_CALIBRATION_ROWS = 100
_CHUNK = 200


def _probabilities(p, what: str = "scores") -> np.ndarray:
    a = np.asarray(p, dtype=float).ravel()
    if len(a) == 0:
        raise DataError(f"{what}: no scores")
    bad = ~np.isfinite(a)
    if bad.any():
        raise DataError(f"{what}: {int(bad.sum())} scores are NaN or infinite")
    out = (a < 0) | (a > 1)
    if out.any():
        raise DataError(f"{what}: {int(out.sum())} scores are outside [0, 1] (not probabilities)")
    return a


def _labels(y, n: int) -> np.ndarray:
    a = np.asarray(y).ravel()
    if len(a) != n:
        raise DataError(f"labels and scores differ in length ({len(a)} vs {n})")
    try:
        f = a.astype(float)
    except (TypeError, ValueError):
        raise DataError("labels must be 0 or 1") from None
    if not np.isin(f, (0.0, 1.0)).all():
        raise DataError("labels must be 0 or 1")
    return f.astype(int)


def _check_level(level: float, n_boot: int) -> None:
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if int(n_boot) != n_boot or n_boot < 100:
        raise ValueError(f"n_boot must be a whole number >= 100, got {n_boot}")


@dataclass(frozen=True)
class Calibration:
    """The calibration check of one model on labelled rows (the validation month). `ok` iff the
    Hosmer-Lemeshow test does not reject at `alpha` and the expected calibration error is at most
    `tolerance`."""

    ok: bool
    reason: str
    n: int
    positives: int
    statistic: float | None  # Hosmer-Lemeshow chi-square
    df: int
    p_value: float | None
    ece: float | None
    tolerance: float
    alpha: float
    n_bins: int
    mean_score: float | None = None
    mean_label: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Calibration":
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


def calibration_check(y, p, n_bins: int = DEFAULT_BINS, alpha: float = 0.05,
                      tolerance: float = DEFAULT_ECE_TOLERANCE) -> Calibration:
    """Hosmer-Lemeshow test and expected calibration error of probabilities `p` against labels `y`
    over `n_bins` groups of equal size by rank of p."""
    if int(n_bins) != n_bins or n_bins < 2:
        raise ValueError(f"n_bins must be a whole number >= 2, got {n_bins}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    if not tolerance > 0:
        raise ValueError(f"tolerance must be > 0, got {tolerance}")
    pa = _probabilities(p, "calibration scores")
    ya = _labels(y, len(pa))
    n, pos = len(ya), int(ya.sum())
    common = dict(n=n, positives=pos, df=int(n_bins), tolerance=tolerance, alpha=alpha, n_bins=int(n_bins),
                  mean_score=float(pa.mean()), mean_label=float(ya.mean()))
    if n < max(MIN_CALIBRATION_ROWS, 2 * n_bins) or pos == 0 or pos == n:
        return Calibration(False, f"calibration: too few rows to check ({n:,} rows, {pos:,} positives; need "
                                  f"{max(MIN_CALIBRATION_ROWS, 2 * n_bins):,} rows with both classes): no estimate",
                           statistic=None, p_value=None, ece=None, **common)
    order = np.argsort(pa, kind="stable")
    hl, ece = 0.0, 0.0
    for g in np.array_split(order, n_bins):
        observed, expected, size = ya[g].sum(), pa[g].sum(), len(g)
        var = expected * (1 - expected / size)
        if var > 0:
            hl += (observed - expected) ** 2 / var
        elif observed != expected:  # all p in {0, 1} in this group, and the labels disagree
            hl = np.inf
        ece += abs(observed - expected) / n
    p_value = float(chi2.sf(hl, n_bins))
    rejects, loose = p_value < alpha, ece > tolerance
    ok = not rejects and not loose
    why = ("calibrated" if ok else "NOT calibrated: " + " and ".join(
        w for w, bad in ((f"Hosmer-Lemeshow p < {alpha:g}", rejects), (f"ECE > {tolerance:g}", loose)) if bad))
    reason = (f"calibration on {n:,} rows ({pos:,} positives): Hosmer-Lemeshow χ² {hl:.2f} on {n_bins} df, "
              f"p = {p_value:.3g}; ECE {ece:.4f} (mean score {pa.mean():.4f}, observed rate {ya.mean():.4f}); {why}"
              + ("" if ok else ": no label-free estimate"))
    return Calibration(ok, reason, statistic=float(hl), p_value=p_value, ece=float(ece), **common)


def expected_auc(p) -> float | None:
    """The expected AUC of scores `p` if each row is a positive with probability p_i (CBPE's
    ROC AUC, in closed form). None when no pair can be formed (all p in {0} or all in {1})."""
    pa = _probabilities(p)
    q = 1 - pa
    values, inverse = np.unique(pa, return_inverse=True)
    group_q = np.bincount(inverse, weights=q, minlength=len(values))
    below = np.cumsum(group_q) - group_q  # Σ (1 - p_j) over rows with a strictly lower score
    a = below[inverse] + 0.5 * (group_q[inverse] - q)  # ties (other rows) count one half
    denominator = pa.sum() * q.sum() - float((pa * q).sum())
    if denominator <= 0:
        return None
    return float((pa * a).sum() / denominator)


def _simulated_aucs(p: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """AUCs of the scores under `n_boot` label vectors drawn from Bernoulli(p)."""
    ranks = rankdata(p)
    n = len(p)
    out = np.empty(n_boot)
    for start in range(0, n_boot, _CHUNK):
        k = min(_CHUNK, n_boot - start)
        y = rng.random((k, n)) < p
        m = y.sum(axis=1).astype(float)
        rank_sum = y.astype(float) @ ranks
        with np.errstate(divide="ignore", invalid="ignore"):
            out[start:start + k] = (rank_sum - m * (m + 1) / 2) / (m * (n - m))
    return out


@dataclass(frozen=True)
class AUCEstimate:
    """A label-free AUC estimate with its interval, or a refusal with its reason."""

    refused: bool
    reason: str
    n: int
    estimate: float | None = None
    low: float | None = None
    high: float | None = None
    level: float = 0.95
    expected_positives: float | None = None
    method: str = "CBPE expected AUC"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _refusal(calibration: Calibration | None) -> str | None:
    if calibration is None:
        return "no calibration check on record for this model: no label-free estimate"
    if not calibration.ok:
        return calibration.reason
    return None


def _estimate(pa: np.ndarray, level: float, n_boot: int, rng: np.random.Generator,
              name: str) -> tuple[AUCEstimate, np.ndarray | None]:
    est = expected_auc(pa)
    sims = _simulated_aucs(pa, n_boot, rng)
    usable = sims[np.isfinite(sims)]
    if est is None or len(usable) < n_boot / 2:
        return AUCEstimate(True, f"{name}: {len(pa):,} scores give too few expected positives and negatives "
                                 f"for an AUC estimate", len(pa), level=level,
                           expected_positives=float(pa.sum())), None
    a = (1 - level) / 2
    low, high = float(np.quantile(usable, a)), float(np.quantile(usable, 1 - a))
    reason = (f"{name}: label-free AUC estimate (CBPE) {est:.4f}, {level:.0%} interval [{low:.4f}, {high:.4f}] "
              f"on {len(pa):,} scored rows ({pa.sum():,.0f} expected positives)")
    return AUCEstimate(False, reason, len(pa), est, low, high, level, float(pa.sum())), sims


def estimate_auc(p, level: float = 0.95, n_boot: int = DEFAULT_BOOT, *, calibration: Calibration | None,
                 seed: int = 0, name: str = "model") -> AUCEstimate:
    """The CBPE estimate of the AUC the labels of these rows will show, with a `level` interval
    from `n_boot` simulated label vectors. Refused (`refused=True`, with the reason) when
    `calibration` failed or is None (no check on record). Raises DataError on scores that are not
    probabilities."""
    _check_level(level, n_boot)
    pa = _probabilities(p, f"{name} scores")
    why = _refusal(calibration)
    if why is not None:
        return AUCEstimate(True, f"{name}: {why}", len(pa), level=level)
    return _estimate(pa, level, n_boot, np.random.default_rng(seed), name)[0]


@dataclass(frozen=True)
class CBPEComparison:
    """Δ_est = AUC_est(candidate) - AUC_est(production) with its interval. `worse` iff the upper
    bound < -tolerance. Never a basis for promotion."""

    refused: bool
    worse: bool
    reason: str
    tolerance: float
    level: float
    paired: bool
    production: AUCEstimate
    candidate: AUCEstimate
    delta: float | None = None
    low: float | None = None
    high: float | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["production"], d["candidate"] = self.production.to_dict(), self.candidate.to_dict()
        return d


def estimate_difference(p_production, p_candidate, tolerance: float, level: float = 0.95, *,
                        calibration_production: Calibration | None, calibration_candidate: Calibration | None,
                        paired: bool = False, n_boot: int = DEFAULT_BOOT, seed: int = 0) -> CBPEComparison:
    """Compare the two variants' label-free AUC estimates on their live scores: paired shadow
    rows (`paired=True`: both scored the same requests, same length) or the two arms' own rows.
    The interval of Δ_est comes from label draws made independently per arm. Refused when either
    model's calibration failed or is missing (then `worse` is False)."""
    if not tolerance >= 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance}")
    _check_level(level, n_boot)
    pp = _probabilities(p_production, "production scores")
    pc = _probabilities(p_candidate, "candidate scores")
    if paired and len(pp) != len(pc):
        raise DataError(f"paired scores differ in length (production {len(pp):,}, candidate {len(pc):,})")
    rng = np.random.default_rng(seed)
    refusals = {name: _refusal(cal) for name, cal in (("production", calibration_production),
                                                       ("candidate", calibration_candidate))}
    est, sims = {}, {}
    for name, pa in (("production", pp), ("candidate", pc)):
        if refusals[name] is not None:
            est[name], sims[name] = AUCEstimate(True, f"{name}: {refusals[name]}", len(pa), level=level), None
        else:
            est[name], sims[name] = _estimate(pa, level, n_boot, rng, name)
    base = dict(tolerance=tolerance, level=level, paired=paired, production=est["production"],
                candidate=est["candidate"])
    refused = [e.reason for e in est.values() if e.refused]
    if refused:
        return CBPEComparison(True, False, "label-free comparison refused: " + "; ".join(refused), **base)
    d = est["candidate"].estimate - est["production"].estimate
    diffs = sims["candidate"] - sims["production"]
    diffs = diffs[np.isfinite(diffs)]
    a = (1 - level) / 2
    low, high = float(np.quantile(diffs, a)), float(np.quantile(diffs, 1 - a))
    worse = high < -tolerance
    rows = (f"{len(pp):,} paired shadow rows" if paired
            else f"production {len(pp):,} rows, candidate {len(pc):,} rows")
    reason = (f"label-free (CBPE) on {rows}: AUC_est candidate {est['candidate'].estimate:.4f} vs production "
              f"{est['production'].estimate:.4f}, Δ_est {d:+.4f}, {level:.0%} interval [{low:+.4f}, {high:+.4f}]; "
              + (f"upper bound < -{tolerance:g}: estimated worse by more than the tolerance" if worse
                 else f"upper bound >= -{tolerance:g}: not shown worse (an estimate never promotes)"))
    return CBPEComparison(False, worse, reason, delta=d, low=low, high=high, **base)
