"""Monitor and trigger-related flows in process against the session Prefect server: drift emits
the event and one artifact per trigger; manual approval (approve / reject / unlisted approver);
concurrent retrains of the same data give exactly one version."""
from __future__ import annotations

import contextvars
import threading
import time
import uuid

import httpx
import pandas as pd
import pytest

from tests.helpers import copy_months, run_cli, snapshot

KEY = "monitor-test-pseudonym-key-0123456789"


@pytest.fixture
def trained(prefect_api, home, monthly_data, tmp_path, monkeypatch):
    """Production 1.0.0 trained on months 1-5 (with its reference profile)."""
    from flows.retrain import retrain

    monkeypatch.setenv("RETRAINER_PSEUDONYM_KEY", KEY)
    first = copy_months(monthly_data, tmp_path / "first", [f"admissions_2024_0{m}.parquet" for m in range(1, 6)])
    out = retrain(data=str(first), trigger="scheduled")
    assert out["version"] == "1.0.0" and out["status"] == "production"
    return home


def backend():
    from retrainer.backends import get_backend
    from retrainer.settings import load_settings

    return get_backend(load_settings())


def write_predictions(frame: pd.DataFrame) -> str:
    from retrainer import deid
    from retrainer.training import load_model

    b = backend()
    prod = b.registry.production()
    model = load_model(b.registry.verify(prod.version))
    b.predictions.append(frame, model.predict(frame), version=prod.version, variant="production",
                         latency_ms=4.0, pseudonymizer=deid.pseudonymizer_from_env("RETRAINER_PSEUDONYM_KEY"))
    return prod.version


def read_events(url: str, name: str, since: float) -> list[dict]:
    body = {"filter": {"event": {"name": [name]},
                       "occurred": {"since": pd.Timestamp(since, unit="s", tz="UTC").isoformat()}}, "limit": 50}
    return httpx.post(f"{url}/events/filter", json=body, timeout=10).json()["events"]


def test_reference_profile_is_stored_with_the_version_and_covered_by_its_hash(trained):
    from retrainer.drift import ReferenceProfile
    from retrainer.registry import sha256_dir

    reg = backend().registry
    path = reg.verify("1.0.0")
    profile = ReferenceProfile.load(path / "reference_profile.json")
    assert profile["score"].role == "score" and profile["charlson_index"].role == "feature"
    assert profile.n_rows == 3 * 2500 + 2500  # train (3 months) + validation (1 month)
    assert sha256_dir(path) == reg.get("1.0.0").artifact_sha256


def test_monitor_on_drifted_predictions_emits_event_and_artifacts(trained, prefect_api, tmp_path):
    from prefect.client.orchestration import get_client

    from flows.monitor import monitor
    from retrainer.datagen import GenerationSpec, generate

    paths = generate(tmp_path / "drift", GenerationSpec(months=8, rows_per_month=2500, seed=5, drift_from=1))
    version = write_predictions(pd.read_parquet(paths[-1]))
    t0 = time.time() - 5
    out = monitor()
    assert out["reported"] == "data-drift" and out["emitted"] and out["event"] == "retrainer.drift.detected"
    payload = out["payload"]
    assert payload["production_version"] == version and isinstance(payload["max_psi"], float)
    assert payload["max_psi"] > 0.2 and "charlson_index" in payload["top_features"]
    evals = {e["name"]: e for e in out["evaluations"]}
    assert evals["data-drift"]["fired"] and evals["data-drift"]["noise_floor"] > 0
    assert not evals["concept-drift"]["fired"] and evals["concept-drift"]["too_small"]  # no labels yet

    events = []
    for _ in range(40):  # the server persists events asynchronously
        events = read_events(prefect_api.url, "retrainer.drift.detected", t0)
        if events:
            break
        time.sleep(0.5)
    assert len(events) == 1
    ev = events[0]
    assert ev["resource"]["prefect.resource.id"] == "retrainer.model.readmission-30d"
    assert ev["payload"]["max_psi"] == pytest.approx(payload["max_psi"])

    with get_client(sync_client=True) as client:
        keys = {a.key for a in client.read_artifacts()}
    assert {f"trigger-{n}" for n in evals} | {"monitor-summary", "monitor-drift"} <= keys

    again = monitor()  # still drifting: reported, but not emitted again within the cooldown
    assert again["reported"] == "data-drift" and not again["emitted"] and "cooldown" in again["reason"]


def test_monitor_small_window_never_fires(trained, monthly_data):
    from flows.monitor import monitor

    write_predictions(pd.read_parquet(sorted(monthly_data.glob("*.parquet"))[-1]).head(300))
    out = monitor()
    drift = next(e for e in out["evaluations"] if e["name"] == "data-drift")
    assert not drift["fired"] and drift["too_small"] and not out["emitted"]


# ---- manual approval ------------------------------------------------------------------------------

