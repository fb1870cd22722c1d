"""Operational guardrails of a rollout as one-sided tests: a guardrail fires only when a
confidence bound says its limit is exceeded, never on a noisy point estimate.

* **error rate** (`error_rate_guardrail`): fires iff the Clopper-Pearson *lower* bound of the error
  rate at level 1 - alpha/K exceeds the limit. K is the number of checks of the rollout (a 72 h
  canary checked every 6 h: K = 12); Bonferroni over the K looks keeps the chance that a canary
  whose true error rate is at the limit is rolled back at any of them below alpha.
* **p95 latency** (`latency_guardrail`): judged only from `min_requests` requests (200) on; fires
  iff a distribution-free lower confidence bound of the p95 exceeds the limit. The bound is an
  order statistic X_(r): the number of latencies at or below the true p95 is Binomial(n, 0.95) or
  larger, so P(X_(r) <= p95) >= P(Binomial(n, 0.95) >= r); r is the largest rank keeping that
  probability >= 1 - alpha/K.
* **relative p95 latency** (`relative_latency_guardrail`, Protocol 24's "latency spike of 50% over
  production"): fires iff the candidate's p95 lower bound exceeds (1 + max_increase) times the
  production p95's *upper* bound (alpha split between the two bounds).
* **output** (`output_guardrail`): fires iff any score was NaN, infinite or outside [0, 1]. These
  are bugs, not noise: one is enough.

Each returns a frozen `GuardrailResult` whose `reason` is one line naming what was measured, n,
the estimate, the bound and the rule. Plain Python, no Prefect.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np
from scipy.stats import beta, binom

DEFAULT_ALPHA = 0.05
MIN_REQUESTS = 200
P95 = 0.95


@dataclass(frozen=True)
class GuardrailResult:
    """One guardrail's verdict with its evidence.

    `estimate` is the observed value (error rate, p95 in ms, share of bad scores, p95 ratio),
    `bound` the one-sided confidence bound the rule compared with `limit` (None when nothing was
    judged), `level` the bound's confidence level, `judged` False when there was too little data
    to judge (then `fired` is False)."""

    name: str
    fired: bool
    reason: str
    n: int
    estimate: float | None
    bound: float | None
    limit: float
    level: float
    judged: bool = True
    checks: int = 1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _check_alpha(alpha: float, checks: int) -> float:
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    if int(checks) != checks or checks < 1:
        raise ValueError(f"checks must be a whole number >= 1, got {checks}")
    return 1 - alpha / checks


def _check_counts(k: int, n: int) -> None:
    if int(k) != k or int(n) != n or n < 0 or k < 0 or k > n:
        raise ValueError(f"need whole counts with 0 <= k <= n, got k={k}, n={n}")


def _check_level(level: float) -> None:
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")


def clopper_pearson_lower(k: int, n: int, level: float) -> float:
    """One-sided Clopper-Pearson lower bound of a proportion at confidence `level`:
    P(true rate >= bound) >= level. 0 when k = 0 (or n = 0)."""
    _check_counts(k, n)
    _check_level(level)
    if k == 0:
        return 0.0
    return float(beta.ppf(1 - level, k, n - k + 1))


def clopper_pearson_upper(k: int, n: int, level: float) -> float:
    """One-sided Clopper-Pearson upper bound of a proportion at confidence `level`. 1 when k = n
    (or n = 0)."""
    _check_counts(k, n)
    _check_level(level)
    if k == n:
        return 1.0
    return float(beta.ppf(level, k + 1, n - k))


def clopper_pearson(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Two-sided Clopper-Pearson interval (low, high) of k successes in n trials at `level`
    (each side at (1 - level) / 2)."""
    _check_level(level)
    one_sided = 1 - (1 - level) / 2
    return clopper_pearson_lower(k, n, one_sided), clopper_pearson_upper(k, n, one_sided)


def _pct(x: float) -> str:
    return f"{100 * x:.3g}%"


def _lvl(level: float) -> str:
    return f"{100 * level:.4g}%"


def _bonf(checks: int) -> str:
    return f" (Bonferroni over {checks} checks)" if checks > 1 else ""


