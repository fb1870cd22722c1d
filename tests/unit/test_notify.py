"""The notice catalogue: every kind renders a subject and a plain-text body carrying its fields;
unknown kinds, missing fields and patient identifiers are refused."""
from __future__ import annotations

import pytest

from retrainer.notify import KINDS, Notice, evidence_line, render, test_fields, trigger_fields
from retrainer.schema import IDENTIFIERS

MODEL = "readmission-30d"

# kind -> (fields, fragments the subject must hold, fragments the body must hold)
CASES = {
    "trigger.fired": (
        {"trigger": "psi-drift", "statistic": "max PSI 0.31", "threshold": "PSI > 0.2", "action": "retrain requested"},
        ["trigger psi-drift FIRED"], ["psi-drift", "max PSI 0.31", "PSI > 0.2", "retrain requested"]),
    "retrain.failed": (
        {"error": "MemoryError: out of memory", "flow_run": "brave-otter", "trigger": "drift"},
        ["retraining FAILED"], ["MemoryError: out of memory", "brave-otter", "drift"]),
    "validation.failed": (
        {"failures": ["age: 12% null (allowed 2%)", "readmitted_30d: rate 0.61 outside [0.05, 0.35]"],
         "data": "data/training", "rows": 1234},
        ["data validation FAILED (2 expectations)"],
        ["  - age: 12% null (allowed 2%)\n", "  - readmitted_30d: rate 0.61 outside [0.05, 0.35]\n",
         "data/training", "1,234"]),
    "model.registered": (
        {"version": "1.3.0", "evidence": "ΔAUC +0.012, 95% CI [-0.003, +0.027]", "trigger": "scheduled",
         "status": "candidate"},
        ["model 1.3.0 REGISTERED"], ["1.3.0", "ΔAUC +0.012, 95% CI [-0.003, +0.027]", "Trigger: scheduled"]),
    "model.rejected": (
        {"version": "1.3.0", "reason": "lower bound of ΔAUC -0.031 below -0.02"},
        ["model 1.3.0 REJECTED"], ["lower bound of ΔAUC -0.031 below -0.02", "production is unchanged"]),
    "rollout.started": (
        {"version": "1.2.0", "production": "1.1.0", "strategy": "canary", "plan": "10% for 72h every 6h",
         "traffic": 0.1},
        ["canary 1.2.0 STARTED"], ["1.2.0", "1.1.0", "canary", "10% for 72h every 6h", "Traffic now: 10%"]),
    "rollout.stage": (
        {"version": "1.2.0", "stage": 2, "traffic": 0.25},
        ["canary 1.2.0 stage 2: 25% traffic"], ["stage 2", "25%"]),
    "guardrail.breach": (
        {"version": "1.2.0", "reason": "error rate above 1%", "measured": {"error_rate": 0.034, "requests": 812}},
        ["canary 1.2.0 GUARDRAIL BREACH"], ["error rate above 1%", "error_rate: 0.034", "requests: 812"]),
    "update.planned": (
        {"version": "1.2.0", "planned_at": "2026-12-07 09:00 UTC", "production": "1.1.0"},
        ["model update PLANNED: 1.2.0 at 2026-12-07 09:00 UTC"], ["1.2.0", "2026-12-07 09:00 UTC", "1.1.0"]),
    "rollout.promoted": (
        {"version": "1.2.0", "reason": "non-inferior", "n": 4210, "positives": 512, "delta": 0.012,
         "interval": (-0.004, 0.028), "level": 0.95},
        ["canary 1.2.0 PROMOTED"],
        ["non-inferior", "n=4,210 (512 positives)", "ΔAUC = +0.0120", "95% interval [-0.0040, +0.0280]"]),
    "rollout.rolled_back": (
        {"version": "1.2.0", "reason": "inferior", "n": 3900, "positives": 480, "delta": -0.041,
         "interval": {"low": -0.06, "high": -0.022, "level": 0.9}, "production": "1.1.0"},
        ["canary 1.2.0 ROLLED BACK"],
        ["inferior", "n=3,900 (480 positives)", "ΔAUC = -0.0410", "90% interval [-0.0600, -0.0220]", "1.1.0"]),
    "verdict": (
        {"version": "1.2.0", "outcome": "rolled_back", "reason": "failed on matured labels", "n": 5000,
         "positives": 600, "delta": -0.03, "interval": (-0.05, -0.01), "level": 0.95},
        ["deferred verdict on 1.2.0: ROLLED BACK"], ["failed on matured labels", "n=5,000 (600 positives)"]),
    "rollout.needs_approval": (
        {"version": "1.2.0", "reason": "inconclusive after 144h", "approvers": ["ml-lead", "cmo"],
         "command": "retrainer canary promote --approver NAME"},
        ["canary 1.2.0 NEEDS APPROVAL"], ["inconclusive after 144h", "ml-lead, cmo", "retrainer canary promote"]),
}


