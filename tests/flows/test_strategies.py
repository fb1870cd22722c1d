"""Every rollout strategy through the one canary flow, in process against the session Prefect
server, with plan files compressed to seconds and real traffic through the real serving app
(uvicorn, loopback): linear (passing, and failing its second stage's criteria), shadow -> cutover,
ab, immediate (refused without an approver), and a candidate rejected elsewhere mid-rollout."""
from __future__ import annotations

import json
import time

import pytest
import yaml

from retrainer.errors import RolloutError
from retrainer.registry import LocalRegistry
from retrainer.rollout.journal import RolloutJournal
from tests.canary_world import LiveServer, Traffic, build_models, ingest_labels, make_registry, set_env
from tests.flows.test_canary_flow import FlowThread
from tests.unit.test_report import png_size

CHAIN = [("1.0.0", "good2"), ("1.1.0", "shuffled")]  # production 1.1.0 is weak: a good candidate wins
CANDIDATE = ("1.2.0", "good")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return build_models(tmp_path_factory.mktemp("strategy-models"))


def write_plan(tmp_path, text: str) -> str:
    path = tmp_path / "plan.yaml"
    path.write_text(text)
    return str(path)


def run_rollout(monkeypatch, tmp_path, models, plan_text: str, *, wait_for: str = "green", labels=True,
                approved_by=None, **canary_settings):
    """Start the rollout of CANDIDATE by the plan, keep traffic flowing until it ends, ingest the
    traffic's labels; returns (result, variants after, answers per variant, home)."""
    from flows.canary import canary

    home = tmp_path / "home"
    make_registry(home, models["dirs"], CHAIN, [CANDIDATE])
    server = LiveServer(home)
    canary_settings.setdefault("min_positives", 30)
    canary_settings.setdefault("min_negatives", 30)
    set_env(monkeypatch, home, server.port, **canary_settings)
    frame = models["traffic"]
    with server:
        run = FlowThread(canary, candidate=CANDIDATE[0], plan=write_plan(tmp_path, plan_text), actor="test-suite",
                         home=str(home), approved_by=approved_by)
        run.start()
        if wait_for == "green":
            server.wait_for_variant("green")
        else:  # "shadow": green loaded at weight 0
            server.wait_for_loaded("green")
        first = server.send(frame)  # every admission once (their labels can then be ingested) ...
        server.flush()
        if labels:
            ingest_labels(home, frame, tmp_path)
        traffic = Traffic(server, frame)  # ... and traffic keeps coming until the rollout ends
        traffic.start()
        try:
            result = run.value(180)
        finally:
            counts = traffic.stop()
        for k, v in first.items():
            counts[k] = counts.get(k, 0) + v
        return result, server.variants(), counts, home


LINEAR = """strategy: linear
check_interval: 2s
criteria: {min_requests: 50, error_rate: 0.5}
stages:
  - {traffic: 0.3, duration: 4s, criteria: {p95_latency_ms: 5000}}
  - {traffic: 1.0, duration: 6s, criteria: {p95_latency_ms: %s}}
"""


