"""Guardrails as one-sided tests, at their boundaries on constructed data."""
import numpy as np
import pytest
from scipy.stats import beta, binom

from retrainer.evidence.guardrails import (
    GuardrailResult,
    clopper_pearson,
    clopper_pearson_lower,
    clopper_pearson_upper,
    count_bad_scores,
    error_rate_guardrail,
    latency_guardrail,
    output_guardrail,
    quantile_lower_bound,
    quantile_upper_bound,
    relative_latency_guardrail,
)

pytestmark = pytest.mark.unit

LEVEL_12 = 1 - 0.05 / 12


def test_clopper_pearson_matches_published_values():
    # R: binom.test(5, 100)$conf.int -> 0.01643188 0.11283491
    low, high = clopper_pearson(5, 100, 0.95)
    assert low == pytest.approx(0.01643188, abs=1e-7)
    assert high == pytest.approx(0.11283491, abs=1e-7)
    assert clopper_pearson(0, 50) == (0.0, pytest.approx(1 - 0.025 ** (1 / 50)))
    assert clopper_pearson(50, 50)[1] == 1.0


def test_one_sided_bounds_are_the_beta_quantiles():
    assert clopper_pearson_lower(7, 1000, 0.99) == pytest.approx(beta.ppf(0.01, 7, 994))
    assert clopper_pearson_upper(7, 1000, 0.99) == pytest.approx(beta.ppf(0.99, 8, 993))
    assert clopper_pearson_lower(0, 1000, 0.99) == 0.0


def _first_firing(n, limit, level):
    return next(k for k in range(n + 1) if beta.ppf(1 - level, k, n - k + 1) > limit)


@pytest.mark.parametrize("n", [1000, 10000])
def test_error_guardrail_fires_exactly_when_the_bound_crosses_the_limit(n):
    k = _first_firing(n, 0.01, LEVEL_12)
    below = error_rate_guardrail(k - 1, n, limit=0.01, checks=12)
    at = error_rate_guardrail(k, n, limit=0.01, checks=12)
    assert not below.fired and below.bound <= 0.01
    assert at.fired and at.bound > 0.01
    assert at.level == pytest.approx(LEVEL_12)
    assert at.estimate == pytest.approx(k / n)
    # the point estimate is well above the limit long before the rule fires
    assert (k - 1) / n > 0.01
    assert "FIRED" in at.reason and f"{n:,} requests" in at.reason and "12 checks" in at.reason
    assert "ok" in below.reason


def test_more_checks_need_more_errors():
    k1 = _first_firing(1000, 0.01, 0.95)
    k12 = _first_firing(1000, 0.01, LEVEL_12)
    assert k12 > k1
    assert error_rate_guardrail(k1, 1000, 0.01, checks=1).fired
    assert not error_rate_guardrail(k1, 1000, 0.01, checks=12).fired


def test_error_guardrail_with_no_requests_never_fires_and_says_so():
    r = error_rate_guardrail(0, 0, limit=0.01, checks=12)
    assert not r.fired and not r.judged and r.n == 0 and r.bound is None
    assert "no requests" in r.reason


@pytest.mark.parametrize("args", [(5, 4, 0.01), (-1, 10, 0.01), (1, 10, 0.0), (1, 10, 1.5)])
def test_error_guardrail_rejects_bad_input(args):
    with pytest.raises(ValueError):
        error_rate_guardrail(*args)
    with pytest.raises(ValueError):
        error_rate_guardrail(1, 10, 0.01, checks=0)


def test_result_is_frozen_and_serialisable():
    r = error_rate_guardrail(3, 1000, 0.01, checks=12)
    assert isinstance(r, GuardrailResult)
    with pytest.raises(AttributeError):
        r.fired = True
    d = r.to_dict()
    assert d["name"] == "error_rate" and d["fired"] is False and d["n"] == 1000 and d["checks"] == 12


def test_quantile_bound_ranks_are_the_binomial_ones():
    n, level = 500, 0.95
    x = np.arange(1, n + 1, dtype=float)  # X_(r) = r
    r = int(quantile_lower_bound(x, 0.95, level))
    assert binom.sf(r - 1, n, 0.95) >= level  # P(B >= r) >= level
    assert binom.sf(r, n, 0.95) < level       # r + 1 would not be
    s = int(quantile_upper_bound(x, 0.95, level))
    assert binom.cdf(s - 1, n, 0.95) >= level
    assert binom.cdf(s - 2, n, 0.95) < level


