"""The label-free AUC estimate (CBPE): calibration check and refusal, coverage of the realised AUC,
and the rollback-only comparison, on constructed data."""
import numpy as np
import pytest
from scipy.stats import chi2
from sklearn.metrics import roc_auc_score

from retrainer.errors import DataError
from retrainer.evidence.cbpe import (
    AUCEstimate,
    Calibration,
    calibration_check,
    estimate_auc,
    estimate_difference,
    expected_auc,
)

pytestmark = pytest.mark.unit


def _calibrated(rng, n, a=-2.0, b=1.2):
    """Perfectly calibrated probabilities: y ~ Bernoulli(p)."""
    p = 1 / (1 + np.exp(-(a + b * rng.normal(size=n))))
    return (rng.random(n) < p).astype(int), p


@pytest.fixture(scope="module")
def ok_calibration():
    y, p = _calibrated(np.random.default_rng(100), 5000)
    cal = calibration_check(y, p)
    assert cal.ok, cal.reason
    return cal


def test_expected_auc_is_the_pairwise_formula_with_ties():
    rng = np.random.default_rng(0)
    p = np.round(rng.random(120), 1)  # many ties
    num = den = 0.0
    for i in range(len(p)):
        for j in range(len(p)):
            if i != j:
                w = p[i] * (1 - p[j])
                den += w
                num += w * ((p[i] > p[j]) + 0.5 * (p[i] == p[j]))
    assert expected_auc(p) == pytest.approx(num / den, rel=1e-12)
    assert expected_auc(np.zeros(10)) is None


def test_calibrated_scores_pass_the_check(ok_calibration):
    assert ok_calibration.p_value >= 0.05 and ok_calibration.ece <= 0.05
    assert "calibrated" in ok_calibration.reason and "5,000 rows" in ok_calibration.reason
    assert Calibration.from_dict(ok_calibration.to_dict()) == ok_calibration


@pytest.mark.parametrize("distort", [lambda p: 0.5 + 0.4 * (p - 0.5),      # squashed towards 0.5
                                     lambda p: np.clip(p + 0.08, 0, 1),    # shifted up
                                     lambda p: p ** 2])                    # over-confident low
def test_miscalibrated_scores_fail_and_get_no_estimate(distort):
    y, p = _calibrated(np.random.default_rng(1), 5000)
    cal = calibration_check(y, distort(p))
    assert not cal.ok and "NOT calibrated" in cal.reason
    est = estimate_auc(distort(p), calibration=cal)
    assert est.refused and est.estimate is None and "NOT calibrated" in est.reason


def test_squashing_keeps_the_ranking_but_would_bias_the_estimate():
    """Why refusing matters: a squashed model has the same realised AUC but a wrong estimate."""
    y, p = _calibrated(np.random.default_rng(2), 5000)
    squashed = 0.5 + 0.4 * (p - 0.5)
    assert roc_auc_score(y, squashed) == pytest.approx(roc_auc_score(y, p))
    assert abs(expected_auc(squashed) - roc_auc_score(y, p)) > 0.1


def test_no_calibration_on_record_is_refused():
    _, p = _calibrated(np.random.default_rng(3), 1000)
    est = estimate_auc(p, calibration=None)
    assert est.refused and "no calibration check" in est.reason


def _blocks(ones_per_100, n_blocks=10):
    """Constant p = 0.2, labels with exactly `ones_per_100` positives in each bin of 100 rows."""
    y = np.tile(np.r_[np.ones(ones_per_100), np.zeros(100 - ones_per_100)], n_blocks).astype(int)
    return y, np.full(100 * n_blocks, 0.2)


def test_calibration_boundaries_hosmer_lemeshow_and_ece():
    y, p = _blocks(24)  # each bin: (24 - 20)² / (20 * 0.8) = 1  ->  χ² = 10 on 10 df, ECE = 0.04
    cal = calibration_check(y, p)
    assert cal.statistic == pytest.approx(10.0)
    assert cal.ece == pytest.approx(0.04)
    pv = chi2.sf(10.0, 10)
    assert cal.p_value == pytest.approx(pv)
    assert calibration_check(y, p, alpha=pv - 1e-6).ok
    assert not calibration_check(y, p, alpha=pv + 1e-6).ok
    assert calibration_check(y, p, tolerance=0.0401).ok
    tight = calibration_check(y, p, tolerance=0.0399)
    assert not tight.ok and "ECE > 0.0399" in tight.reason and "Hosmer" not in tight.reason.split("NOT")[1]


