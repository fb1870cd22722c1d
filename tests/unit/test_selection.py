"""retrainer.rollout.selection: which rollout a registered version gets, without a person."""
from __future__ import annotations

import pytest
import yaml

from retrainer.errors import ConfigError
from retrainer.rollout.selection import choose, load_plan_file
from retrainer.settings import Settings
from tests.helpers import make_record

STAGES = {"stages": [{"traffic": 0.1, "duration_s": 60, "check_interval_s": 10}]}
FAST = {"stages": [{"traffic": 0.5, "duration_s": 20, "check_interval_s": 5}]}


@pytest.fixture
def plans(tmp_path):
    normal, fast = tmp_path / "normal.yaml", tmp_path / "fast.yaml"
    normal.write_text(yaml.safe_dump(STAGES))
    fast.write_text(yaml.safe_dump(FAST))
    return Settings(home=tmp_path / "home", rollout={"plan": str(normal), "emergency_plan": str(fast)})


def test_a_scheduled_candidate_gets_the_ordinary_plan(plans):
    sel = choose(make_record("1.1.0", trigger="scheduled"), plans)
    assert sel.action == "rollout" and sel.plan == STAGES and not sel.emergency and not sel.needs_approval
    assert sel.plan_source.endswith("normal.yaml") and "1.1.0: plan" in sel.reason


@pytest.mark.parametrize("trigger", ["drift", "performance", "concept"])
def test_a_candidate_of_a_degradation_trigger_gets_the_emergency_plan(plans, trigger):
    sel = choose(make_record("1.2.0", trigger=trigger), plans)
    assert sel.plan == FAST and sel.emergency and sel.trigger == trigger
    assert f"emergency plan for a {trigger}-triggered candidate" in sel.reason


def test_without_an_emergency_plan_every_trigger_gets_the_plan(tmp_path, plans):
    s = plans.model_copy(update={"rollout": plans.rollout.model_copy(update={"emergency_plan": None})})
    sel = choose(make_record("1.2.0", trigger="drift"), s)
    assert sel.plan == STAGES and not sel.emergency


def test_the_emergency_triggers_are_configurable(plans):
    s = plans.model_copy(update={"rollout": plans.rollout.model_copy(update={"emergency_triggers": ["volume"]})})
    assert choose(make_record("1.2.0", trigger="volume"), s).plan == FAST
    assert choose(make_record("1.2.0", trigger="drift"), s).plan == STAGES


@pytest.mark.parametrize("status", ["rejected", "canary", "production", "archived"])
def test_only_a_candidate_is_rolled_out(plans, status):
    sel = choose(make_record("1.1.0", status=status), plans)
    assert sel.action == "skip" and sel.plan is None
    assert sel.reason == f"1.1.0 is {status}, not a candidate: nothing to roll out"


def test_the_gate_asking_for_a_human_means_an_approval_first(plans):
    gate = {"eligible": True, "needs_approval": True, "policy": "task12",
            "reason": "relative AUC improvement 1.2% < 5%: needs approval"}
    sel = choose(make_record("1.1.0", trigger="scheduled", gate=gate), plans)
    assert sel.action == "rollout" and sel.needs_approval
    assert "the gate asked for a human (relative AUC improvement 1.2% < 5%" in sel.reason


def test_a_missing_plan_file_means_the_canary_defaults(tmp_path):
    s = Settings(home=tmp_path, rollout={"plan": str(tmp_path / "nope.yaml")})
    sel = choose(make_record("1.1.0"), s)
    assert sel.action == "rollout" and sel.plan is None
    assert sel.plan_source == f"canary defaults ({tmp_path / 'nope.yaml'} not found)"


def test_relative_plan_paths_are_from_the_repo_root(tmp_path):
    s = Settings(home=tmp_path, rollout={"plan": "prefect.yaml"})  # any YAML mapping in the repo root
    assert choose(make_record("1.1.0"), s).plan["name"] == "retrainer"


def test_a_plan_file_that_is_not_a_mapping_is_one_error_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="must be a mapping with stages"):
        load_plan_file(bad)
    bad.write_text("stages: [unclosed\n")
    with pytest.raises(ConfigError, match="cannot read rollout plan"):
        load_plan_file(bad)


def test_rollout_settings_defaults_and_env(monkeypatch):
    s = Settings()
    assert s.rollout.guardrail_interval_s == 300 and s.rollout.plan == "rollout-plans/canary.yaml"
    monkeypatch.setenv("RETRAINER_ROLLOUT__GUARDRAIL_INTERVAL_S", "2")
    monkeypatch.setenv("RETRAINER_ROLLOUT__EMERGENCY_PLAN", "rollout-plans/fast.yaml")
    s = Settings()
    assert s.rollout.guardrail_interval_s == 2 and s.rollout.emergency_plan == "rollout-plans/fast.yaml"
    monkeypatch.setenv("RETRAINER_ROLLOUT__GUARDRAIL_INTERVAL_S", "0")
    with pytest.raises(Exception, match="greater than 0"):
        Settings()


def test_a_plan_requiring_an_approval_means_an_approval_first(tmp_path):
    plan = tmp_path / "immediate.yaml"
    plan.write_text("strategy: immediate\napproval: required\n")
    sel = choose(make_record("1.1.0"), Settings(home=tmp_path, rollout={"plan": str(plan)}))
    assert sel.needs_approval and sel.plan == {"strategy": "immediate", "approval": "required"}
    assert sel.reason.endswith("; the plan needs an approver")