def error_rate_guardrail(errors: int, n: int, limit: float, checks: int = 1,
                         alpha: float = DEFAULT_ALPHA) -> GuardrailResult:
    """Fires iff the Clopper-Pearson lower bound of errors/n at level 1 - alpha/checks exceeds
    `limit` (a rate in (0, 1)). Never fires on n = 0."""
    if not 0 < limit < 1:
        raise ValueError(f"the error-rate limit must be in (0, 1), got {limit}")
    level = _check_alpha(alpha, checks)
    _check_counts(errors, n)
    rule = f"fires iff the lower bound > limit {_pct(limit)}"
    if n == 0:
        return GuardrailResult("error_rate", False, f"error rate: no requests yet, nothing to judge ({rule})",
                               0, None, None, limit, level, judged=False, checks=checks)
    rate = errors / n
    low = clopper_pearson_lower(errors, n, level)
    fired = low > limit
    verdict = "FIRED" if fired else "ok"
    return GuardrailResult(
        "error_rate", fired,
        f"error rate: {errors:,} errors in {n:,} requests ({_pct(rate)}); Clopper-Pearson lower bound "
        f"{_pct(low)} at {_lvl(level)}{_bonf(checks)} {'>' if fired else '<='} limit {_pct(limit)}: {verdict}",
        n, rate, low, limit, level, checks=checks)


def _clean_latencies(latencies_ms: Sequence[float] | np.ndarray, what: str = "latencies") -> np.ndarray:
    x = np.asarray(latencies_ms, dtype=float).ravel()
    if not np.isfinite(x).all():
        raise ValueError(f"{what}: {int((~np.isfinite(x)).sum())} values are NaN or infinite")
    if (x < 0).any():
        raise ValueError(f"{what}: negative latencies")
    return np.sort(x)


def quantile_lower_bound(sorted_x: np.ndarray, q: float, level: float) -> float | None:
    """Distribution-free lower confidence bound of the q-quantile from sorted data: the order
    statistic X_(r) with the largest r such that P(Binomial(n, q) >= r) >= level. None when even
    X_(1) does not reach the level (too few values)."""
    n = len(sorted_x)
    # P(B >= r) >= level  <=>  cdf(r - 1) <= 1 - level; the largest such r - 1 is k below.
    k = int(binom.ppf(1 - level, n, q))
    if binom.cdf(k, n, q) > 1 - level:
        k -= 1
    if k < 0:
        return None
    return float(sorted_x[min(k, n - 1)])  # X_(k+1) in 1-indexed terms


def quantile_upper_bound(sorted_x: np.ndarray, q: float, level: float) -> float | None:
    """Distribution-free upper confidence bound of the q-quantile: X_(s) with the smallest s such
    that P(Binomial(n, q) < s) >= level. None when even X_(n) does not reach the level."""
    n = len(sorted_x)
    s = int(binom.ppf(level, n, q)) + 1  # smallest s with cdf(s - 1) >= level
    if s > n:
        return None
    return float(sorted_x[s - 1])


def _p95(sorted_x: np.ndarray) -> float:
    return float(np.quantile(sorted_x, P95))


def latency_guardrail(latencies_ms, limit_ms: float, min_requests: int = MIN_REQUESTS, checks: int = 1,
                      alpha: float = DEFAULT_ALPHA) -> GuardrailResult:
    """Fires iff a distribution-free lower bound of the p95 latency at level 1 - alpha/checks
    exceeds `limit_ms`; below `min_requests` requests it does not judge."""
    if not limit_ms > 0:
        raise ValueError(f"the latency limit must be > 0 ms, got {limit_ms}")
    level = _check_alpha(alpha, checks)
    x = _clean_latencies(latencies_ms)
    n = len(x)
    rule = f"fires iff the p95 lower bound > {limit_ms:g} ms"
    if n < min_requests:
        observed = f", observed p95 {_p95(x):.1f} ms" if n else ""
        return GuardrailResult("latency_p95", False,
                               f"p95 latency: too few requests to judge ({n:,} < {min_requests:,}{observed}; {rule})",
                               n, _p95(x) if n else None, None, limit_ms, level, judged=False, checks=checks)
    p95 = _p95(x)
    low = quantile_lower_bound(x, P95, level)
    if low is None:
        return GuardrailResult("latency_p95", False,
                               f"p95 latency: {n:,} requests are too few for a {_lvl(level)} bound "
                               f"(observed p95 {p95:.1f} ms; {rule})",
                               n, p95, None, limit_ms, level, judged=False, checks=checks)
    fired = low > limit_ms
    return GuardrailResult(
        "latency_p95", fired,
        f"p95 latency: {n:,} requests, observed p95 {p95:.1f} ms; distribution-free lower bound {low:.1f} ms at "
        f"{_lvl(level)}{_bonf(checks)} {'>' if fired else '<='} limit {limit_ms:g} ms: {'FIRED' if fired else 'ok'}",
        n, p95, low, limit_ms, level, checks=checks)