def resume_when_paused(tag: str, run_input: dict, box: dict, timeout: float = 120) -> threading.Thread:
    """Background thread: find the paused manual run by tag, then resume it with the form input."""
    def work():
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.filters import (
            FlowRunFilter,
            FlowRunFilterState,
            FlowRunFilterStateType,
            FlowRunFilterTags,
        )
        from prefect.client.schemas.objects import StateType
        from prefect.flow_runs import resume_flow_run

        deadline = time.monotonic() + timeout
        flt = FlowRunFilter(tags=FlowRunFilterTags(all_=[tag]),
                            state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PAUSED])))
        while time.monotonic() < deadline:
            with get_client(sync_client=True) as client:
                runs = client.read_flow_runs(flow_run_filter=flt)
            if runs:
                try:
                    resume_flow_run(runs[0].id, run_input=run_input)
                    box["resumed"] = runs[0].id
                except Exception as exc:  # reported by the test
                    box["error"] = repr(exc)
                return
            time.sleep(0.5)
        box["error"] = "no paused run found"

    # a copy of this context: the thread must see the test's Prefect settings (PREFECT_API_URL)
    t = threading.Thread(target=contextvars.copy_context().run, args=(work,), daemon=True)
    t.start()
    return t


def answered(run_input: dict, call):
    """Run `call()` (which starts a manual retrain) while a thread answers its form with `run_input`."""
    from prefect import tags

    tag = f"t-{uuid.uuid4().hex[:8]}"
    box: dict = {}
    thread = resume_when_paused(tag, run_input, box)
    with tags(tag):
        out = call()
    thread.join(5)
    assert "error" not in box, box
    return out, box


def run_manual(data, run_input: dict) -> tuple[dict, dict]:
    from flows.retrain import manual_retrain

    return answered(run_input, lambda: manual_retrain(requested_by="dr-who", reason="quarterly review",
                                                      data=str(data), approval_timeout_s=180))


def test_manual_retrain_approved_by_a_listed_approver_registers(trained, monthly_data):
    out, _ = run_manual(monthly_data, {"approver": "ml-lead", "approve": True, "reason": "go"})
    assert out["version"] == "1.1.0" and out["approver"] == "ml-lead"
    assert out["approved"] is True and out["outcome"] == "registered"
    rec = backend().registry.get("1.1.0")
    assert rec.trigger == "manual"
    assert rec.extra["context"] == {"requested_by": "dr-who", "request_reason": "quarterly review",
                                    "approved_by": "ml-lead", "approval_reason": "go"}
    assert backend().registry.audit()[-1]["actor"] == "ml-lead"


@pytest.mark.parametrize("form, gate_min_auc, code, status", [
    ({"approver": "ml-lead", "approve": False, "reason": "not this month"}, None, 5, None),
    # approved, then the gate rejects the model: a registered version, not a refused request
    ({"approver": "ml-lead", "approve": True, "reason": "go"}, "0.999", 0, "rejected"),
])
def test_manual_retrain_cli_exits_5_only_when_the_approver_refuses(trained, monthly_data, monkeypatch,
                                                                   form, gate_min_auc, code, status):
    if gate_min_auc:
        monkeypatch.setenv("RETRAINER_GATE__MIN_AUC", gate_min_auc)
    (got, out), _ = answered(form, lambda: run_cli("retrain", "--manual", "--requested-by", "dr-who",
                                                    "--data", str(monthly_data), "--approval-timeout", "180"))
    assert got == code, out
    versions = {r.version: r.status for r in backend().registry.list()}
    assert versions.get("1.1.0") == status


@pytest.mark.parametrize("form, fragment", [
    ({"approver": "mallory", "approve": True, "reason": "trust me"}, "mallory is not an approver"),
    ({"approver": "ml-lead", "approve": False, "reason": "not this month"}, "rejected by ml-lead: not this month"),
])
def test_manual_retrain_rejected_ends_cleanly_and_changes_nothing(trained, monthly_data, form, fragment):
    from prefect.client.orchestration import get_client

    before = snapshot(trained / "registry")
    out, box = run_manual(monthly_data, form)
    assert out["status"] == "rejected" and fragment in out["reason"] and out["version"] is None
    assert out["outcome"] == "not-approved" and out["approved"] is False
    assert snapshot(trained / "registry") == before
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(box["resumed"])
    assert run.state.is_completed()


# ---- duplicate protection ---------------------------------------------------------------------------

def test_concurrent_retrains_of_the_same_data_give_exactly_one_version(trained, monthly_data):
    from flows.retrain import retrain

    results: list = []
    errors: list = []

    def run():
        try:
            results.append(retrain(data=str(monthly_data), trigger="drift", actor="automation",
                                   context={"test": "concurrent"}))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(repr(exc))

    threads = [threading.Thread(target=contextvars.copy_context().run, args=(run,)) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(600)
    assert not errors, errors
    statuses = sorted(r["status"] for r in results)
    registered = [r for r in results if r["status"] != "skipped"]
    assert len(results) == 3 and len(registered) == 1, statuses
    assert all(r["duplicate_of"] == registered[0]["version"] for r in results if r["status"] == "skipped")
    versions = [r.version for r in backend().registry.list()]
    assert versions == ["1.0.0", registered[0]["version"]]
