"""Retraining triggers as pure functions: config parsing, each trigger at its boundary, windows too
small to tell, priorities, emission cooldown, approvals and the duplicate decision. No Prefect."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pytest

from retrainer import triggers as T
from retrainer.drift import DriftReport, FeatureDrift
from retrainer.errors import ConfigError
from retrainer.rollout.statistics import delong_auc_variance
from tests.helpers import REPO, make_record

NOW = datetime(2025, 3, 10, 12, 0, tzinfo=timezone.utc)


def cfg(*entries, policy=None) -> T.TriggersConfig:
    data = {"retraining_triggers": list(entries)}
    if policy:
        data["policy"] = policy
    return T.parse_triggers(data)


def one(entry):
    return cfg(entry).retraining_triggers[0]


# ---- config -----------------------------------------------------------------------------------

def test_repo_triggers_yaml_parses_with_every_type_and_documented_values():
    c = T.load_triggers(REPO / "triggers.yaml")
    types = {t.type for t in c.retraining_triggers}
    assert types == {"scheduled", "data_drift", "performance_degradation", "concept_drift", "new_data_volume", "manual"}
    drift = c.by_type("data_drift")[0]
    assert (drift.psi_threshold, drift.min_features, drift.min_window) == (0.20, 3, 500)  # Protocol 24
    sched = c.by_type("scheduled")[0]
    assert (sched.cron, sched.timezone) == ("0 2 1 * *", "UTC")
    assert c.by_type("new_data_volume")[0].min_new_labelled_rows == 10_000
    assert c.by_type("concept_drift")[0].min_drop == 0.05
    perf = c.by_type("performance_degradation")[0]
    assert perf.consecutive_windows == 3 and perf.window == timedelta(days=7)
    assert (perf.min_positives, perf.min_negatives, perf.min_labels) == (50, 50, 200)
    assert c.by_type("manual")[0].requires_approval is True
    assert sorted(t.priority for t in c.retraining_triggers) == list(range(1, 7))


@pytest.mark.parametrize("data, fragment", [
    ({"retraining_triggers": [{"name": "d", "type": "data_drift", "priority": 1, "psi_threshold": -1}]},
     "retraining_triggers[0].psi_threshold (d): Input should be greater than 0"),
    ({"retraining_triggers": [{"name": "d", "type": "nonsense", "priority": 1}]},
     "does not match any of the expected tags"),
    ({"retraining_triggers": [{"name": "d", "type": "data_drift", "priority": 0}]}, "priority"),
    ({"retraining_triggers": [{"name": "d", "type": "data_drift"}]}, "priority (d): Field required"),
    ({"retraining_triggers": [{"name": "d", "type": "data_drift", "priority": 1, "window": "soon"}]}, "not a duration"),
    ({"retraining_triggers": [{"name": "s", "type": "scheduled", "priority": 1, "cron": "61 * * * *"}]}, "bad cron"),
    ({"retraining_triggers": [{"name": "s", "type": "scheduled", "priority": 1, "timezone": "Mars/Olympus"}]},
     "unknown time zone"),
    ({"retraining_triggers": [{"name": "d", "type": "data_drift", "priority": 1, "psi_treshold": 0.2}]},
     "psi_treshold"),
    ({"retraining_triggers": [{"name": "Bad Name", "type": "manual", "priority": 1}]}, "lowercase"),
    ({"retraining_triggers": [{"name": "a", "type": "manual", "priority": 1},
                              {"name": "a", "type": "manual", "priority": 2}]},
     "unique"),
    ({"retraining_triggers": []}, "at least 1"),
    ({"triggers": []}, "retraining_triggers"),
    (["not", "a", "mapping"], "expected a mapping"),
])
def test_bad_config_is_one_config_error_line(data, fragment):
    with pytest.raises(ConfigError) as exc:
        T.parse_triggers(data)
    msg = str(exc.value)
    assert fragment in msg and "\n" not in msg


def test_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        T.load_triggers(tmp_path / "nope.yaml")
    (tmp_path / "t.yaml").write_text("retraining_triggers: [\n  {name: x")
    with pytest.raises(ConfigError, match="not valid YAML"):
        T.load_triggers(tmp_path / "t.yaml")


def test_durations():
    assert T.parse_duration("90m") == timedelta(minutes=90)
    assert T.parse_duration("7d") == timedelta(days=7)
    assert T.parse_duration(6) == timedelta(hours=6)
    assert T.format_duration(timedelta(days=14)) == "2w"
    with pytest.raises(ValueError):
        T.parse_duration("0h")


# ---- data drift -------------------------------------------------------------------------------

def report(psis: dict[str, float], n_cur: int = 5000, n_ref: int = 12500, min_window: int = 500,
           score: float | None = None, family_floor: float = 0.0102) -> DriftReport:
    res = [FeatureDrift(feature=f, kind="numeric", role="feature", psi=p, bins=10, n_ref=n_ref, n_cur=n_cur,
                        noise_floor=0.0046, status="drift" if p > 0.2 else "ok", family_floor=family_floor,
                        family=len(psis)) for f, p in psis.items()]
    if score is not None:
        res.append(FeatureDrift("score", "numeric", "score", score, 10, n_ref, n_cur, 0.0046, "ok"))
    return DriftReport(res, threshold=0.2, min_window=min_window)


DRIFT = {"name": "data-drift", "type": "data_drift", "priority": 1, "psi_threshold": 0.20, "min_features": 1,
         "min_window": 500}


def test_drift_fires_just_above_the_threshold_and_not_at_it():
    t = one(DRIFT)
    at = T.evaluate_data_drift(t, report({"age": 0.20, "bmi": 0.05}))
    above = T.evaluate_data_drift(t, report({"age": 0.2001, "bmi": 0.05}, score=0.3))
    assert not at.fired and at.numbers["features_over_threshold"] == 0
    assert above.fired and above.event == "retrainer.drift.detected"
    assert above.payload["max_psi"] == pytest.approx(0.2001) and isinstance(above.payload["max_psi"], float)
    assert above.payload["top_features"] == {"age": 0.2001} and above.payload["score_psi"] == 0.3
    # the evaluation's floor is now the top feature's family-wise floor, the one the rule uses
    assert above.noise_floor == pytest.approx(0.0102) and "\n" not in above.reason
    assert "rule" in above.numbers and above.numbers["n_window"] == 5000
    row = above.numbers["top_features"][0]
    assert row["feature"] == "age" and row["drifts"] and {"p_value", "family_floor", "above_family_floor"} <= set(row)


def test_drift_needs_psi_above_the_family_wise_floor_too():
    """On a small window the family-wise floor can exceed psi_threshold: then PSI must beat the floor."""
    t = one(DRIFT)
    below = T.evaluate_data_drift(t, report({"age": 0.30}, family_floor=0.3001))
    above = T.evaluate_data_drift(t, report({"age": 0.30}, family_floor=0.2999))
    assert not below.fired and below.numbers["features_over_threshold"] == 1 and below.numbers["features_drifted"] == 0
    assert above.fired and above.numbers["features_drifted"] == 1


def test_drift_min_features_like_protocol_24():
    t = one({k: v for k, v in DRIFT.items() if k != "min_features"})  # the default is Protocol 24's 3
    assert t.min_features == 3
    two = T.evaluate_data_drift(t, report({"charlson_index": 0.29, "n_comorbidities": 0.23, "age": 0.13}))
    three = T.evaluate_data_drift(t, report({"charlson_index": 0.29, "n_comorbidities": 0.23, "age": 0.21}))
    assert not two.fired and "need 3" in two.reason
    assert three.fired


def test_drift_window_below_minimum_never_fires_however_large_the_psi():
    t = one(DRIFT)
    small = T.evaluate_data_drift(t, report({"age": 3.0}, n_cur=499))
    exact = T.evaluate_data_drift(t, report({"age": 3.0}, n_cur=500))
    assert not small.fired and small.too_small and "too small to tell" in small.reason
    assert exact.fired and not exact.too_small


def test_drift_without_a_reference_profile_does_not_fire():
    e = T.evaluate_data_drift(one(DRIFT), None, n_window=5000, production_version="1.0.0")
    assert not e.fired and "no reference profile" in e.reason


def test_disabled_trigger_never_fires():
    e = T.evaluate_data_drift(one({**DRIFT, "enabled": False}), report({"age": 3.0}))
    assert not e.fired and "disabled" in e.reason


# ---- performance ------------------------------------------------------------------------------

PERF = {"name": "perf", "type": "performance_degradation", "priority": 2, "threshold": 0.70,
        "consecutive_windows": 3, "window": "7d", "min_labels": 200}


def w(auc, n=1000, pos=150, se=None):
    return T.WindowAUC("a", "b", n, pos, n - pos, auc, se)


def test_performance_needs_k_consecutive_windows_below_threshold():
    # The rule is now on the one-sided upper bound: with 150 positives (Hanley-McNeil SE ~0.024) the
    # old test's AUCs 0.69/0.68/0.699 are within noise of 0.70 and no longer fire; 0.64-0.65 do.
    t = one(PERF)
    assert not T.evaluate_performance(t, [w(0.69), w(0.68), w(0.699)]).fired
    assert T.evaluate_performance(t, [w(0.65), w(0.64), w(0.65)]).fired
    at = T.evaluate_performance(t, [w(0.64), w(0.70), w(0.64)])
    assert not at.fired and "last 1 of 3" in at.reason
    older = T.evaluate_performance(t, [w(0.60), w(0.75), w(0.65), w(0.64), w(0.63)])  # only the last 3 count
    assert older.fired and older.event == "retrainer.performance.degraded"
    assert older.noise_floor == pytest.approx(T.Z95 * T.auc_standard_error(0.63, 150, 850))


def test_performance_bound_just_below_and_just_above_the_threshold():
    t = one(PERF)
    se = 0.02
    edge = 0.70 - T.Z_ONE_SIDED * se  # upper bound exactly at the threshold
    fired = T.evaluate_performance(t, [w(edge - 1e-4, se=se)] * 3)
    at = T.evaluate_performance(t, [w(edge - 1e-4, se=se), w(edge - 1e-4, se=se), w(edge + 1e-4, se=se)])
    assert fired.fired and all(u < 0.70 for u in fired.numbers["window_upper_bound"])
    assert not at.fired and at.numbers["window_upper_bound"][-1] > 0.70
    # the reason and numbers name n, positives, the estimate, the bound and the rule
    row = fired.numbers["windows"][0]
    assert (row["n"], row["positives"], row["se"]) == (1000, 150, 0.02)
    assert row["upper_bound"] == pytest.approx(edge - 1e-4 + T.Z_ONE_SIDED * se, abs=1e-4)
    assert "AUC + 1.6449*SE < 0.7" in fired.numbers["rule"] and "pos=150" in fired.reason


def test_performance_too_few_positives_or_negatives_is_too_small():
    t = one(PERF)
    low = [w(0.5, n=1000, pos=49, se=0.01)] + [w(0.5, se=0.01)] * 2
    enough = [w(0.5, n=1000, pos=50, se=0.01)] * 3
    few_neg = [w(0.5, n=260, pos=211, se=0.01)] * 3  # 49 negatives
    assert T.evaluate_performance(t, low).too_small and not T.evaluate_performance(t, low).fired
    assert T.evaluate_performance(t, enough).fired
    assert T.evaluate_performance(t, few_neg).too_small
    lab = one({**PERF, "min_positives": 10, "min_negatives": 10})  # min_labels still applies
    assert T.evaluate_performance(lab, [w(0.5, n=199, pos=30, se=0.01)] * 3).too_small


def test_performance_too_small_windows_never_fire():
    t = one(PERF)
    e = T.evaluate_performance(t, [w(0.5), w(0.5, n=199, pos=30), w(0.5)])
    assert not e.fired and e.too_small
    assert not T.evaluate_performance(t, [w(0.5), w(None), w(0.5)]).fired  # one class: AUC undefined
    assert not T.evaluate_performance(t, [w(0.5), w(0.5)]).fired  # fewer windows than k


def test_window_auc_and_bounds():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    frame = pd.DataFrame({"score": np.where(y == 1, 0.9, 0.1), "readmitted_30d": y})
    frame.loc[0, "score"] = np.nan
    res = T.window_auc(frame, NOW - timedelta(days=1), NOW)
    assert res.auc == 1.0 and res.n == 399 and res.se == 0.0
    s = rng.normal(size=400) + y
    d = T.auc_window(y, s, NOW - timedelta(days=1), NOW)
    auc, var = delong_auc_variance(y, s)
    assert (d.auc, d.se) == (pytest.approx(auc), pytest.approx(var ** 0.5)) and d.se > 0
    assert d.upper_bound == pytest.approx(auc + T.Z_ONE_SIDED * var ** 0.5)
    b = T.window_bounds(NOW, timedelta(days=7), 3)
    assert b[0][0] == NOW - timedelta(days=21) and b[-1][1] == NOW and b[1][0] == b[0][1]


# ---- concept drift ------------------------------------------------------------------------------

CONCEPT = {"name": "concept", "type": "concept_drift", "priority": 3, "min_drop": 0.05, "min_labels": 200}


def test_concept_drift_boundary():
    # min_drop boundary with precise AUCs (SEs 0.005): the noise bound (~0.012) does not decide here
    t = one(CONCEPT)
    fired = T.evaluate_concept_drift(t, w(0.70, se=0.005), 0.75, "1.0.0", reference_se=0.005)
    below = T.evaluate_concept_drift(t, w(0.7001, se=0.005), 0.75, "1.0.0", reference_se=0.005)
    assert fired.fired and fired.event == "retrainer.concept.drift" and fired.payload["drop"] == pytest.approx(0.05)
    assert not below.fired and fired.noise_floor > 0 and "min drop" in below.reason


def test_concept_z_is_bonferroni_over_the_looks():
    base = dict(name="c", type="concept_drift", priority=1)
    from retrainer.triggers.config import ConceptDriftTrigger

    assert T.concept_z(ConceptDriftTrigger(**base)) == pytest.approx(2.935199, abs=1e-5)
    assert T.concept_z(ConceptDriftTrigger(**base, looks=1)) == pytest.approx(T.Z_ONE_SIDED, abs=1e-5)


def test_concept_drift_inside_and_outside_the_noise_bound():
    t = one(CONCEPT)
    se_ref, se_cur = 0.02, 0.04
    bound = T.concept_z(t) * (se_ref ** 2 + se_cur ** 2) ** 0.5  # z at 0.05 over 30 looks: 0.1313
    inside = T.evaluate_concept_drift(t, w(0.75 - bound + 1e-4, se=se_cur), 0.75, "1.0.0", reference_se=se_ref)
    outside = T.evaluate_concept_drift(t, w(0.75 - bound - 1e-4, se=se_cur), 0.75, "1.0.0", reference_se=se_ref)
    assert inside.numbers["drop"] >= 0.05 and not inside.fired and "within the noise bound" in inside.reason
    assert outside.fired and outside.numbers["noise_bound"] == pytest.approx(bound, abs=1e-6)
    for k in ("reference_se", "current_se", "n_labels", "positives", "rule"):
        assert k in outside.numbers
    # without a standard error for the registered AUC it cannot tell
    none = T.evaluate_concept_drift(t, w(0.5, se=se_cur), 0.75, "1.0.0")
    assert not none.fired and "standard error" in none.reason


def test_registered_auc_standard_error_and_fallback():
    registered_auc = T.registered_auc
    m = {"candidate": {"auc": 0.8, "auc_se": 0.012, "n": 5000, "positive_rate": 0.15}}
    assert registered_auc(m) == (0.8, 0.012)
    auc, se = registered_auc({"candidate": {"auc": 0.8, "n": 5000, "positive_rate": 0.15}})
    assert auc == 0.8 and se == pytest.approx(T.auc_standard_error(0.8, 750, 4250))
    assert registered_auc({"candidate": {"auc": 0.8, "n_pos": 700, "n_neg": 4300}})[1] == pytest.approx(
        T.auc_standard_error(0.8, 700, 4300))
    assert registered_auc({"candidate": {"auc": 0.8}}) == (0.8, None)
    assert registered_auc({}) == (None, None)


def test_concept_drift_small_or_missing_reference_never_fires():
    t = one(CONCEPT)
    assert T.evaluate_concept_drift(t, w(0.5, n=199, pos=30), 0.75).too_small
    assert not T.evaluate_concept_drift(t, w(0.5, n=199, pos=30), 0.75).fired
    assert not T.evaluate_concept_drift(t, None, 0.75).fired
    assert not T.evaluate_concept_drift(t, w(0.5), None).fired


# ---- volume, scheduled, manual ------------------------------------------------------------------

def test_volume_boundary():
    t = one({"name": "vol", "type": "new_data_volume", "priority": 4, "min_new_labelled_rows": 10000})
    assert T.evaluate_volume(t, 10000, "2025-01-01").fired
    assert not T.evaluate_volume(t, 9999, "2025-01-01").fired
    assert T.evaluate_volume(t, 10000, None).event == "retrainer.volume.reached"


def test_scheduled_reports_ticks_and_never_fires():
    t = one({"name": "monthly", "type": "scheduled", "priority": 5, "cron": "0 2 1 * *", "timezone": "UTC"})
    e = T.evaluate_scheduled(t, NOW, last_retrain=datetime(2025, 2, 15, tzinfo=timezone.utc))
    assert not e.fired and e.event is None
    assert e.numbers["last_tick"] == "2025-03-01T02:00:00+00:00"
    assert e.numbers["next_tick"] == "2025-04-01T02:00:00+00:00"
    assert e.numbers["missed"] is True
    ok = T.evaluate_scheduled(t, NOW, last_retrain=datetime(2025, 3, 1, 2, 5, tzinfo=timezone.utc))
    assert ok.numbers["missed"] is False


def test_manual_approvals():
    approvers = ["ml-lead", "cmo"]
    assert T.approval_decision("ml-lead", True, "ok", approvers).approved
    no = T.approval_decision("ml-lead", False, "not now", approvers)
    assert not no.approved and "rejected by ml-lead: not now" in no.reason
    intruder = T.approval_decision("mallory", True, "", approvers)
    assert not intruder.approved and "not an approver" in intruder.reason
    manual = one({"name": "manual", "type": "manual", "priority": 6, "approvers": ["cmo", "someone-else"]})
    assert T.effective_approvers(approvers, manual) == ["cmo"]  # can only narrow settings.approvers
    assert T.effective_approvers(approvers, None) == approvers


# ---- priorities and emission --------------------------------------------------------------------

def test_priority_decides_the_reported_trigger():
    c = cfg({**PERF, "priority": 2}, {**DRIFT, "priority": 1},
            {"name": "vol", "type": "new_data_volume", "priority": 2, "min_new_labelled_rows": 1})
    perf = T.evaluate_performance(c.get("perf"), [w(0.5)] * 3)
    drift = T.evaluate_data_drift(c.get("data-drift"), report({"age": 0.5}))
    vol = T.evaluate_volume(c.get("vol"), 5, None)
    assert T.choose([perf, drift, vol]).name == "data-drift"
    assert T.choose([vol, perf]).name == "vol"  # a tie goes to the one listed first
    assert T.choose([perf, vol]).name == "perf"
    drift.fired = False
    assert T.choose([drift]) is None


def test_emission_cooldown():
    e = T.evaluate_data_drift(one(DRIFT), report({"age": 0.5}))
    day = timedelta(hours=24)
    assert T.emit_decision(e, None, NOW, day).emit
    assert not T.emit_decision(e, NOW - timedelta(hours=23), NOW, day).emit
    assert T.emit_decision(e, NOW - timedelta(hours=24), NOW, day).emit
    assert not T.emit_decision(None, None, NOW, day).emit


def test_monitor_state_roundtrip(tmp_path):
    state = T.load_state(tmp_path)
    state["last_emitted"]["data-drift"] = NOW.isoformat()
    T.save_state(tmp_path, state)
    assert T.last_emitted(T.load_state(tmp_path), "data-drift") == NOW
    T.state_path(tmp_path).write_text("{broken")
    assert T.load_state(tmp_path)["last_emitted"] == {}


# ---- duplicates ---------------------------------------------------------------------------------

def rec(version, created, data_hash="D", params_hash="P", schema_hash="S"):
    return make_record(version, created_at=created.isoformat(), data_hash=data_hash, params_hash=params_hash,
                       schema_hash=schema_hash)


def dup(records, run_created, trigger="drift", window=timedelta(hours=24), now=NOW):
    return T.duplicate_decision(schema_hash="S", data_hash="D", params_hash="P", records=records,
                                run_created_at=run_created, now=now, window=window, trigger=trigger)


def test_duplicate_when_the_same_data_was_registered_after_the_run_was_created():
    created = NOW - timedelta(minutes=5)
    d = dup([rec("1.1.0", NOW - timedelta(minutes=1))], created, trigger="manual", window=timedelta(0.0001))
    assert d.duplicate and d.version == "1.1.0" and "after this run was created" in d.reason


def test_debounce_window_for_automatic_triggers_only():
    old = [rec("1.1.0", NOW - timedelta(hours=2))]
    created = NOW - timedelta(minutes=1)
    assert dup(old, created).duplicate
    assert not dup(old, created, trigger="manual").duplicate  # asked for explicitly
    assert not dup(old, created, window=timedelta(hours=2)).duplicate  # exactly at the edge: outside
    assert not dup([rec("1.1.0", NOW - timedelta(hours=25))], created).duplicate


def test_different_fingerprint_is_never_a_duplicate():
    created = NOW - timedelta(minutes=5)
    for kw in ({"data_hash": "other"}, {"params_hash": "other"}, {"schema_hash": "other"}):
        assert not dup([rec("1.1.0", NOW, **kw)], created).duplicate
    assert not dup([], created).duplicate
