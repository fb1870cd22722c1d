"""Rollout plans as YAML files (parsing, validation first with one-line errors, the dict form and
its older shape), `retrainer rollout validate`, and the decisions of every strategy in
`policy.check` at their boundaries, on constructed evidence and on real guardrail tests."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pytest

from retrainer.errors import ConfigError
from retrainer.rollout import ArmStats, LiveEvidence, RolloutPlan, Stage, check
from retrainer.rollout.live import disagreement_guardrail, stage_criteria
from retrainer.serving.routing import RoutingTable, VariantSpec
from retrainer.serving.shadow import shadow_plan
from retrainer.settings import Settings
from tests.helpers import REPO

PLANS = REPO / "rollout-plans"
T0 = datetime(2026, 6, 1, tzinfo=timezone.utc)
SETTINGS = Settings()


def at(**kw) -> datetime:
    return T0 + timedelta(**kw)


@dataclass(frozen=True)
class Result:
    """A guardrail/criterion/ab result as `check` reads it."""
    fired: bool = False
    reason: str = "ok"
    decided: bool = False
    winner: str | None = None

    def to_dict(self):
        return {"fired": self.fired, "reason": self.reason, "decided": self.decided, "winner": self.winner}


def arm(variant="green"):
    return ArmStats(variant, "1.0.0", 1000, 0, None, 0.0, 20.0, 0)


def live(criteria=(), stage_requests=None, ab=None, rejected=None, verdict=None):
    return LiveEvidence(arm(), arm("blue"), (), None, verdict, (), tuple(criteria), stage_requests, ab, rejected)


# ------------------------------------------------------------------------------------------------
# files and validation


def test_shipped_plans_parse_and_round_trip():
    plans = {p.stem: RolloutPlan.from_file(p) for p in sorted(PLANS.glob("*.yaml"))}
    assert set(plans) == {"canary", "protocol24-linear", "shadow-cutover", "ab-50-50", "immediate"}
    for name, plan in plans.items():
        assert RolloutPlan.from_dict(plan.to_dict()) == plan, name
    assert plans["canary"].stages == RolloutPlan.default(SETTINGS).stages  # today's default, as a file
    lin = plans["protocol24-linear"]
    assert [s.traffic for s in lin.stages] == [0.05, 0.25, 0.5, 1.0]
    assert [s.duration for s in lin.stages] == [timedelta(hours=h) for h in (2, 6, 12, 24)]
    assert all(s.check_interval == timedelta(minutes=5) for s in lin.stages)
    assert [s.limits["error_rate"] for s in lin.stages] == [0.02, 0.015, 0.01, 0.01]
    assert [s.limits["p95_latency_ms"] for s in lin.stages] == [150, 120, 100, 100]
    assert all(s.limits["latency_spike"] == 0.5 for s in lin.stages)
    sh = plans["shadow-cutover"]
    assert sh.strategy == "shadow" and sh.stages[0].shadow and sh.stages[0].traffic == 0.0
    assert sh.stages[0].duration == timedelta(hours=24) and sh.stages[0].limits["max_disagreement"] == 0.1
    ab = plans["ab-50-50"].ab_settings
    assert ab["split"] == 0.5 and ab["metric"] == "auc" and ab["min_duration_s"] == 3 * 86400
    assert plans["immediate"].approval and plans["immediate"].stages == ()


def test_old_dict_shape_still_reads():
    plan = RolloutPlan.from_dict({"stages": [{"traffic": 0.5, "duration_s": 8, "check_interval_s": 4}]})
    assert plan.strategy == "canary" and plan.stages == (Stage(0.5, timedelta(seconds=8), timedelta(seconds=4)),)
    assert plan.to_dict()["stages"] == [{"traffic": 0.5, "duration_s": 8.0, "check_interval_s": 4.0}]
    assert RolloutPlan.from_dict(None, SETTINGS) == RolloutPlan.default(SETTINGS)


LINEAR = """strategy: linear
check_interval: 5m
stages:
  - {traffic: 0.1, duration: 2h}
  - {traffic: 1.0, duration: 6h}