def test_calibration_needs_enough_rows_and_both_classes():
    y, p = _calibrated(np.random.default_rng(4), 99)
    assert not calibration_check(y, p).ok
    assert "too few rows" in calibration_check(np.zeros(500, int), np.full(500, 0.01)).reason


@pytest.mark.parametrize("y,p,msg", [([0, 1, 2], [0.1, 0.2, 0.3], "labels must be 0 or 1"),
                                     ([0, 1, 1], [0.1, np.nan, 0.3], "NaN"),
                                     ([0, 1, 1], [0.1, 1.2, 0.3], "outside"),
                                     ([0, 1], [0.1, 0.2, 0.3], "differ in length")])
def test_calibration_rejects_bad_input(y, p, msg):
    with pytest.raises(DataError, match=msg):
        calibration_check(y, p)


def test_interval_covers_the_realised_auc_at_its_level(ok_calibration):
    rng = np.random.default_rng(5)
    reps, covered = 300, 0
    for r in range(reps):
        y, p = _calibrated(rng, 1000)
        est = estimate_auc(p, 0.95, 400, calibration=ok_calibration, seed=r)
        assert isinstance(est, AUCEstimate) and not est.refused
        covered += est.low <= roc_auc_score(y, p) <= est.high
    assert 0.91 <= covered / reps <= 0.985, covered / reps


def test_lower_level_gives_a_narrower_interval(ok_calibration):
    _, p = _calibrated(np.random.default_rng(6), 2000)
    wide = estimate_auc(p, 0.95, calibration=ok_calibration)
    narrow = estimate_auc(p, 0.5, calibration=ok_calibration)
    assert narrow.high - narrow.low < wide.high - wide.low
    assert wide.low < wide.estimate < wide.high and wide.n == 2000


def test_a_much_worse_candidate_is_flagged_worse_and_an_equal_one_is_not(ok_calibration):
    rng = np.random.default_rng(7)
    _, prod = _calibrated(rng, 3000)
    _, weak = _calibrated(rng, 3000, b=0.5)    # calibrated but far less discriminating
    _, same = _calibrated(rng, 3000)
    kw = dict(calibration_production=ok_calibration, calibration_candidate=ok_calibration)
    worse = estimate_difference(prod, weak, 0.02, **kw)
    assert worse.worse and not worse.refused and worse.high < -0.02
    assert "estimated worse" in worse.reason
    equal = estimate_difference(prod, same, 0.02, **kw)
    assert not equal.worse and equal.low < 0 < equal.high and "never promotes" in equal.reason
    assert equal.to_dict()["candidate"]["estimate"] == pytest.approx(expected_auc(same))


def test_worse_is_exactly_the_upper_bound_below_minus_tolerance(ok_calibration):
    rng = np.random.default_rng(8)
    _, prod = _calibrated(rng, 3000)
    _, cand = _calibrated(rng, 3000, b=0.8)
    kw = dict(calibration_production=ok_calibration, calibration_candidate=ok_calibration, seed=3)
    high = estimate_difference(prod, cand, 0.0, **kw).high
    assert high < 0
    assert estimate_difference(prod, cand, -high - 1e-4, **kw).worse
    assert not estimate_difference(prod, cand, -high + 1e-4, **kw).worse


def test_paired_shadow_rows_and_refusal(ok_calibration):
    rng = np.random.default_rng(9)
    _, prod = _calibrated(rng, 2000)
    bad = Calibration.from_dict(ok_calibration.to_dict() | {"ok": False, "reason": "NOT calibrated: test"})
    r = estimate_difference(prod, prod ** 3, 0.02, paired=True, calibration_production=ok_calibration,
                            calibration_candidate=bad)
    assert r.refused and not r.worse and "candidate: NOT calibrated" in r.reason
    assert not r.production.refused and r.candidate.refused
    with pytest.raises(DataError, match="differ in length"):
        estimate_difference(prod, prod[:10], 0.02, paired=True, calibration_production=ok_calibration,
                            calibration_candidate=ok_calibration)
    same = estimate_difference(prod, prod, 0.02, paired=True, calibration_production=ok_calibration,
                               calibration_candidate=ok_calibration)
    assert same.delta == 0.0 and not same.worse and "2,000 paired shadow rows" in same.reason