def test_linear_passes_both_stages_and_promotes(prefect_api, monkeypatch, tmp_path, models):
    result, variants, counts, home = run_rollout(monkeypatch, tmp_path, models, LINEAR % "5000",
                                                 max_duration_hours=60 / 3600)
    assert result["strategy"] == "linear" and result["action"] == "promote", result["reason"]
    stages = [d["stage"] for d in result["decisions"]]
    assert stages[0] == 0 and stages[-1] == 1, result["decisions"]
    advance = [d for d in result["decisions"] if d["reason"].startswith("stage 1 -> 2: criteria held on")]
    assert advance and advance[0]["traffic"] == 1.0
    assert "non-inferior" in result["reason"] and "stage 2 criteria held on" in result["reason"]
    assert counts.get("green", 0) > 50 and counts.get("blue", 0) > 0
    reg = LocalRegistry(home / "registry")
    assert reg.production().version == "1.2.0"
    assert variants == [("blue", "1.2.0", 1.0), ("previous-1", "1.1.0", 0.0), ("previous-2", "1.0.0", 0.0)]
    rec = RolloutJournal(home).get("1.2.0")
    assert rec.status == "promoted" and rec.strategy == "linear" and rec.decision == "promote"
    assert rec.stage == 1 and rec.plan["stages"][1]["traffic"] == 1.0
    assert [e["event"] for e in rec.history].count("stage") == 1 and rec.history[-1]["event"] == "decision"
    assert result["cutover_ms"] is not None and result["cutover_ms"] > 0
    # the evidence package of this real rollout: every file, every picture a valid 800 x 500 PNG
    pkg = home / "evidence" / "1.2.0"
    assert result["evidence_package"] == str(pkg)
    for name in ("trigger-config.yaml", "rollout-plan.yaml", "model-comparison.md", "deployment-checklist.md",
                 "manifest.json"):
        assert (pkg / name).stat().st_size > 0, name
    for name in ("roc.png", "calibration.png", "psi.png", "canary-metrics.png", "traffic.png"):
        assert png_size(pkg / name) == (800, 500), name
    assert yaml.safe_load((pkg / "rollout-plan.yaml").read_text())["strategy"] == "linear"
    checklist = (pkg / "deployment-checklist.md").read_text()
    assert "promote" in checklist and "stage 2" in checklist.lower()


def test_linear_fails_its_second_stage_criteria_and_rolls_back(prefect_api, monkeypatch, tmp_path, models):
    # Stage 2 demands a p95 under 0.01 ms: every real response is "slow" for it.
    t0 = time.monotonic()
    result, variants, counts, home = run_rollout(monkeypatch, tmp_path, models, LINEAR % "0.01", labels=False,
                                                 max_duration_hours=60 / 3600)
    assert result["action"] == "rollback", result["reason"]
    assert result["reason"].startswith("stage 2 criteria: p95 latency: ") and "> limit 0.01 ms" in result["reason"]
    assert [d["stage"] for d in result["decisions"]][-1] == 1
    assert result["decisions"][-1]["elapsed_s"] < 4 + 6  # at once, before the second stage's end
    assert time.monotonic() - t0 < 120
    reg = LocalRegistry(home / "registry")
    assert reg.get("1.2.0").status == "rejected" and reg.production().version == "1.1.0"
    assert variants[0] == ("blue", "1.1.0", 1.0) and all(v[0] != "green" for v in variants)
    rec = RolloutJournal(home).get("1.2.0")
    assert rec.status == "rolled_back" and rec.reason.startswith("stage 2 criteria")
    crit = result["evidence"]["criteria"]
    fired = [c for c in crit if c["fired"]]
    assert fired and fired[0]["name"] == "latency_p95" and fired[0]["n"] >= 50


SHADOW = """strategy: shadow
shadow:
  duration: 6s
  check_interval: 3s
  criteria: {max_disagreement: 0.9, error_rate: 0.5, min_requests: 50}
cutover: blue-green
"""


def test_shadow_then_blue_green_cutover(prefect_api, monkeypatch, tmp_path, models):
    result, variants, counts, home = run_rollout(monkeypatch, tmp_path, models, SHADOW, wait_for="shadow")
    assert "green" not in counts and counts["blue"] > 100, counts  # the candidate answered nothing in shadow...
    assert result["strategy"] == "shadow" and result["action"] == "promote", result["reason"]
    assert "blue/green cutover to 100%" in result["reason"]
    ev = result["evidence"]["verdict"]
    assert ev["paired"] and ev["n_candidate"] > 100  # ... but was scored in shadow on the requests
    assert result["cutover_ms"] > 0
    assert variants == [("blue", "1.2.0", 1.0), ("previous-1", "1.1.0", 0.0), ("previous-2", "1.0.0", 0.0)]
    rec = RolloutJournal(home).get("1.2.0")
    assert rec.status == "promoted" and rec.history[-1]["details"]["cutover_ms"] == result["cutover_ms"]