def relative_latency_guardrail(candidate_ms, production_ms, max_increase: float = 0.5,
                               min_requests: int = MIN_REQUESTS, checks: int = 1,
                               alpha: float = DEFAULT_ALPHA) -> GuardrailResult:
    """Fires iff the candidate's p95 is shown to exceed production's by more than `max_increase`
    (0.5: a 50% spike): the candidate's p95 lower bound > (1 + max_increase) x production's p95
    upper bound, each bound at level 1 - alpha/(2 checks). Both arms need `min_requests`.

    `candidate_ms` and `production_ms` are the arms' request latencies in milliseconds. The
    result's `estimate` is the observed p95 ratio candidate/production, `bound` the candidate's
    lower bound divided by production's upper bound, `limit` 1 + max_increase."""
    if not max_increase > 0:
        raise ValueError(f"max_increase must be > 0, got {max_increase}")
    level = _check_alpha(alpha / 2, checks)
    c = _clean_latencies(candidate_ms, "candidate latencies")
    p = _clean_latencies(production_ms, "production latencies")
    limit = 1 + max_increase
    rule = f"fires iff candidate p95 lower bound > {limit:g} x production p95 upper bound"
    short = [f"{name} has {len(a):,}" for name, a in (("candidate", c), ("production", p)) if len(a) < min_requests]
    if short:
        return GuardrailResult("latency_p95_relative", False,
                               f"relative p95 latency: too few requests to judge ({', '.join(short)}; need "
                               f"{min_requests:,} each; {rule})",
                               min(len(c), len(p)), None, None, limit, level, judged=False, checks=checks)
    c95, p95 = _p95(c), _p95(p)
    low, high = quantile_lower_bound(c, P95, level), quantile_upper_bound(p, P95, level)
    ratio = c95 / p95 if p95 > 0 else math.inf
    if low is None or high is None:
        return GuardrailResult("latency_p95_relative", False,
                               f"relative p95 latency: too few requests for {_lvl(level)} bounds "
                               f"(candidate {len(c):,}, production {len(p):,}; {rule})",
                               min(len(c), len(p)), ratio, None, limit, level, judged=False, checks=checks)
    bound = low / high if high > 0 else (math.inf if low > 0 else 0.0)
    fired = bound > limit
    return GuardrailResult(
        "latency_p95_relative", fired,
        f"relative p95 latency: candidate p95 {c95:.1f} ms ({len(c):,} requests) vs production {p95:.1f} ms "
        f"({len(p):,}), ratio {ratio:.2f}; bounds {low:.1f} / {high:.1f} ms = {bound:.2f} at {_lvl(level)} each"
        f"{_bonf(checks)} {'>' if fired else '<='} {limit:g}: {'FIRED' if fired else 'ok'}",
        min(len(c), len(p)), ratio, bound, limit, level, checks=checks)


def _score_range(score_range: tuple[float, float] | None) -> tuple[float, float]:
    if score_range is not None:
        return float(score_range[0]), float(score_range[1])
    from .. import schema as S  # noqa: PLC0415 - the active model, read at call time

    lo, hi = S.contract().spec.prediction_range
    return float(lo), float(hi)


def count_bad_scores(scores, score_range: tuple[float, float] | None = None) -> tuple[int, int, int]:
    """(n scored, n NaN or infinite, n finite but outside the range) of an array of scores; the
    range defaults to the active model's `prediction_range` ([0, 1] for a classifier, the business
    rule's [min, max] for a regression model)."""
    lo, hi = _score_range(score_range)
    s = np.asarray(scores, dtype=float).ravel()
    finite = np.isfinite(s)
    return len(s), int((~finite).sum()), int(((s[finite] < lo) | (s[finite] > hi)).sum())


def output_guardrail(n_scored: int, n_nan: int, n_out_of_range: int,
                     score_range: tuple[float, float] | None = None) -> GuardrailResult:
    """Fires iff any score was NaN/infinite (`n_nan`) or outside the model's prediction range
    (`n_out_of_range`; [0, 1] for a classifier): a bug, so a single one is enough."""
    lo, hi = _score_range(score_range)
    for name, v in (("n_scored", n_scored), ("n_nan", n_nan), ("n_out_of_range", n_out_of_range)):
        if int(v) != v or v < 0:
            raise ValueError(f"{name} must be a whole number >= 0, got {v}")
    bad = n_nan + n_out_of_range
    if bad > n_scored:
        raise ValueError(f"{bad} bad scores out of {n_scored} scored")
    share = bad / n_scored if n_scored else None
    fired = bad > 0
    what = (f"scores: {n_nan:,} NaN/inf and {n_out_of_range:,} outside [{lo:g}, {hi:g}] in {n_scored:,} scored; "
            f"fires on any (a bug, not noise)")
    return GuardrailResult("output", fired, f"{what}: {'FIRED' if fired else 'ok'}", n_scored, share,
                           float(bad), 0.0, 1.0, judged=n_scored > 0)