"""


@pytest.mark.parametrize("text, message", [
    (LINEAR.replace("0.1,", "1.5,"), "stage 1: traffic must be in (0, 1], got 1.5"),
    (LINEAR.replace("0.1,", "0,"), "stage 1: traffic must be in (0, 1], got 0"),
    (LINEAR.replace("1.0,", "0.05,"), "stages out of order: stage 2 traffic 0.05 < stage 1 traffic 0.1"),
    (LINEAR.replace("1.0,", "0.5,"), "the last stage of a linear plan should reach traffic 1.0"),
    (LINEAR.replace("duration: 2h}", "duration: 2h, wait: 3m}"), "stage 1: unknown key(s) wait"),
    (LINEAR.replace("strategy: linear", "strategy: linear\nspeed: fast"), "unknown key(s) speed"),
    (LINEAR.replace("duration: 6h}", "duration: 6h, criteria: {auc_drop: 0.1}}"),
     "stage 2: unknown criterion 'auc_drop'"),
    (LINEAR.replace("duration: 6h}", "duration: 6h, criteria: {error_rate: 2}}"),
     "stage 2: criterion error_rate must be a share in (0, 1)"),
    (LINEAR.replace("duration: 2h}", "duration: 2 hours}"), "stage 1 duration: '2 hours' is not a duration"),
    (LINEAR.replace("duration: 2h}", "duration: 2}"), "stage 1 duration: 2 needs a unit"),
    (LINEAR.replace("check_interval: 5m\n", ""), "stage 1: check_interval is missing"),
    (LINEAR.replace("strategy: linear", "strategy: rocket"), "unknown strategy 'rocket'"),
    ("strategy: immediate\napproval: none\n", "an immediate rollout always needs an approval"),
    ("strategy: ab\nab: {split: 0.5, metric: clicks, max_duration: 2d}\n", "ab metric 'clicks' is not one of"),
    ("strategy: ab\nab: {split: 0.5, min_duration: 3d, max_duration: 2d}\n",
     "ab min_duration 72h is longer than max_duration 48h"),
    ("strategy: canary\ncheck_interval: 1h\nstages: [{traffic: 0.1, duration: 1h, "
     "criteria: {max_disagreement: 0.1}}]\n", "criterion 'max_disagreement' is for the shadow strategy only"),
    ("stages: [1, 2\n", "not valid YAML"),
])
def test_bad_plans_fail_first_with_one_line_naming_the_file(tmp_path, text, message):
    path = tmp_path / "plan.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        RolloutPlan.from_file(path)
    line = str(err.value)
    assert "\n" not in line and line.startswith(f"rollout plan {path}: "), line
    assert message in line, line


def test_allow_partial_and_missing_file(tmp_path):
    plan = RolloutPlan.from_yaml(LINEAR.replace("1.0,", "0.5,") + "allow_partial: true\n")
    assert plan.stages[-1].traffic == 0.5 and plan.allow_partial
    with pytest.raises(ConfigError, match=r"rollout plan .*nope.yaml: cannot read it"):
        RolloutPlan.from_file(tmp_path / "nope.yaml")


def test_cli_validate(tmp_path, capsys):
    from cli.main import main

    assert main(["rollout", "validate", str(PLANS / "protocol24-linear.yaml")]) == 0
    out = capsys.readouterr().out
    assert "ok. linear plan" in out and "stage 2: 25% for 6h, checked every 5m" in out and "p95_latency_ms 120" in out
    bad = tmp_path / "bad.yaml"
    bad.write_text(LINEAR.replace("1.0,", "0.05,"))
    assert main(["rollout", "validate", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: rollout plan {bad}: stages out of order")
    # `canary start --plan` validates before anything starts or changes
    assert main(["canary", "start", "--plan", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: rollout plan {bad}: stages out of order")


# ------------------------------------------------------------------------------------------------
# linear: criteria and stage advancement

TWO = RolloutPlan.from_yaml("""strategy: linear
check_interval: 5m
criteria: {min_requests: 200}
stages:
  - {traffic: 0.1, duration: 2h, criteria: {p95_latency_ms: 150}}
  - {traffic: 1.0, duration: 6h, criteria: {p95_latency_ms: 120}}