def test_quantile_bounds_cover_the_true_p95():
    rng = np.random.default_rng(1)
    true = -np.log(0.05)  # p95 of the standard exponential
    reps = 600
    low_miss = high_miss = 0
    for _ in range(reps):
        x = np.sort(rng.exponential(size=300))
        low_miss += quantile_lower_bound(x, 0.95, 0.95) > true
        high_miss += quantile_upper_bound(x, 0.95, 0.95) < true
    # each one-sided bound may miss at most 5% of the time (plus simulation noise)
    assert low_miss / reps < 0.075 and high_miss / reps < 0.075
    assert low_miss / reps > 0.01  # but not absurdly conservative


def test_latency_guardrail_boundary_on_constructed_latencies():
    x = np.arange(1, 1001, dtype=float)
    bound = quantile_lower_bound(x, 0.95, 0.95)
    fired = latency_guardrail(x, limit_ms=bound - 0.5)
    held = latency_guardrail(x, limit_ms=bound)
    assert fired.fired and fired.bound == bound
    assert not held.fired
    assert held.estimate == pytest.approx(np.quantile(x, 0.95))
    assert "observed p95" in held.reason and "1,000 requests" in held.reason


def test_latency_guardrail_needs_min_requests():
    slow = np.full(199, 5000.0)
    r = latency_guardrail(slow, limit_ms=100)
    assert not r.fired and not r.judged and "too few requests" in r.reason
    assert latency_guardrail(np.full(200, 5000.0), limit_ms=100).fired
    assert not latency_guardrail([], limit_ms=100).fired


def test_latency_guardrail_bonferroni_makes_it_harder_to_fire():
    x = np.arange(1, 1001, dtype=float)
    b1 = latency_guardrail(x, 100, checks=1).bound
    b12 = latency_guardrail(x, 100, checks=12).bound
    assert b12 < b1
    assert latency_guardrail(x, (b1 + b12) / 2, checks=1).fired
    assert not latency_guardrail(x, (b1 + b12) / 2, checks=12).fired


def test_latency_guardrail_rejects_nan_latencies():
    with pytest.raises(ValueError, match="NaN"):
        latency_guardrail([1.0, np.nan] * 200, 100)


def test_relative_latency_guardrail():
    rng = np.random.default_rng(2)
    prod = rng.exponential(100, size=5000)
    assert relative_latency_guardrail(rng.exponential(200, size=1000), prod).fired       # doubled
    assert not relative_latency_guardrail(rng.exponential(100, size=1000), prod).fired   # equal
    # 40% slower is under the 50% spike even though a point estimate might say otherwise
    assert not relative_latency_guardrail(rng.exponential(140, size=1000), prod).fired
    few = relative_latency_guardrail(rng.exponential(1000, size=150), prod)
    assert not few.fired and not few.judged and "too few requests" in few.reason


def test_relative_latency_boundary_on_constructed_latencies():
    prod = np.arange(1, 1001, dtype=float)
    high = quantile_upper_bound(prod, 0.95, 1 - 0.05 / 2)
    cand = np.arange(1, 1001, dtype=float)
    low = quantile_lower_bound(cand, 0.95, 1 - 0.05 / 2)
    # scale the candidate so that its bound is just above / at 1.5 x production's upper bound
    just_above = relative_latency_guardrail(cand * (1.5 * high / low) * 1.001, prod)
    at = relative_latency_guardrail(cand * (1.5 * high / low) * 0.999, prod)
    assert just_above.fired and not at.fired


def test_output_guardrail_fires_on_any_bad_score():
    assert count_bad_scores([0.0, 1.0, 0.5, np.nan, np.inf, -0.01, 1.01]) == (7, 2, 2)
    assert output_guardrail(*count_bad_scores([0.0, 0.5, 1.0])).fired is False
    one = output_guardrail(100_000, 0, 1)
    assert one.fired and "1 outside [0, 1]" in one.reason
    assert output_guardrail(100_000, 1, 0).fired
    assert not output_guardrail(0, 0, 0).fired
    with pytest.raises(ValueError):
        output_guardrail(1, 1, 1)