def test_every_kind_has_a_case():
    assert set(CASES) == set(KINDS)


@pytest.mark.parametrize("kind", sorted(CASES))
def test_render_carries_the_fields(kind):
    fields, in_subject, in_body = CASES[kind]
    n = render(kind, model=MODEL, **fields)
    assert isinstance(n, Notice) and n.kind == kind
    assert n.subject.startswith(f"[retrainer] {MODEL}: ")
    assert "\n" not in n.subject
    for frag in in_subject:
        assert frag in n.subject, (frag, n.subject)
    for frag in in_body:
        assert frag in n.body, (frag, n.body)
    assert f"Event: {kind}." in n.body
    assert n.severity in ("info", "warning", "critical")


def test_subject_reads_like_the_example():
    n = render("rollout.rolled_back", model=MODEL, version="1.2.0", reason="r")
    assert n.subject == "[retrainer] readmission-30d: canary 1.2.0 ROLLED BACK"
    assert n.severity == "warning"
    assert "Evidence: no evidence recorded" in n.body


def test_severities():
    assert render("guardrail.breach", **test_fields("guardrail.breach")).severity == "critical"
    assert render("model.registered", **test_fields("model.registered")).severity == "info"
    assert render("verdict", version="1", outcome="confirmed").severity == "info"
    assert render("verdict", version="1", outcome="rolled_back").severity == "warning"


def test_unknown_kind_refused():
    with pytest.raises(ValueError, match="unknown notification kind 'rollout.exploded'"):
        render("rollout.exploded", version="1")


def test_missing_field_refused():
    with pytest.raises(ValueError, match="needs field.*reason"):
        render("model.rejected", version="1.3.0")
    with pytest.raises(ValueError, match="needs field.*version, planned_at"):
        render("update.planned")


@pytest.mark.parametrize("name", ["patient_id", "mrn", "admission_id", "Patient_Name"])
def test_identifier_fields_refused(name):
    assert name.lower() in IDENTIFIERS or name == "admission_id"
    with pytest.raises(ValueError, match="patient"):
        render("retrain.failed", error="x", **{name: "P-0001"})


def test_extra_fields_listed_and_multiline_values_flattened():
    n = render("retrain.failed", model=MODEL, error="line one\nline two", host="worker-3")
    assert "Error: line one line two" in n.body
    assert "Details:\n  host: worker-3" in n.body


def test_test_fields_render_every_kind():
    for kind in KINDS:
        assert render(kind, **test_fields(kind)).subject


def test_evidence_line():
    assert evidence_line() == "no evidence recorded"
    assert evidence_line(n=10, positives=3, negatives=7) == "n=10 (3 positives, 7 negatives)"
    line = evidence_line(delta=0.5, interval={"low": 0.1, "high": 0.9, "level": 0.95})
    assert line == "ΔAUC = +0.5000, 95% interval [+0.1000, +0.9000]"


def test_trigger_fields_read_each_trigger_type():
    drift = trigger_fields("psi", {"max_psi": 0.31, "features_drifted": 2, "n_window": 900, "psi_threshold": 0.2,
                                   "min_features": 1}, "2 features drifted")
    assert drift["trigger"] == "psi" and "max PSI 0.31" in drift["statistic"] and "PSI > 0.2" in drift["threshold"]
    perf = trigger_fields("perf", {"window_auc": [0.61, 0.6], "window_upper_bound": [0.66, 0.65], "threshold": 0.7,
                                   "consecutive_windows": 2}, "below")
    assert "0.66, 0.65" in perf["statistic"] and "< 0.7 in 2 consecutive" in perf["threshold"]
    concept = trigger_fields("concept", {"current_auc": 0.7, "reference_auc": 0.8, "n_labels": 500, "min_drop": 0.05},
                             "dropped")
    assert "AUC 0.7 vs reference 0.8" in concept["statistic"] and "0.05" in concept["threshold"]
    vol = trigger_fields("vol", {"new_labelled_rows": 12000, "min_new_labelled_rows": 10000, "since": "x"}, "enough")
    assert "12,000" in vol["statistic"] and ">= 10,000" in vol["threshold"]
    other = trigger_fields("odd", {}, "some reason")
    assert other["statistic"] == "some reason"
    n = render("trigger.fired", model=MODEL, **drift)
    assert "max PSI 0.31" in n.body and "2 features drifted" in n.body


def test_evidence_dict_of_the_rule_module():
    from retrainer.evidence.rule import Counts, Evidence

    ev = Evidence(source="registration", verdict="promote", reason="ok", tolerance=0.02, level=0.95, delta=0.012,
                  low=-0.004, high=0.028, candidate=Counts(4210, 512))
    n = render("rollout.needs_approval", version="1.2.0", reason="gate asks for a person", evidence=ev.to_dict())
    assert "Evidence: n=4,210 (512 positives, 3,698 negatives), ΔAUC = +0.0120, 95% interval [-0.0040, +0.0280]" \
        in n.body
