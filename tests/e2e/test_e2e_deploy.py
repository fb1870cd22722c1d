"""End to end on a real server and worker: `prefect deploy` from the repo root creates the
deployments and their automations; drifted predictions -> monitor -> retrainer.drift.detected ->
automation -> retrain-on-drift deployment run (in a worker subprocess) -> a new version with
trigger "drift" and the event payload in its lineage. Then five drift events at once give exactly
one new version."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.helpers import BIN, REPO, copy_months, wait_for

KEY = "e2e-pseudonym-key-0123456789abcdef"
RETRAINING = ["retrain-monthly", "retrain-on-drift", "retrain-on-performance", "retrain-on-concept-drift",
              "retrain-on-volume", "retrain-manual", "monitor-hourly"]
FINAL = {"COMPLETED", "FAILED", "CANCELLED", "CRASHED"}


def run(cmd, env, timeout=180) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{cmd}: {proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture
def e2e(prefect_api, tmp_path, monthly_data, monkeypatch):
    home = tmp_path / "home"
    training = copy_months(monthly_data, tmp_path / "training")  # the window deployments retrain on
    env = {**prefect_api.env, "RETRAINER_HOME": str(home), "RETRAINER_PSEUDONYM_KEY": KEY,
           "RETRAINER_TRAINING_DATA": str(training), "PWD": str(REPO), "PREFECT_WORKER_QUERY_SECONDS": "2",
           "PREFECT_LOGGING_LEVEL": "INFO"}
    env.pop("RETRAINER_CONFIG", None)
    for k in ("RETRAINER_HOME", "RETRAINER_PSEUDONYM_KEY", "RETRAINER_TRAINING_DATA"):
        monkeypatch.setenv(k, env[k])
    monkeypatch.delenv("RETRAINER_CONFIG", raising=False)

    run([str(BIN / "python"), "deployments/setup_local.py"], env)
    entries = yaml.safe_load((REPO / "prefect.yaml").read_text())["deployments"]
    if all((REPO / d["entrypoint"].split(":")[0]).is_file() for d in entries):
        deploy = ["--all"]
    else:  # another engineer's flows are not in this checkout yet: deploy ours by name
        deploy = [a for n in RETRAINING for a in ("--name", n)]
    run([str(BIN / "prefect"), "--no-prompt", "deploy", *deploy], env, timeout=240)

    log = open(tmp_path / "worker.log", "w")
    worker = subprocess.Popen([str(BIN / "prefect"), "worker", "start", "--pool", "retrainer-local"],
                              cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield {"home": home, "training": training, "env": env, "worker_log": tmp_path / "worker.log"}
    finally:  # the worker stops before the session server
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGTERM)
            try:
                worker.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(worker.pid, signal.SIGKILL)
                worker.wait(10)
        log.close()


def deployment_runs(name: str, since: float) -> list:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    with get_client(sync_client=True) as client:
        dep = client.read_deployment_by_name(name)
        runs = client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[dep.id])))
    return [r for r in runs if r.created.timestamp() >= since]


def registry():
    from retrainer.registry import LocalRegistry

    return LocalRegistry(Path(os.environ["RETRAINER_HOME"]) / "registry")


def test_drift_event_runs_the_emergency_retrain_deployment_once(e2e, monthly_data, tmp_path):
    from prefect.events import emit_event
    from prefect.events.worker import EventsWorker

    from flows.monitor import monitor
    from flows.retrain import retrain
    from retrainer import deid
    from retrainer.datagen import GenerationSpec, generate
    from retrainer.training import load_model

    started = time.monotonic()
    first = copy_months(monthly_data, tmp_path / "first", [f"admissions_2024_0{m}.parquet" for m in range(1, 6)])
    assert retrain(data=str(first), trigger="scheduled")["version"] == "1.0.0"
    reg = registry()
    model = load_model(reg.verify("1.0.0"))
    drifted = pd.read_parquet(generate(tmp_path / "drift", GenerationSpec(months=8, rows_per_month=2500, seed=5,
                                                                          drift_from=1))[-1])
    from retrainer.backends import get_backend
    from retrainer.settings import load_settings

    get_backend(load_settings()).predictions.append(
        drifted, model.predict(drifted), version="1.0.0", variant="production", latency_ms=3.0,
        pseudonymizer=deid.pseudonymizer_from_env("RETRAINER_PSEUDONYM_KEY"))

    t0 = time.time() - 2
    out = monitor()
    assert out["emitted"] and out["event"] == "retrainer.drift.detected"

    runs = wait_for(lambda: deployment_runs("retrain/retrain-on-drift", t0), 60, "the automation's run",
                    e2e["worker_log"])
    done = wait_for(lambda: [r for r in deployment_runs("retrain/retrain-on-drift", t0)
                             if r.state_type.value in FINAL], 240, "the retrain run to finish", e2e["worker_log"])
    assert done[0].state_type.value == "COMPLETED", done[0].state
    assert done[0].parameters["trigger"] == "drift"
    versions = {r.version: r for r in registry().list()}
    assert sorted(versions) == ["1.0.0", "1.1.0"]
    new = versions["1.1.0"]
    assert new.trigger == "drift"
    ctx = new.extra["context"]
    assert ctx["event"] == "retrainer.drift.detected" and ctx["event_id"] == out["event_id"]
    assert ctx["payload"]["max_psi"] == pytest.approx(out["payload"]["max_psi"])
    assert "charlson_index" in ctx["payload"]["top_features"]
    created_latency = runs[-1].created.timestamp() - pd.Timestamp(ctx["occurred"]).timestamp()
    assert new.data["rows"] == 6 * 2500  # settings.training_data, not a path passed by anyone
    print(f"\nemit -> run created: {created_latency:.1f} s; first phase {time.monotonic() - started:.0f} s")

    # New data arrives (month 7), then five drift events at once: exactly one new version.
    month7 = generate(tmp_path / "m7", GenerationSpec(months=7, rows_per_month=2500, seed=11))[-1]
    shutil.copy(month7, e2e["training"] / month7.name)
    t1 = time.time() - 1
    for i in range(5):
        emit_event(event="retrainer.drift.detected",
                   resource={"prefect.resource.id": "retrainer.model.readmission-30d"},
                   payload={"trigger": "drift", "max_psi": 0.3 + i / 100, "top_features": {"age": 0.3}, "burst": i})
    EventsWorker.drain_all()

    def all_five_final():
        rs = deployment_runs("retrain/retrain-on-drift", t1)
        return rs if len(rs) == 5 and all(r.state_type.value in FINAL for r in rs) else None

    final = wait_for(all_five_final, 300, "five runs to finish", e2e["worker_log"])
    states = sorted(r.state_type.value for r in final)
    versions = [r.version for r in registry().list()]
    assert versions == ["1.0.0", "1.1.0", "1.2.0"], (versions, states)
    assert "FAILED" not in states and "CRASHED" not in states, states
    print(f"burst states: {states}; total {time.monotonic() - started:.0f} s")


def test_manual_retrain_deployment_suspends_until_an_approver_answers_the_form(e2e):
    """A deployment run suspends (no process, no worker slot); an unlisted approver is refused
    cleanly; the listed approver's answer resumes it and a version is registered with both
    names in its lineage."""
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment
    from prefect.flow_runs import resume_flow_run

    def state_of(run_id):
        with get_client(sync_client=True) as client:
            return client.read_flow_run(run_id).state

    def suspended(run_id):
        s = state_of(run_id)
        return s if s.type.value == "PAUSED" else None

    # 1. an approver who is not in settings.approvers: the run completes as rejected, nothing registered
    refused = run_deployment("retrain-manual/retrain-manual", timeout=0,
                             parameters={"requested_by": "data-team", "reason": "new diagnosis coding"})
    wait_for(lambda: suspended(refused.id), 120, "the manual retrain to suspend", e2e["worker_log"])
    resume_flow_run(refused.id, run_input={"approver": "intern", "approve": True, "reason": "looks fine"})
    final = wait_for(lambda: (s := state_of(refused.id)).is_final() and s, 180, "the refused run to end",
                     e2e["worker_log"])
    assert final.is_completed(), final
    assert not registry().list()

    # 2. the listed approver: the resumed run trains and registers
    run = run_deployment("retrain-manual/retrain-manual", timeout=0,
                         parameters={"requested_by": "data-team", "reason": "new diagnosis coding"})
    paused = wait_for(lambda: suspended(run.id), 120, "the manual retrain to suspend", e2e["worker_log"])
    assert paused.name == "Suspended"  # a deployment run suspends: it holds no process
    resume_flow_run(run.id, run_input={"approver": "ml-lead", "approve": True, "reason": "go"})
    final = wait_for(lambda: (s := state_of(run.id)).is_final() and s, 240, "the approved run to end",
                     e2e["worker_log"])
    assert final.is_completed(), final
    [version] = registry().list()
    assert version.trigger == "manual"
    assert version.extra["context"]["requested_by"] == "data-team"
    assert version.extra["context"]["approved_by"] == "ml-lead"
    assert registry().audit()[-1]["actor"] == "ml-lead"
