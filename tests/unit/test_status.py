"""`retrainer status` and the endpoint's read-only `GET /status` (retrainer/status.py): production,
candidates, the running rollout's stage/traffic/strategy/next check and the pending deferred
verdict from the journal, the last monitor result; no token needed, and nothing secret, no
identifier, pseudonym or path in the answer. Real server, registry, journal and store."""
from __future__ import annotations

import json
from datetime import timedelta

import httpx
import pandas as pd
import pytest

from retrainer import datagen, training
from retrainer import schema as S
from retrainer.clock import utcnow
from retrainer.rollout.journal import RolloutJournal
from retrainer.settings import ModelSettings
from retrainer.status import last_monitor, save_monitor_summary
from retrainer.triggers.evaluate import TriggerEvaluation
from tests.canary_world import KEY, TOKEN, LiveServer, make_registry, records, set_env
from tests.helpers import free_port, run_cli, snapshot


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("status")
    paths = datagen.generate(tmp / "data", datagen.GenerationSpec(months=2, rows_per_month=800, seed=6))
    df = pd.concat([pd.read_parquet(p) for p in paths], ignore_index=True)
    training.train(df.iloc[:1000], df.iloc[1000:1300], tmp / "model", ModelSettings(max_iter=10).model_dump())
    return {"dirs": {"m": tmp / "model"}, "traffic": df.iloc[1300:].reset_index(drop=True)}


@pytest.fixture
def world(models, tmp_path, monkeypatch):
    home = tmp_path / "home"
    port = free_port()
    set_env(monkeypatch, home, port)
    # 1.1.0 production (promoted over 1.0.0, its deferred verdict pending), 1.2.0 candidate rolling out
    make_registry(home, models["dirs"], chain=[("1.0.0", "m"), ("1.1.0", "m")], candidates=[("1.2.0", "m")])
    journal = RolloutJournal(home)
    now = utcnow()
    journal.start("1.1.0", "1.0.0", "canary", {"stages": [{"traffic": 0.1}]}, now - timedelta(days=4), traffic=0.1,
                  flow_run_id="0b9e8a7c-flow-run-id")
    journal.update("1.1.0", "promoted", status="promoted", decision="promote", reason="approved by Dr Alice Example",
                   verdict_due_at=(now + timedelta(days=27)).isoformat())
    two_stages = {"stages": [{"traffic": 0.1}, {"traffic": 0.5}]}
    journal.start("1.2.0", "1.1.0", "linear", two_stages, now - timedelta(hours=3), traffic=0.1,
                  flow_run_id="1c2d3e4f-flow-run-id")
    journal.update("1.2.0", "check", next_check_at=(now + timedelta(hours=3)).isoformat())
    drift = TriggerEvaluation(name="data_drift", type="data_drift", priority=1, fired=True,
                              reason="PSI above 0.20 on 3 features (age, los_days, n_prior_admissions)",
                              numbers={"n_window": 1200, "max_psi": 0.41, "top": ["age"]},
                              event="retrainer.drift.detected")
    save_monitor_summary(home, {"now": now.isoformat(), "production_version": "1.1.0", "fired": ["data_drift"],
                                "reported": "data_drift", "emitted": True, "event": "retrainer.drift.detected",
                                "evaluations": [drift.to_dict()]})
    return {"home": home, "port": port, "traffic": models["traffic"], "tmp": tmp_path}


def test_get_status_needs_no_token_and_leaks_nothing(world):
    home, traffic = world["home"], world["traffic"]
    with LiveServer(home, port=world["port"]) as server:
        sent = records(traffic.iloc[:40])
        assert httpx.post(f"{server.url}/invocations", json={"instances": sent}, timeout=30).status_code == 200
        server.flush()
        before = {d: snapshot(home / d) for d in ("registry", "rollouts", "monitor", "serving")}
        resp = httpx.get(f"{server.url}/status", timeout=10)  # no Authorization header
        assert resp.status_code == 200 and resp.headers["content-type"] == "application/json"
        assert httpx.post(f"{server.url}/status", timeout=10).status_code == 405
        assert {d: snapshot(home / d) for d in before} == before  # read-only
        pseudonyms = set(server.store.read()["admission_pseudonym"].dropna()) | set(
            server.store.read()["patient_pseudonym"].dropna())
    body = resp.text
    st = json.loads(body)
    assert st["production"]["version"] == "1.1.0" and st["previous"] == ["1.0.0"]
    assert [(c["version"], c["status"]) for c in st["candidates"]] == [("1.2.0", "candidate")]
    [ro] = st["rollouts"]
    assert (ro["version"], ro["production"], ro["strategy"], ro["stage"], ro["stages"], ro["traffic"]) == \
        ("1.2.0", "1.1.0", "linear", 0, 2, 0.1)
    assert ro["next_check_at"] and 0 < ro["next_check_in_s"] <= 3 * 3600
    [pv] = st["pending_verdicts"]
    assert (pv["version"], pv["previous"]) == ("1.1.0", "1.0.0") and pv["verdict_due_at"]
    assert st["endpoint"]["running"] is True and st["endpoint"]["variants"][0] == \
        {"variant": "blue", "version": "1.1.0", "weight": 1.0}
    mon = st["monitor"]
    assert mon["fired"] == ["data_drift"] and mon["emitted"] == "retrainer.drift.detected"
    assert mon["triggers"][0]["numbers"] == {"n_window": 1200, "max_psi": 0.41}  # numbers only
    # nothing secret, identifying or local in it
    assert TOKEN not in body and KEY not in body
    for rec in sent:
        assert f'"{rec["patient_id"]}"' not in body and str(rec[S.ADMISSION_ID]) not in body
    assert pseudonyms and not any(p in body for p in pseudonyms)
    assert str(world["tmp"]) not in body and "routing.json" not in body
    assert "flow-run-id" not in body and "Alice" not in body  # no run ids, no free text written by a person


def test_cli_status_with_and_without_a_running_endpoint(world):
    code, out = run_cli("status", "--json")  # no server: the routing from the files
    assert code == 0, out
    st = json.loads(out)
    assert st["endpoint"]["running"] is False and st["endpoint"]["source"].startswith("default routing")
    assert st["rollouts"][0]["version"] == "1.2.0" and st["pending_verdicts"][0]["version"] == "1.1.0"
    with LiveServer(world["home"], port=world["port"]):
        code, out = run_cli("status")
    assert code == 0, out
    assert "production: 1.1.0 since" in out and "candidates: 1.2.0 (candidate)" in out
    assert "endpoint (running; endpoint): blue=1.1.0:1 previous-1=1.0.0:0" in out
    assert "rollout 1.2.0 vs 1.1.0: running, linear, stage 1/2, 10% traffic, next check 20" in out
    assert "deferred verdict on 1.1.0 (over 1.0.0): due 20" in out
    assert "data_drift               FIRED  PSI above 0.20" in out


def test_last_monitor_falls_back_to_the_state_file(tmp_path):
    from retrainer.triggers.state import save_state

    assert last_monitor(tmp_path) is None
    save_state(tmp_path, {"last_emitted": {}, "runs": [{"at": "2026-01-01T00:00:00+00:00", "fired": ["concept_drift"],
                                                         "reported": "concept_drift", "emitted": None}]})
    assert last_monitor(tmp_path) == {"at": "2026-01-01T00:00:00+00:00", "fired": ["concept_drift"],
                                      "reported": "concept_drift", "emitted": None, "triggers": None}