AB = """strategy: ab
ab: {split: 0.5, metric: auc, alpha: 0.05, min_duration: 3s, max_duration: 20s, check_interval: 3s,
     min_per_arm: 50, min_positives: 20}
"""


def test_ab_candidate_wins_and_is_promoted(prefect_api, monkeypatch, tmp_path, models):
    result, variants, counts, home = run_rollout(monkeypatch, tmp_path, models, AB)
    assert counts.get("green", 0) > 100 and counts.get("blue", 0) > 100
    assert result["strategy"] == "ab" and result["action"] == "promote", result["reason"]
    assert result["reason"].startswith("A/B winner candidate: ")
    ab = result["evidence"]["ab"]
    assert ab["metric"] == "auc" and ab["winner"] == "candidate" and ab["decided"] and ab["low"] > 0
    assert LocalRegistry(home / "registry").production().version == "1.2.0"
    doc = json.loads((home / "evidence" / "1.2.0" / "ab-test-results.json").read_text())
    assert doc["winner"] == "candidate" and doc["winner_version"] == "1.2.0" and doc["result"]["low"] > 0


def test_immediate_needs_an_approver(prefect_api, monkeypatch, tmp_path, models):
    from flows.canary import canary

    home = tmp_path / "home"
    reg = make_registry(home, models["dirs"], CHAIN, [CANDIDATE])
    server = LiveServer(home)
    set_env(monkeypatch, home, server.port)
    plan = "rollout-plans/immediate.yaml"  # the shipped file, relative to the repository root
    with server:
        before = server.variants()
        with pytest.raises(RolloutError, match="an immediate rollout.* needs a named approver"):
            canary(candidate="1.2.0", plan=plan, home=str(home))
        assert server.variants() == before and reg.get("1.2.0").status == "candidate"
        with pytest.raises(RolloutError, match="somebody is not an approver"):
            canary(candidate="1.2.0", plan=plan, home=str(home), approved_by="somebody")
        assert reg.get("1.2.0").status == "candidate"
        result = canary(candidate="1.2.0", plan=plan, home=str(home), approved_by="ml-lead")
        assert result["action"] == "promote" and result["checks"] == 1 and result["strategy"] == "immediate"
        assert server.variants()[:2] == [("blue", "1.2.0", 1.0), ("previous-1", "1.1.0", 0.0)]
        assert server.send(models["traffic"].iloc[:30]) == {"blue": 30}
    assert reg.production().version == "1.2.0"
    assert RolloutJournal(home).get("1.2.0").status == "promoted"


def test_a_candidate_rejected_elsewhere_ends_the_flow(prefect_api, monkeypatch, tmp_path, models):
    from flows.canary import canary
    from retrainer.backends import get_backend
    from retrainer.rollout import reject_canary
    from retrainer.settings import load_settings

    home = tmp_path / "home"
    make_registry(home, models["dirs"], CHAIN, [CANDIDATE])
    server = LiveServer(home)
    set_env(monkeypatch, home, server.port)
    plan = write_plan(tmp_path, "strategy: canary\nstages: [{traffic: 0.5, duration: 60s, check_interval: 2s}]\n")
    with server:
        run = FlowThread(canary, candidate="1.2.0", plan=plan, home=str(home))
        run.start()
        server.wait_for_variant("green")
        backend = get_backend(load_settings(home=home))  # what the 5-minute guardrails deployment does
        reject_canary(backend.registry, backend.endpoint, "1.2.0", actor="guardrail-watch",
                      reason="guardrail: error rate")
        result = run.value(60)
    assert result["action"] == "rollback"
    assert result["reason"].startswith("already rolled back elsewhere: 1.2.0 was rejected by guardrail-watch")
    reg = LocalRegistry(home / "registry")
    rejected = [e for e in reg.audit() if e.get("to") == "rejected"]
    assert len(rejected) == 1 and rejected[0]["actor"] == "guardrail-watch"  # not rejected a second time
    assert RolloutJournal(home).get("1.2.0").status == "rolled_back"
