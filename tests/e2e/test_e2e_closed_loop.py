"""End to end, the closed loop with nobody in it, on the session Prefect server with a real process
worker on its own pool and the deployments (with their automations) from prefect.yaml:

    retrainer.drift.detected (emitted as the monitor does)
      -> retrain-on-drift automation -> retrain run (worker) -> a new version, candidate
      -> retrainer.model.registered -> rollout-on-registered automation -> rollout run (worker)
      -> the emergency plan (a compressed plan file) -> canary deployment run -> promote/rollback

A candidate whose gate asked for a person waits Suspended (no process) on the approval form and
proceeds when an approver answers it. The guardrails deployment rolls a breaching canary back."""
from __future__ import annotations

import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from retrainer.registry import LocalRegistry
from retrainer.rollout.journal import RolloutJournal
from tests.canary_world import KEY, TOKEN, build_models, make_registry
from tests.e2e.test_e2e_canary import _history, _prefect, read_run, wait_state
from tests.e2e.test_e2e_evidence import processes_of, registration_comparison, run_result
from tests.helpers import BIN, REPO, PoolWorker, copy_months, free_port, make_record, wait_for

POOL = "retrainer-e2e-loop"
DEPLOYMENTS = ("retrain-on-drift", "rollout-on-registered", "canary", "canary-tick", "guardrails")
EMERGENCY = {"stages": [{"traffic": 0.5, "duration_s": 8, "check_interval_s": 4}], "resume_grace_s": 300}
ORDINARY = {"stages": [{"traffic": 0.2, "duration_s": 8, "check_interval_s": 4}], "resume_grace_s": 300}


@pytest.fixture(scope="module")
def loop(prefect_server, tmp_path_factory, monthly_data):
    tmp = tmp_path_factory.mktemp("e2e-loop")
    (tmp / "emergency.yaml").write_text(yaml.safe_dump(EMERGENCY))
    (tmp / "ordinary.yaml").write_text(yaml.safe_dump(ORDINARY))
    home = tmp / "home"
    env = {**prefect_server.env, "PYTHONPATH": str(REPO), "PWD": str(REPO),
           "PREFECT_LOCAL_STORAGE_PATH": str(tmp / "results"),
           "PREFECT_WORKER_QUERY_SECONDS": "2", "PREFECT_WORKER_PREFETCH_SECONDS": "1",
           "RETRAINER_HOME": str(home), "RETRAINER_TRAINING_DATA": str(copy_months(monthly_data, tmp / "training")),
           "RETRAINER_MODEL__MAX_ITER": "60",
           "RETRAINER_SERVING__PORT": str(free_port()),         # nothing listens: routing.json is written
           "RETRAINER_SERVING__ADMIN_TOKEN": TOKEN, "RETRAINER_PSEUDONYM_KEY": KEY,
           "RETRAINER_LABEL_DELAY": "1s", "RETRAINER_CANARY__DEFERRED_VERDICT": "false",
           "RETRAINER_CANARY__MAX_DURATION_HOURS": str(30 / 3600),
           "RETRAINER_ROLLOUT__PLAN": str(tmp / "ordinary.yaml"),
           "RETRAINER_ROLLOUT__EMERGENCY_PLAN": str(tmp / "emergency.yaml")}
    env.pop("RETRAINER_CONFIG", None)
    t0 = time.monotonic()
    _prefect(env, "work-pool", "create", POOL, "--type", "process", "--overwrite")
    deploys = [subprocess.Popen([str(BIN / "prefect"), "--no-prompt", "deploy", "--name", name, "--pool", POOL],
                                cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
               for name in DEPLOYMENTS]
    for p in deploys:
        out, _ = p.communicate(timeout=300)
        assert p.returncode == 0, out[-3000:]
    models = build_models(tmp / "models")
    worker = PoolWorker(env, tmp / "worker.log", POOL)
    print(f"\ne2e closed loop setup (pool, {len(DEPLOYMENTS)} deployments, models, worker): "
          f"{time.monotonic() - t0:.1f} s")
    yield {"env": env, "tmp": tmp, "home": home, "models": models, "log": tmp / "worker.log"}
    worker.stop()


def runs_of(deployment: str, since: float) -> list:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    with get_client(sync_client=True) as client:
        dep = client.read_deployment_by_name(deployment)
        runs = client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[dep.id])))
    return sorted([r for r in runs if r.created.timestamp() >= since], key=lambda r: r.created)