""")


def test_a_broken_criterion_rolls_back_at_once_naming_the_stage():
    d = check(TWO, T0, at(hours=3), live([Result(True, "p95 latency: 412 requests, observed p95 180.0 ms")], 412),
              SETTINGS, stage=1, stage_started_at=at(hours=2))
    assert d.action == "rollback" and d.reason.startswith("stage 2 criteria: p95 latency: 412 requests")


def test_stage_advances_only_with_enough_requests_at_its_end():
    ok = live([Result()], 500)
    d = check(TWO, T0, at(hours=1), ok, SETTINGS, stage=0, stage_started_at=T0)
    assert d.action == "continue" and d.traffic == 0.1 and "advance_to" not in d.details
    d = check(TWO, T0, at(hours=2), ok, SETTINGS, stage=0, stage_started_at=T0)
    assert d.action == "continue" and d.traffic == 1.0 and d.details["advance_to"] == 1
    assert "stage 1 -> 2: criteria held on 500 requests (>= 200 needed)" in d.reason
    few = live([Result()], 150)
    d = check(TWO, T0, at(hours=2), few, SETTINGS, stage=0, stage_started_at=T0)
    assert d.action == "extend" and d.traffic == 0.1 and "150 of the 200 requests" in d.reason
    assert d.next_check_at == at(hours=2, minutes=5)
    short = Settings(canary={"max_duration_hours": 2})
    d = check(TWO, T0, at(hours=2), few, short, stage=0, stage_started_at=T0)
    assert d.action == "rollback" and "still inconclusive at the maximum duration" in d.reason
    human = Settings(canary={"max_duration_hours": 2, "inconclusive": "human"})
    assert check(TWO, T0, at(hours=2), few, human, stage=0, stage_started_at=T0).action == "hold"


def test_rejected_elsewhere_ends_with_a_rollback_saying_so():
    d = check(TWO, T0, at(hours=1), live(rejected="1.2.0 was rejected by guardrail-watch: guardrail: p95"),
              SETTINGS, stage=0, stage_started_at=T0)
    assert d.action == "rollback" and d.reason.startswith("already rolled back elsewhere: 1.2.0 was rejected by")


# ------------------------------------------------------------------------------------------------
# ab and immediate

AB = RolloutPlan.from_yaml("strategy: ab\nab: {split: 0.5, metric: auc, min_duration: 1d, max_duration: 4d, "
                           "check_interval: 12h}\n")


@pytest.mark.parametrize("hours, result, action, start", [
    (12, Result(decided=True, winner="candidate", reason="auc: +0.03"), "continue", "A/B at 50% / 50%"),
    (24, Result(decided=True, winner="candidate", reason="auc: +0.03"), "promote", "A/B winner candidate: auc"),
    (36, Result(decided=True, winner="production", reason="auc: -0.03"), "rollback", "A/B winner production"),
    (48, Result(reason="auc: interval spans 0"), "continue", "A/B undecided (auc: interval spans 0)"),
    (96, Result(reason="auc: interval spans 0"), "rollback", "no winner: production stays"),
])
def test_ab_decisions(hours, result, action, start):
    d = check(AB, T0, at(hours=hours), live(ab=result), SETTINGS)
    assert d.action == action and d.reason.startswith(start), d.reason
    assert d.evidence["ab"]["reason"] == result.reason


def test_immediate_promotes_at_the_first_check():
    plan = RolloutPlan.from_file(PLANS / "immediate.yaml")
    d = check(plan, T0, T0, live(), SETTINGS)
    assert d.action == "promote" and d.traffic == 1.0 and d.reason.startswith("immediate rollout")


# ------------------------------------------------------------------------------------------------
# criteria on real rows (the guardrail tests), shadow routing


def frame(n_cand: int, cand_ms: float, n_prod: int = 400, prod_ms: float = 20.0, errors: int = 0,
          shadow: bool = False) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = {"ts": pd.Timestamp(T0), "variant": ["green"] * n_cand + ["blue"] * n_prod,
            "latency_ms": np.r_[rng.normal(cand_ms, 3, n_cand).clip(1), rng.normal(prod_ms, 3, n_prod).clip(1)],
            "error": [True] * errors + [False] * (n_cand + n_prod - errors),
            "targeted": False, "shadow": [shadow] * n_cand + [False] * n_prod,
            "score": 0.3, "request_id": [f"r{i}" for i in range(n_cand + n_prod)], "row": 0}
    return pd.DataFrame(rows)


def test_stage_criteria_on_rows():
    stage = Stage(0.25, timedelta(hours=6), timedelta(minutes=5),
                  {"p95_latency_ms": 120, "latency_spike": 0.5, "error_rate": 0.015, "min_requests": 200})
    results, n = stage_criteria(frame(412, 180.0), stage, SETTINGS, checks=10)
    by = {r.name: r for r in results}
    assert n == 412 and by["latency_p95"].fired and "412 requests" in by["latency_p95"].reason
    assert by["latency_p95_relative"].fired and not by["error_rate"].fired
    results, n = stage_criteria(frame(412, 30.0, errors=40), stage, SETTINGS, checks=10)
    by = {r.name: r for r in results}
    assert by["error_rate"].fired and not by["latency_p95"].fired and not by["latency_p95_relative"].fired
    results, n = stage_criteria(frame(120, 180.0), stage, SETTINGS, checks=10)  # below min_requests: not judged
    assert n == 120 and not any(r.fired for r in results)
    shadow = Stage(0.0, timedelta(hours=1), timedelta(minutes=5), {"p95_latency_ms": 50}, shadow=True)
    results, n = stage_criteria(frame(300, 90.0, shadow=True), shadow, SETTINGS, checks=1)
    assert n == 300 and results[0].fired


def test_disagreement_guardrail_uses_a_lower_bound():
    assert not disagreement_guardrail(100, 0.12, 0.10).fired  # 12 of 100: the bound is below 10%
    assert disagreement_guardrail(5000, 0.12, 0.10).fired
    assert not disagreement_guardrail(0, None, 0.10).judged


def test_candidate_at_weight_zero_is_scored_in_shadow():
    scorers = {"blue": object(), "green": object(), "previous-1": object()}
    table = RoutingTable.build([VariantSpec("blue", "1.0.0", 1.0), VariantSpec("green", "1.1.0", 0.0),
                                VariantSpec("previous-1", "0.9.0", 0.0)], scorers, 1, "")
    plan = shadow_plan(table, "candidate")
    assert list(plan) == ["blue"] and [j[0] for j in plan["blue"]] == ["green"]
    steady = RoutingTable.build([VariantSpec("blue", "1.0.0", 1.0), VariantSpec("previous-1", "0.9.0", 0.0)],
                                scorers, 1, "")
    assert shadow_plan(steady, "candidate") == {}
