"""Two models in one project, on a real server and worker: `prefect deploy --all` creates both
models' deployment sets from prefect.yaml; both monitors run; lead-scoring's predictions drift,
readmission's do not. The drift event on retrainer.model.lead-scoring starts lead-scoring's
retrain-on-drift deployment, which registers a new lead-scoring version, and never starts
readmission's."""
from __future__ import annotations

import shutil
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.helpers import BIN, REPO, PoolWorker, copy_months, wait_for

KEY = "e2e-two-models-pseudonym-key-0123456789"
FINAL = {"COMPLETED", "FAILED", "CANCELLED", "CRASHED"}
LEAD = "lead-scoring"


def run(cmd, env, timeout=240) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{cmd}: {proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def drift_deployment(model: str) -> str:
    """'<flow>/<deployment>' of the retrain deployment a drift event of `model` starts (read from
    prefect.yaml: the event trigger on retrainer.drift.detected for that model's resource)."""
    for d in yaml.safe_load((REPO / "prefect.yaml").read_text())["deployments"]:
        for t in d.get("triggers") or []:
            if (t.get("match") or {}).get("prefect.resource.id") == f"retrainer.model.{model}" and \
                    "retrainer.drift.detected" in (t.get("expect") or []):
                assert d["entrypoint"] == "flows/retrain.py:retrain"
                return f"retrain/{d['name']}"
    raise AssertionError(f"prefect.yaml has no drift-triggered retrain deployment for {model}")


def deployment_runs(name: str, since: float) -> list:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    with get_client(sync_client=True) as client:
        dep = client.read_deployment_by_name(name)
        runs = client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[dep.id])))
    return [r for r in runs if r.created.timestamp() >= since]


@pytest.fixture
def project(prefect_api, tmp_path, monthly_data, monkeypatch):
    from examples.lead_scoring.datagen import generate

    home = tmp_path / "home"
    data = tmp_path / "data"
    copy_months(monthly_data, data / "readmission-30d" / "training")
    days = generate(tmp_path / "days", periods=24, rows_per_period=1500, seed=21, drift_from=22)
    (data / LEAD / "training").mkdir(parents=True)
    for f in days[:14]:
        shutil.copy(f, data / LEAD / "training" / f.name)
    env = {**prefect_api.env, "RETRAINER_HOME": str(home), "RETRAINER_PSEUDONYM_KEY": KEY,
           "RETRAINER_TRAINING_DATA": str(data / "{model}" / "training"), "PWD": str(REPO),
           "PREFECT_WORKER_QUERY_SECONDS": "2", "PREFECT_LOGGING_LEVEL": "INFO"}
    env.pop("RETRAINER_CONFIG", None)
    env.pop("RETRAINER_MODEL_NAME", None)
    for k in ("RETRAINER_HOME", "RETRAINER_PSEUDONYM_KEY", "RETRAINER_TRAINING_DATA"):
        monkeypatch.setenv(k, env[k])
    monkeypatch.delenv("RETRAINER_CONFIG", raising=False)
    monkeypatch.delenv("RETRAINER_MODEL_NAME", raising=False)

    run([str(BIN / "python"), "deployments/setup_local.py"], env)
    run([str(BIN / "prefect"), "--no-prompt", "deploy", "--all"], env, timeout=300)
    worker = PoolWorker(env, tmp_path / "worker.log", "retrainer-local")
    try:
        yield {"home": home, "days": days, "worker_log": tmp_path / "worker.log"}
    finally:
        worker.stop(signal.SIGTERM)


def test_a_drift_event_of_one_model_starts_that_models_retrain_only(project, monthly_data, tmp_path):
    from flows.monitor import monitor
    from flows.retrain import retrain
    from retrainer import deid, spec
    from retrainer.backends import get_backend
    from retrainer.registry import LocalRegistry
    from retrainer.settings import load_settings
    from retrainer.training import load_model

    home = project["home"]
    first_days = copy_months(project["days"][0].parent, tmp_path / "lead-first", [f.name for f in project["days"][:7]])
    assert retrain(data=str(monthly_data), trigger="scheduled")["version"] == "1.0.0"
    assert retrain(data=str(first_days), trigger="scheduled", model=LEAD)["version"] == "1.0.0"
    ra_reg, lead_reg = LocalRegistry(home / "registry"), LocalRegistry(home / "models" / LEAD / "registry", LEAD)
    pseudonymizer = deid.pseudonymizer_from_env("RETRAINER_PSEUDONYM_KEY")

    # readmission's production scores a month like its training data; lead scoring scores drifted days
    ra_model = load_model(ra_reg.verify("1.0.0"))
    month = pd.read_parquet(sorted(Path(monthly_data).glob("*.parquet"))[-1])
    get_backend(load_settings()).predictions.append(
        month, ra_model.predict(month), version="1.0.0", variant="production", latency_ms=3.0,
        pseudonymizer=pseudonymizer)
    lead_model = load_model(lead_reg.verify("1.0.0"))
    drifted = pd.concat([pd.read_parquet(f) for f in project["days"][21:23]], ignore_index=True)
    with spec.using(LEAD):
        get_backend(load_settings(model_name=LEAD)).predictions.append(
            drifted, lead_model.predict(drifted), version="1.0.0", variant="production", latency_ms=3.0,
            pseudonymizer=pseudonymizer)

    t0 = time.time() - 2
    quiet = monitor()
    drift = monitor(model=LEAD)
    assert not (quiet.get("emitted") and quiet.get("event") == "retrainer.drift.detected"), quiet.get("reason")
    assert drift["emitted"] and drift["event"] == "retrainer.drift.detected", drift.get("reason")

    lead_dep, ra_dep = drift_deployment(LEAD), drift_deployment("readmission-30d")
    assert lead_dep != ra_dep
    done = wait_for(lambda: [r for r in deployment_runs(lead_dep, t0) if r.state_type.value in FINAL], 300,
                    "lead-scoring's drift retrain to finish", project["worker_log"])
    assert done[0].state_type.value == "COMPLETED", done[0].state
    assert done[0].parameters.get("model") == LEAD and done[0].parameters["trigger"] == "drift"
    versions = {r.version: r for r in LocalRegistry(home / "models" / LEAD / "registry", LEAD).list()}
    assert sorted(versions) == ["1.0.0", "1.1.0"] and versions["1.1.0"].trigger == "drift"
    assert versions["1.1.0"].extra["context"]["event_id"] == drift["event_id"]
    # readmission: no drift run, no new version
    time.sleep(3)
    assert deployment_runs(ra_dep, t0) == []
    assert [r.version for r in LocalRegistry(home / "registry").list()] == ["1.0.0"]