def final(run_id: str, timeout: float, log: Path):
    return wait_for(lambda: (fr := read_run(run_id)).state and fr.state.is_final() and fr, timeout,
                    f"run {run_id} to finish", log)


def test_e2e_drift_event_to_a_decision_with_nobody_in_the_loop(prefect_api, loop):
    from prefect.events import emit_event
    from prefect.events.worker import EventsWorker

    home, log = loop["home"], loop["log"]
    make_registry(home, loop["models"]["dirs"], [("1.0.0", "mid")])  # a weak production model
    t0 = time.time() - 1
    started = time.monotonic()
    event = emit_event(event="retrainer.drift.detected",
                       resource={"prefect.resource.id": "retrainer.model.readmission-30d",
                                 "prefect.resource.name": "readmission-30d"},
                       payload={"model_name": "readmission-30d", "max_psi": 0.35, "top_features": {"age": 0.3},
                                "production_version": "1.0.0", "also_fired": []})
    EventsWorker.drain_all()

    # 1. the drift automation's retrain registers a candidate
    [retrain] = wait_for(lambda: runs_of("retrain/retrain-on-drift", t0), 90, "the retrain run", log)
    assert retrain.parameters["trigger"] == "drift" and retrain.parameters["actor"] == "automation"
    assert retrain.parameters["context"]["event_id"] == str(event.id)
    retrain = final(str(retrain.id), 300, log)
    assert retrain.state.name == "Completed", retrain.state.message
    reg = LocalRegistry(home / "registry")
    [version] = [r.version for r in reg.list() if r.version != "1.0.0"]
    record = reg.get(version)
    assert record.trigger == "drift" and record.extra["context"]["event_id"] == str(event.id)
    assert record.gate["eligible"] and not record.gate.get("needs_approval"), record.gate
    t_registered = time.monotonic() - started

    # 2. its retrainer.model.registered event starts rollout-on-registered for that version
    [rollout] = wait_for(lambda: runs_of("rollout-on-registered/rollout-on-registered", t0), 90,
                         "the rollout run", log)
    assert rollout.parameters["version"] == version, rollout.parameters
    assert rollout.parameters["status"] == "candidate" and rollout.parameters["trigger"] == "drift"
    assert rollout.parameters["event_id"]
    rollout = final(str(rollout.id), 180, log)
    assert rollout.state.name == "Completed", rollout.state.message
    out = run_result(rollout, loop["env"])
    assert out["outcome"] == "started" and out["emergency"] is True, out
    assert out["plan"] == EMERGENCY and out["plan_source"].endswith("emergency.yaml")

    # 3. ONE canary deployment run with the emergency plan, started by the automation
    [canary] = runs_of("canary/canary", t0)
    assert str(canary.id) == out["canary_run"]["flow_run_id"]
    assert canary.parameters["candidate"] == version and canary.parameters["plan"] == EMERGENCY
    assert canary.parameters["actor"] == "rollout-on-registered" and "approved_by" not in canary.parameters
    canary = final(str(canary.id), 240, log)
    assert canary.state.name == "Completed", canary.state.message
    decision = run_result(canary, loop["env"])
    took = time.monotonic() - started

    # 4. the decision, in the registry and its audit log, made by the canary's policy
    reg = LocalRegistry(home / "registry")
    assert decision["action"] in ("promote", "rollback"), decision
    steps = [(e["to"], e["actor"]) for e in reg.audit() if e["version"] == version and e.get("kind") != "routing"]
    assert steps[:2] == [("candidate", "automation"), ("canary", "rollout-on-registered")], steps
    if decision["action"] == "promote":
        assert reg.production().version == version and steps[-1] == ("production", "canary-policy")
    else:
        assert reg.get(version).status == "rejected" and reg.production().version == "1.0.0"
    assert "Suspended" in _history(str(canary.id))
    journal = RolloutJournal(home).get(version)
    assert journal is not None and journal.status in ("promoted", "rolled_back"), journal
    stage = journal.plan["stages"][0]  # the canary's own record (its plan's dict form) or ours
    assert (stage["traffic"], stage["duration_s"]) == (0.5, 8), journal.plan
    # nothing else was started: one retrain, one rollout, one canary
    assert len(runs_of("retrain/retrain-on-drift", t0)) == 1
    assert len(runs_of("rollout-on-registered/rollout-on-registered", t0)) == 1
    assert len(runs_of("canary/canary", t0)) == 1
    print(f"closed loop: drift event -> {version} registered {t_registered:.0f} s -> canary "
          f"{decision['action'].upper()} at {took:.0f} s ({decision['reason'][:120]})")


