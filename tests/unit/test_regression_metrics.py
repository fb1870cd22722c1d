"""Regression and ranking metrics (Spearman, MAE, RMSE) and the non-inferiority rule on Spearman:
references, boundaries on constructed data, the minimum evidence, and the gate for the
lead-scoring model."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr

from retrainer import spec as specs
from retrainer.evidence import correlation as C
from retrainer.settings import GateSettings


def _world(n: int, rho_c: float, rho_p: float, seed: int = 0):
    """Labels and two correlated model scores (latent normal), Spearman ~ rho_c / rho_p."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=n)
    y = np.round(np.clip(3 + z, 1, 5))
    c = rho_c * z + math.sqrt(1 - rho_c ** 2) * rng.normal(size=n)
    p = rho_p * z + math.sqrt(1 - rho_p ** 2) * rng.normal(size=n)
    return y, c, p


def test_metrics_match_numpy_and_scipy_references():
    y, c, _ = _world(3000, 0.7, 0.6)
    m = C.regression_metrics(y, c)
    assert m["spearman"] == pytest.approx(spearmanr(y, c).statistic, abs=1e-6)
    assert m["mae"] == pytest.approx(np.mean(np.abs(c - y)), abs=1e-6)
    assert m["rmse"] == pytest.approx(np.sqrt(np.mean((c - y) ** 2)), abs=1e-6)
    assert m["n"] == 3000 and m["spearman_low"] < m["spearman"] < m["spearman_high"]
    # Bonett-Wright: the interval of atanh(r) is +-1.96 * sqrt((1 + r^2/2) / (n - 3))
    r = m["spearman"]
    half = 1.959964 * math.sqrt((1 + r * r / 2) / 2997)
    assert m["spearman_low"] == pytest.approx(math.tanh(math.atanh(r) - half), abs=1e-5)


def test_identical_models_give_a_zero_difference_and_are_non_inferior():
    y, c, _ = _world(2000, 0.6, 0.6)
    e = C.compare_spearman_paired(y, c, c, tolerance=0.02)
    assert e.delta == pytest.approx(0.0, abs=1e-12) and e.low <= 0 <= e.high
    assert e.verdict == "promote" and e.metric == "spearman" and "Zou" in e.method


def _delta(low: float, high: float) -> C.SpearmanDelta:
    return C.SpearmanDelta("constructed", 0.95, (low + high) / 2, low, high, 0.6, 0.6, 1000, 1000)


@pytest.mark.parametrize("low, high, verdict", [
    (-0.02 + 1e-9, 0.03, "promote"),        # lower bound just above -tolerance
    (-0.02, 0.03, "inconclusive"),          # at -tolerance: not shown non-inferior
    (-0.08, -0.02 - 1e-9, "rollback"),      # upper bound just below -tolerance
    (-0.08, -0.02, "inconclusive"),
])
def test_the_rule_at_its_boundaries(low, high, verdict):
    e = C.decide_spearman(_delta(low, high), 0.02, source="t", paired=True, n_candidate=1000, n_production=1000)
    assert e.verdict == verdict, e.reason


def test_too_few_rows_cannot_tell_whatever_the_interval_says():
    e = C.decide_spearman(_delta(0.05, 0.10), 0.02, source="t", paired=True, n_candidate=199, n_production=199)
    assert e.verdict == "inconclusive" and "199 labelled rows" in e.reason and "need 200" in e.reason
    y, c, p = _world(150, 0.9, 0.2)  # a huge real difference, but only 150 rows
    assert C.compare_spearman_paired(y, p, c, tolerance=0.02).verdict == "inconclusive"


def test_a_clearly_worse_candidate_is_rolled_back_and_a_better_one_promoted():
    y, c, p = _world(4000, 0.45, 0.65, seed=3)
    worse = C.compare_spearman_paired(y, p, c, tolerance=0.02)
    assert worse.verdict == "rollback" and worse.high < -0.02
    better = C.compare_spearman_paired(y, c, p, tolerance=0.02)  # roles swapped
    assert better.verdict == "promote" and better.low > 0


def test_zou_and_the_bootstrap_agree_and_clusters_widen_the_interval():
    y, c, p = _world(3000, 0.62, 0.6, seed=5)
    zou = C.zou_overlapping(y, p, c)
    boot = C.bootstrap_paired(y, p, c, n_boot=400, seed=1)
    assert abs(zou.low - boot.low) < 0.01 and abs(zou.high - boot.high) < 0.01
    # 300 accounts with 10 leads each, whose errors are shared: the clustered interval is wider
    rng = np.random.default_rng(9)
    acct = np.repeat(np.arange(300), 10)
    shared = rng.normal(size=300)[acct]
    c2 = c + 1.5 * shared
    wide = C.bootstrap_paired(y, p, c2, clusters=acct.astype(str), n_boot=400, seed=1)
    plain = C.bootstrap_paired(y, p, c2, n_boot=400, seed=1)
    assert (wide.high - wide.low) > (plain.high - plain.low)


