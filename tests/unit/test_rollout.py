"""Canary decision logic on constructed windows, and the DeLong interval on simulated data."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from retrainer.rollout import (
    ArmStats,
    RolloutPlan,
    Stage,
    arms_from_stats,
    auc_difference_ci,
    check,
    delong_auc_variance,
    manual,
)
from retrainer.settings import CanarySettings, Settings

T0 = datetime(2024, 6, 1, tzinfo=timezone.utc)
SETTINGS = CanarySettings()
PLAN = RolloutPlan.default(SETTINGS)


def arm(variant="green", auc=0.80, n_labels=500, error_rate=0.0, p95=20.0, n=5000):
    return ArmStats(variant, "1.0.0", n, n_labels, auc, error_rate, p95)


def at(hours: float):
    return T0 + timedelta(hours=hours)


def test_default_plan():
    assert PLAN.stages == (Stage(0.10, timedelta(hours=72), timedelta(hours=6)),)
    assert RolloutPlan.default(Settings()) == PLAN
    short = RolloutPlan.compressed(SETTINGS, duration_seconds=60, check_interval_seconds=5)
    assert short.duration == timedelta(seconds=60) and short.stages[0].traffic == 0.10


def test_continue_before_end_with_progress():
    for hours, progress in ((0, 0.0), (6, 6 / 72), (36, 0.5), (71.9, 71.9 / 72)):
        d = check(PLAN, T0, at(hours), arm(auc=0.5), arm("blue"), SETTINGS)
        assert d.action == "continue", d
        assert d.progress == pytest.approx(progress)
        assert d.traffic == 0.10 and d.elapsed == timedelta(hours=hours)
    d = check(PLAN, T0, at(6), arm(), arm("blue"), SETTINGS)
    assert d.next_check_at == at(12)
    assert check(PLAN, T0, at(80), arm(), arm("blue"), SETTINGS).progress == 1.0


def test_borderline_tolerance():
    prod = arm("blue", auc=0.80)
    d = check(PLAN, T0, at(72), arm(auc=0.78), prod, SETTINGS)  # exactly 0.02 below
    assert d.action == "promote", d.reason
    assert d.auc_diff == pytest.approx(-0.02)
    d = check(PLAN, T0, at(72), arm(auc=0.779), prod, SETTINGS)  # 0.021 below
    assert d.action == "rollback" and "more than 0.02 below" in d.reason
    assert check(PLAN, T0, at(72), arm(auc=0.83), prod, SETTINGS).action == "promote"


def test_too_few_labels_extend_once_then_rollback():
    few = arm(n_labels=150)
    d = check(PLAN, T0, at(72), few, arm("blue"), SETTINGS)
    assert d.action == "extend" and "too few labels" in d.reason
    d = check(PLAN, T0, at(100), few, arm("blue"), SETTINGS, extended=True)  # before the extended end
    assert d.action == "continue" and d.progress == pytest.approx(100 / 144)
    d = check(PLAN, T0, at(144), few, arm("blue"), SETTINGS, extended=True)
    assert d.action == "rollback" and "still" in d.reason
    # enough labels after the extension: the AUC rule decides
    assert check(PLAN, T0, at(144), arm(), arm("blue"), SETTINGS, extended=True).action == "promote"
    # the production arm counts too
    assert check(PLAN, T0, at(72), arm(), arm("blue", n_labels=10), SETTINGS).action == "extend"


def test_too_few_labels_other_policies():
    few = arm(n_labels=5)
    for policy, action in (("rollback", "rollback"), ("promote", "promote")):
        s = CanarySettings(too_few_labels=policy)
        assert check(PLAN, T0, at(72), few, arm("blue"), s).action == action


def test_guardrails_roll_back_at_once():
    d = check(PLAN, T0, at(6), arm(error_rate=0.02), arm("blue"), SETTINGS)
    assert d.action == "rollback" and "error rate" in d.reason and d.traffic == 0.0
    d = check(PLAN, T0, at(1), arm(p95=400.0), arm("blue"), SETTINGS)
    assert d.action == "rollback" and "latency" in d.reason
    # at the limit is fine
    assert check(PLAN, T0, at(6), arm(error_rate=0.01, p95=250.0), arm("blue"), SETTINGS).action == "continue"


def test_arms_from_variant_stats_and_manual():
    stats = {"green": {"n_predictions": 900, "n_labels": 300, "auc": 0.79, "error_rate": 0.0,
                       "p95_latency_ms": 3.0, "version": "1.2.0"},
             "blue": {"n_predictions": 8100, "n_labels": 2700, "auc": 0.8, "error_rate": 0.0,
                      "p95_latency_ms": 2.5, "version": "1.1.0"}}
    cand, prod = arms_from_stats(stats)
    assert cand.version == "1.2.0" and cand.n_labels == 300 and prod.auc == 0.8
    empty = ArmStats.from_variant_stats({}, "green")
    assert empty.n_predictions == 0 and empty.auc is None
    assert check(PLAN, T0, at(72), empty, prod, SETTINGS).action == "extend"
    d = manual("rollback", "ml-lead", "pager:\n bad scores", now=at(3))
    assert d.manual and d.actor == "ml-lead" and d.action == "rollback"
    assert d.reason == "manual rollback by ml-lead: pager: bad scores"
    with pytest.raises(ValueError):
        manual("ship-it", "ml-lead", "x")
    with pytest.raises(ValueError):
        manual("promote", "", "x")
    assert d.to_dict()["elapsed_s"] == 0.0


def _simulate(rng, n, shift):
    y = (rng.random(n) < 0.2).astype(int)
    s = rng.normal(0, 1, n) + shift * y
    return y, s


def test_delong_ci_covers_truth_and_matches_bootstrap():
    from scipy.stats import norm
    from sklearn.metrics import roc_auc_score

    # Binormal model: AUC = Phi(shift / sqrt(2)).
    true_diff = norm.cdf(1.0 / np.sqrt(2)) - norm.cdf(1.2 / np.sqrt(2))
    rng = np.random.default_rng(0)
    covered = 0
    trials = 60
    for _ in range(trials):
        yc, sc = _simulate(rng, 800, 1.0)
        yp, sp = _simulate(rng, 3000, 1.2)
        ci = auc_difference_ci(yc, sc, yp, sp)
        covered += ci["low"] <= true_diff <= ci["high"]
    assert covered / trials >= 0.85  # nominal 95%

    yc, sc = _simulate(rng, 800, 1.0)
    yp, sp = _simulate(rng, 3000, 1.2)
    ci = auc_difference_ci(yc, sc, yp, sp)
    assert ci["auc_candidate"] == pytest.approx(roc_auc_score(yc, sc))
    assert ci["auc_production"] == pytest.approx(roc_auc_score(yp, sp))
    boots = []
    for _ in range(400):
        i = rng.integers(0, len(yc), len(yc))
        j = rng.integers(0, len(yp), len(yp))
        boots.append(roc_auc_score(yc[i], sc[i]) - roc_auc_score(yp[j], sp[j]))
    assert ci["se"] == pytest.approx(np.std(boots), rel=0.2)
    lo, hi = np.percentile(boots, [2.5, 97.5])
    assert abs(ci["low"] - lo) < 0.02 and abs(ci["high"] - hi) < 0.02


def test_delong_edge_cases_and_ties():
    assert auc_difference_ci([1, 1], [0.2, 0.3], [0, 1], [0.1, 0.9]) is None  # one class
    auc, var = delong_auc_variance([0, 0, 1, 1], [0.5, 0.5, 0.5, 0.5])  # all tied
    assert auc == 0.5 and var == 0.0
    auc, _ = delong_auc_variance([0, 1, 0, 1, 1], [0.1, 0.4, 0.4, 0.8, 0.3])
    from sklearn.metrics import roc_auc_score

    assert auc == pytest.approx(roc_auc_score([0, 1, 0, 1, 1], [0.1, 0.4, 0.4, 0.8, 0.3]))


def test_decision_carries_ci():
    ci = {"diff": -0.01, "low": -0.04, "high": 0.02, "se": 0.015, "auc_candidate": 0.79,
          "auc_production": 0.8, "level": 0.95}
    d = check(PLAN, T0, at(72), arm(auc=0.79), arm("blue"), SETTINGS, ci=ci)
    assert d.action == "promote" and d.ci == ci and "95% CI" in d.reason