def test_e2e_a_candidate_needing_approval_waits_suspended_on_the_form(prefect_api, loop):
    from prefect.deployments import run_deployment
    from prefect.flow_runs import resume_flow_run

    home, log = loop["tmp"] / "approval" / "home", loop["log"]
    reg = make_registry(home, loop["models"]["dirs"], [("1.0.0", "mid")])
    gate = {"eligible": True, "needs_approval": True, "policy": "task12",
            "reason": "relative AUC improvement 2.1% < 5%: a person decides", "evidence": registration_comparison()}
    reg.register(make_record("1.1.0", "candidate", trigger="scheduled", gate=gate), loop["models"]["dirs"]["good"],
                 actor="test")
    t0 = time.time() - 1
    params = {"version": "1.1.0", "status": "candidate", "trigger": "scheduled", "home": str(home)}

    # someone who is not an approver answers: refused, the version stays a candidate, no canary
    refused = str(run_deployment("rollout-on-registered/rollout-on-registered", timeout=0, parameters=params).id)
    wait_state(refused, {"Suspended"}, 120, log)
    resume_flow_run(refused, run_input={"approver": "intern", "approve": True, "reason": "looks fine"})
    fr = final(refused, 120, log)
    assert fr.state.name == "Completed", fr.state.message
    out = run_result(fr, loop["env"])
    assert out["outcome"] == "not-approved" and "intern is not an approver" in out["reason"], out
    assert LocalRegistry(home / "registry").get("1.1.0").status == "candidate"
    assert RolloutJournal(home).get("1.1.0").status == "rolled_back"

    run = run_deployment("rollout-on-registered/rollout-on-registered", timeout=0, parameters=params)
    run_id = str(run.id)
    wait_state(run_id, {"Suspended"}, 120, log)
    time.sleep(3)
    fr = read_run(run_id)
    assert fr.state.name == "Suspended" and fr.state.state_details.pause_key == "rollout-approval-1-1-0"
    assert not processes_of(run_id)  # suspended: no process, no worker slot
    rec = RolloutJournal(home).get("1.1.0")
    assert rec.status == "waiting-approval" and rec.flow_run_id == run_id and rec.plan == ORDINARY
    assert LocalRegistry(home / "registry").get("1.1.0").status == "candidate"
    assert not [r for r in runs_of("canary/canary", t0) if r.parameters.get("home") == str(home)]

    resume_flow_run(run_id, run_input={"approver": "ml-lead", "approve": True, "reason": "small gain, fine"})
    fr = final(run_id, 120, log)
    assert fr.state.name == "Completed", fr.state.message
    out = run_result(fr, loop["env"])
    assert out["outcome"] == "started" and out["approved_by"] == "ml-lead" and out["emergency"] is False, out
    [canary] = [r for r in runs_of("canary/canary", t0) if r.parameters.get("home") == str(home)]
    assert canary.parameters["approved_by"] == "ml-lead" and canary.parameters["plan"] == ORDINARY
    canary = final(str(canary.id), 240, log)
    assert canary.state.name == "Completed", canary.state.message
    reg = LocalRegistry(home / "registry")
    canary_step = [e for e in reg.audit() if e["version"] == "1.1.0" and e.get("to") == "canary"]
    assert canary_step and "approved by ml-lead" in canary_step[0]["reason"], canary_step
    assert reg.get("1.1.0").status in ("production", "rejected")
    states = _history(run_id)
    assert "Suspended" in states and "Resuming" in states and states[-1] == "Completed", states


