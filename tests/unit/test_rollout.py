"""Canary decision logic on constructed evidence (the rule at its boundaries), and the DeLong
interval on simulated data."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from retrainer.evidence import AUCDelta, decide
from retrainer.rollout import (
    ArmStats,
    LiveEvidence,
    RolloutPlan,
    Stage,
    arms_from_stats,
    auc_difference_ci,
    check,
    checks_planned,
    delong_auc_variance,
    manual,
    max_extensions,
)
from retrainer.settings import CanarySettings, Settings

T0 = datetime(2024, 6, 1, tzinfo=timezone.utc)
SETTINGS = CanarySettings()
PLAN = RolloutPlan.default(SETTINGS)


def arm(variant="green", auc=0.80, n_labels=500, error_rate=0.0, p95=20.0, n=5000):
    return ArmStats(variant, "1.0.0", n, n_labels, auc, error_rate, p95, round(error_rate * n))


def at(hours: float):
    return T0 + timedelta(hours=hours)


@dataclass(frozen=True)
class Result:
    """A guardrail or label-free result as `check` reads it (fired/worse, reason, to_dict)."""
    fired: bool = False
    worse: bool = False
    reason: str = "ok"

    def to_dict(self):
        return {"fired": self.fired, "worse": self.worse, "reason": self.reason}


def verdict(low, high, pos=300, neg=1700, tolerance=0.02):
    mid = (low + high) / 2
    d = AUCDelta("paired DeLong", mid, low, high, (high - low) / 3.92, 0.95, 0.78 + mid, 0.78, pos + neg, pos,
                 pos + neg, pos)
    return decide(d, tolerance, source="registration month", paired=True)


def live(v=None, guardrails=(), label_free=None):
    return LiveEvidence(arm(), arm("blue"), tuple(guardrails), label_free, v if v is not None else verdict(-0.01, 0.01))


def test_default_plan():
    assert PLAN.stages == (Stage(0.10, timedelta(hours=72), timedelta(hours=6)),)
    assert RolloutPlan.default(Settings()) == PLAN
    short = RolloutPlan.compressed(SETTINGS, duration_seconds=60, check_interval_seconds=5)
    assert short.duration == timedelta(seconds=60) and short.stages[0].traffic == 0.10


def test_continue_before_end_with_progress():
    for hours, progress in ((0, 0.0), (6, 6 / 72), (36, 0.5), (71.9, 71.9 / 72)):
        d = check(PLAN, T0, at(hours), live(verdict(-0.05, -0.03)), SETTINGS)
        assert d.action == "continue", d
        assert d.progress == pytest.approx(progress)
        assert d.traffic == 0.10 and d.elapsed == timedelta(hours=hours)
    d = check(PLAN, T0, at(6), live(), SETTINGS)
    assert d.next_check_at == at(12)
    assert check(PLAN, T0, at(80), live(), SETTINGS).progress == 1.0


@pytest.mark.parametrize("low,high,action", [
    (-0.0199, 0.01, "promote"),    # lower bound just above -δ
    (-0.05, -0.0201, "rollback"),  # upper bound just below -δ
    (-0.0201, 0.01, "extend"),     # interval contains -δ: inconclusive, extended
    (-0.05, -0.0199, "extend"),
])
def test_the_end_decides_by_non_inferiority_on_the_interval(low, high, action):
    d = check(PLAN, T0, at(72), live(verdict(low, high)), SETTINGS)
    assert d.action == action, d.reason
    assert d.ci["low"] == pytest.approx(low) and d.ci["high"] == pytest.approx(high)
    assert d.evidence["verdict"]["n_candidate"] == 2000 and d.evidence["verdict"]["pos_candidate"] == 300


def test_inconclusive_extends_up_to_the_maximum_then_follows_the_policy():
    unsure = live(verdict(-0.03, 0.01))
    assert max_extensions(PLAN, SETTINGS) == 1  # 72 h + 72 h = the 144 h maximum
    d = check(PLAN, T0, at(72), unsure, SETTINGS)
    assert d.action == "extend" and "extension 1 of 1" in d.reason
    d = check(PLAN, T0, at(100), unsure, SETTINGS, extensions=1)  # before the extended end
    assert d.action == "continue" and d.progress == pytest.approx(100 / 144)
    d = check(PLAN, T0, at(144), unsure, SETTINGS, extensions=1)
    assert d.action == "rollback" and "still inconclusive at the maximum duration" in d.reason
    # an inconclusive verdict is never promoted, whatever the policy: "human" holds for a person
    human = CanarySettings(inconclusive="human", human_timeout_hours=24)
    d = check(PLAN, T0, at(144), unsure, human, extensions=1)
    assert d.action == "hold" and d.next_check_at == at(168) and not d.final
    d = check(PLAN, T0, at(168), unsure, human, extensions=1, held=True)
    assert d.action == "rollback" and "no human decision within 24 h" in d.reason
    # enough evidence after the extension decides
    assert check(PLAN, T0, at(144), live(), SETTINGS, extensions=1).action == "promote"


def test_too_few_positives_is_inconclusive_not_a_decision():
    few = verdict(-0.01, 0.01, pos=99)
    assert few.verdict == "inconclusive"
    d = check(PLAN, T0, at(72), live(few), SETTINGS)
    assert d.action == "extend" and "too few labels" in d.reason


def test_no_evidence_at_all_is_inconclusive():
    d = check(PLAN, T0, at(72), LiveEvidence(arm(), arm("blue")), SETTINGS)
    assert d.action == "extend" and "no evidence on matured labels" in d.reason


def test_guardrails_and_the_label_free_estimate_roll_back_at_once():
    d = check(PLAN, T0, at(6), live(guardrails=[Result(fired=True, reason="error rate bound 0.012 > 0.01")]),
              SETTINGS)
    assert d.action == "rollback" and d.reason == "guardrail: error rate bound 0.012 > 0.01" and d.traffic == 0.0
    d = check(PLAN, T0, at(1), live(label_free=Result(worse=True, reason="CBPE ΔAUC -0.06 [-0.08, -0.04]")),
              SETTINGS)
    assert d.action == "rollback" and d.reason.startswith("label-free estimate: ")
    # guardrails that hold and an estimate that is not worse let the verdict decide
    ok = live(guardrails=[Result(), Result()], label_free=Result(reason="CBPE ΔAUC -0.001"))
    assert check(PLAN, T0, at(6), ok, SETTINGS).action == "continue"
    d = check(PLAN, T0, at(72), ok, SETTINGS)
    assert d.action == "promote" and "label-free: CBPE" in d.reason


def test_checks_planned_counts_checks_to_the_maximum_duration():
    # 144 h maximum / 6 h = 24 checks, plus the final one
    assert checks_planned(PLAN, SETTINGS) == 25
    two = RolloutPlan((Stage(0.05, timedelta(hours=2), timedelta(minutes=5)),
                       Stage(0.5, timedelta(hours=2), timedelta(hours=1))))
    assert checks_planned(two, CanarySettings(max_duration_hours=4)) == 24 + 2 + 1


def test_arms_from_variant_stats_and_manual():
    stats = {"green": {"n_predictions": 900, "n_labels": 300, "auc": 0.79, "error_rate": 0.01,
                       "p95_latency_ms": 3.0, "version": "1.2.0"},
             "blue": {"n_predictions": 8100, "n_labels": 2700, "auc": 0.8, "error_rate": 0.0,
                      "p95_latency_ms": 2.5, "version": "1.1.0"}}
    cand, prod = arms_from_stats(stats)
    assert cand.version == "1.2.0" and cand.n_labels == 300 and prod.auc == 0.8 and cand.n_errors == 9
    empty = ArmStats.from_variant_stats({}, "green")
    assert empty.n_predictions == 0 and empty.auc is None
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


def test_decision_carries_the_verdicts_interval_and_evidence():
    d = check(PLAN, T0, at(72), live(verdict(-0.015, 0.005)), SETTINGS)
    assert d.action == "promote" and "95% CI [-0.0150, +0.0050]" in d.reason
    assert d.ci["method"] == "paired DeLong" and d.auc_diff == pytest.approx(-0.005)
    assert d.to_dict()["evidence"]["verdict"]["verdict"] == "promote"


def test_a_version_the_gate_sent_for_review_needs_an_approver():
    from retrainer.errors import RolloutError
    from retrainer.rollout.operations import check_approval
    from tests.helpers import make_record

    check_approval(make_record("1.1.0"), None, ["ml-lead"])  # no review asked: nothing needed
    review = make_record("1.2.0", gate={"eligible": True, "needs_approval": True, "policy": "task12",
                                        "reason": "relative improvement 2.0% < 5%"})
    with pytest.raises(RolloutError, match=r"needs a human approval .*task12.*--approved-by"):
        check_approval(review, None, ["ml-lead"])
    with pytest.raises(RolloutError, match="intern is not an approver"):
        check_approval(review, "intern", ["ml-lead"])
    check_approval(review, "ml-lead", ["ml-lead"])
    # a plan that requires an approval (immediate) asks for one even when the gate did not
    with pytest.raises(RolloutError, match="an immediate rollout needs a named approver"):
        check_approval(make_record("1.3.0"), None, ["ml-lead"], required="an immediate rollout")
    with pytest.raises(RolloutError, match="intern is not an approver"):
        check_approval(make_record("1.3.0"), "intern", ["ml-lead"], required="an immediate rollout")
    check_approval(make_record("1.3.0"), "ml-lead", ["ml-lead"], required="an immediate rollout")


def test_a_tracked_stage_decides_like_the_elapsed_time_on_a_one_stage_plan():
    # the flow passes the stage it is in; for the default one-stage plan nothing changes
    for hours in (0, 6, 71.9, 72, 80):
        a = check(PLAN, T0, at(hours), live(), SETTINGS)
        b = check(PLAN, T0, at(hours), live(), SETTINGS, stage=0, stage_started_at=T0)
        assert (a.action, a.reason, a.traffic, a.next_check_at) == (b.action, b.reason, b.traffic, b.next_check_at)


def test_a_multi_stage_plan_without_criteria_advances_on_time():
    two = RolloutPlan((Stage(0.05, timedelta(hours=2), timedelta(hours=1)),
                       Stage(0.5, timedelta(hours=2), timedelta(hours=1))))
    assert check(two, T0, at(1), live(), SETTINGS).traffic == 0.05
    d = check(two, T0, at(2), live(), SETTINGS, stage=0, stage_started_at=T0)
    assert d.action == "continue" and d.traffic == 0.5 and d.details["advance_to"] == 1
    assert check(two, T0, at(2), live(), SETTINGS).traffic == 0.5  # by elapsed time: already stage 2