def test_unpaired_arms_use_zous_independent_interval():
    y1, c, _ = _world(1500, 0.6, 0.6, seed=1)
    y2, _, p = _world(1500, 0.6, 0.6, seed=2)
    e = C.compare_spearman_unpaired(y1, c, y2, p, tolerance=0.1)
    assert not e.paired and "unpaired" in e.method and e.low < e.delta < e.high
    assert e.verdict == "promote"


def _lead_test_frame(n: int, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    y, c, p = _world(n, 0.7, 0.68, seed)
    frame = pd.DataFrame({"lead_score": y.astype(int),
                          "lead_ts": pd.Timestamp("2024-03-10") + pd.to_timedelta(np.arange(n), unit="min"),
                          "account_id": [f"a{i}" for i in range(n)],
                          "company_tier": np.where(np.arange(n) % 2, "SMB", "Enterprise"),
                          "region": "NA"})
    return frame, c, p


def test_the_gate_of_a_regression_model_is_non_inferiority_on_spearman():
    from retrainer.evaluation import compare_on_test, gate_comparison, slice_spearman

    frame, c, p = _lead_test_frame(3000)
    with specs.using("lead-scoring"):
        cand = C.regression_metrics(frame["lead_score"], c)
        prod = {**C.regression_metrics(frame["lead_score"], p), "version": "1.0.0"}
        cmp = compare_on_test(cand, prod, frame, c, p)
        decision = gate_comparison(cmp, GateSettings())
        assert cmp.evidence.metric == "spearman" and cmp.evidence.tolerance == 0.02
        assert decision.eligible and decision.metric == "spearman", decision.reason
        assert "ΔSpearman" in decision.reason and "3,000 rows" in decision.reason
        assert decision.rules[0]["rule"] == "min-spearman"
        # below the spec's floor (metrics.gate.min 0.50) it is rejected, whatever production does
        noisy = c + np.random.default_rng(1).normal(scale=4.0, size=len(c))
        low = gate_comparison(compare_on_test(C.regression_metrics(frame["lead_score"], noisy), prod, frame,
                                              noisy, p), GateSettings())
        assert not low.eligible and "below the minimum 0.50" in low.reason
        # the AUC-only policies refuse a regression model in one line
        from retrainer.errors import ConfigError

        with pytest.raises(ConfigError, match="policy 'protocol24' judges AUC"):
            gate_comparison(cmp, GateSettings(policy="protocol24"))
        slices = slice_spearman(frame, c)
        assert set(slices) == {"company_tier", "region"} and set(slices["company_tier"]) == {"SMB", "Enterprise"}


def test_spearman_difference_is_evidence_by_zou_or_bootstrap():
    y, c, p = _world(2000, 0.70, 0.60, seed=7)
    z = C.spearman_difference(y, c, p, 0.95, method="zou", tolerance=0.02)
    b = C.spearman_difference(y, c, p, 0.95, method="bootstrap", tolerance=0.02, n_boot=400)
    ref = spearmanr(y, c).statistic - spearmanr(y, p).statistic
    assert z.delta == pytest.approx(ref, abs=1e-9) and b.delta == pytest.approx(ref, abs=1e-9)
    assert z.metric == "spearman" and "Zou" in z.method and "bootstrap" in b.method
    assert z.verdict == b.verdict == "promote"
    assert (z.high - z.low) == pytest.approx(b.high - b.low, rel=0.25)
    with pytest.raises(ValueError):
        C.spearman_difference(y, c, p, method="delong")


def test_error_differences_are_paired_and_lower_is_better():
    rng = np.random.default_rng(3)
    y = rng.uniform(1, 5, 4000)
    a = y + rng.normal(0, 0.5, 4000)
    b = y + rng.normal(0, 0.7, 4000)
    mae = C.error_difference(y, a, b, "mae")
    rmse = C.error_difference(y, a, b, "rmse")
    assert mae["delta"] == pytest.approx(np.mean(np.abs(a - y)) - np.mean(np.abs(b - y)), abs=1e-6)
    assert rmse["delta"] == pytest.approx(np.sqrt(np.mean((a - y) ** 2)) - np.sqrt(np.mean((b - y) ** 2)), abs=1e-6)
    assert mae["high"] < 0 and rmse["high"] < 0  # a is clearly better (lower error)
    same = C.error_difference(y, a, a, "mae")
    assert same["delta"] == 0 and same["low"] == same["high"] == 0
    # an entity repeating 20 times with a shared error widens the interval
    ent = np.repeat(np.arange(200), 20)
    a2 = a + np.repeat(rng.normal(0, 0.5, 200), 20)
    plain = C.error_difference(y, a2, b, "mae")
    clustered = C.error_difference(y, a2, b, "mae", clusters=ent)
    assert clustered["se"] > 1.5 * plain["se"] and "clustered" in clustered["method"]
    assert C.error_difference(y[:2], a[:2], b[:2]) is None