def test_e2e_guardrails_deployment_rolls_a_breaching_canary_back(prefect_api, loop):
    """A canary deployment run waits Suspended (its next check an hour away); error rows appear on
    green; one run of the guardrails deployment rolls the candidate back (endpoint first), and
    resumes the suspended canary run, which ends at once with that rollback."""
    from prefect.deployments import run_deployment

    from retrainer.deid import Pseudonymizer
    from retrainer.predstore import PredictionStore
    from retrainer.serving import read_routing, routing_path
    from retrainer.settings import Settings

    home, log = loop["tmp"] / "guardrails" / "home", loop["log"]
    make_registry(home, loop["models"]["dirs"], [("1.0.0", "mid")], [("1.1.0", "good")])
    settings = Settings(home=home, serving={"admin_token": TOKEN, "port": int(loop["env"]["RETRAINER_SERVING__PORT"])})
    long_plan = {"stages": [{"traffic": 0.5, "duration_s": 7200, "check_interval_s": 3600}], "resume_grace_s": 300}
    canary_id = str(run_deployment("canary/canary", timeout=0, parameters={
        "candidate": "1.1.0", "plan": long_plan, "home": str(home), "actor": "e2e"}).id)
    wait_state(canary_id, {"Suspended"}, 120, log)
    journal = RolloutJournal(home)
    if journal.get("1.1.0") is None:  # a canary flow that does not write the journal yet
        journal.start("1.1.0", "1.0.0", "canary", long_plan, read_run(canary_id).start_time, traffic=0.5,
                      flow_run_id=canary_id)
    assert journal.get("1.1.0").status == "running" and journal.get("1.1.0").flow_run_id == canary_id
    rows = loop["models"]["traffic"].iloc[:300]
    PredictionStore(home).append(rows, np.full(len(rows), 0.2), version="1.1.0", variant="green", latency_ms=3.0,
                                 pseudonymizer=Pseudonymizer(KEY.encode()), error=np.ones(len(rows), dtype=bool))
    t0 = time.monotonic()
    for _ in range(3):  # concurrency 1 with CANCEL_NEW: a scheduled look running right now cancels ours
        run = run_deployment("guardrails/guardrails", timeout=0, parameters={"home": str(home)})
        fr = final(str(run.id), 120, log)
        if fr.state.name != "Cancelled":
            break
    assert fr.state.name == "Completed", fr.state.message
    out = run_result(fr, loop["env"])
    assert out["rolled_back"] == ["1.1.0"], out
    res = out["results"][0]
    assert res["reason"].startswith("guardrail: error rate: 300 errors in 300 requests"), res["reason"]
    assert "GUARDRAIL BREACH" in out["notices"][0]["notice"] and out["notices"][0]["resumed_canary"] is True
    reg = LocalRegistry(home / "registry")
    assert reg.get("1.1.0").status == "rejected" and reg.production().version == "1.0.0"
    rejected = [e for e in reg.audit() if e.get("to") == "rejected"]
    assert rejected[0]["actor"] == "guardrails" and rejected[0]["reason"].startswith("guardrail: error rate")
    assert [(s.variant, s.version, s.weight) for s in read_routing(routing_path(settings))][0] == ("blue", "1.0.0", 1.0)

    # the suspended canary was resumed with the rollback and ended now, not an hour later
    canary = final(canary_id, 120, log)
    took = time.monotonic() - t0
    assert canary.state.name == "Completed", canary.state.message
    decision = run_result(canary, loop["env"])
    assert decision["action"] == "rollback" and decision["actor"] == "guardrails", decision
    assert "by guardrails: guardrail: error rate" in decision["reason"], decision["reason"]
    assert journal.get("1.1.0").status == "rolled_back"
    assert took < 600  # far less than the canary's next check (3,600 s away)
    print(f"guardrails deployment run: created -> started {(fr.start_time - fr.created).total_seconds():.1f} s, "
          f"ran {(fr.end_time - fr.start_time).total_seconds():.1f} s; look {res['check_ms']:.0f} ms, "
          f"switch {res['switch_ms']:.0f} ms; suspended canary ended {took:.1f} s after the guardrails run was created")
