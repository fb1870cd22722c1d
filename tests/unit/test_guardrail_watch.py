"""retrainer.rollout.guardrail_watch on real parts: real small models in a registry, the real serving
app on uvicorn (loopback), its prediction store and the rollout journal. Invalid requests from the
candidate's patients are captured as error rows of "green": the watch rolls it back at once
(endpoint first); healthy traffic leaves it alone."""
from __future__ import annotations

from datetime import timedelta

import httpx
import pytest

from retrainer import clock, rollout
from retrainer.backends.local import LocalEndpoint
from retrainer.rollout.guardrail_watch import looks, watch
from retrainer.rollout.journal import RolloutJournal
from tests.canary_world import LiveServer, build_models, make_registry, records

PLAN = {"stages": [{"traffic": 0.5, "duration_s": 3600, "check_interval_s": 600}]}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return build_models(tmp_path_factory.mktemp("watch-models"))


@pytest.fixture
def world(tmp_path, models):
    """1.0.0 in production, 1.1.0 on canary at 50% behind a live server, its rollout in the journal."""
    home = tmp_path / "home"
    make_registry(home, models["dirs"], [("1.0.0", "good")], [("1.1.0", "good2")])
    server = LiveServer(home)
    with server:
        journal = RolloutJournal(home)
        journal.start("1.1.0", "1.0.0", "canary", PLAN, clock.utcnow() - timedelta(seconds=1), traffic=0.5)
        endpoint = LocalEndpoint(server.settings)
        rollout.start_canary(server.registry, endpoint, "1.1.0", 0.5, actor="test", reason="test canary")
        server.wait_for_variant("green")
        yield {"server": server, "endpoint": endpoint, "journal": journal, "home": home,
               "traffic": models["traffic"]}


def look(w):
    s = w["server"]
    return watch(s.store, s.registry, w["endpoint"], w["journal"], s.settings, clock.utcnow())


def send_invalid_for_green(w, n_rows: int = 300) -> int:
    """Requests of green's patients with an out-of-range age (422): error rows of green."""
    recs = records(w["traffic"].iloc[:n_rows])
    green = []
    with httpx.Client(base_url=w["server"].url, timeout=30) as client:
        for i in range(0, len(recs), 50):
            preds = client.post("/invocations", json={"instances": recs[i:i + 50]}).json()["predictions"]
            green += [r for r, p in zip(recs[i:i + 50], preds) if p["variant"] == "green"]
        for r in green:
            resp = client.post("/invocations", json={"instances": [{**r, "age": 500}]})
            assert resp.status_code == 422, resp.text
    return len(green)


def test_errors_on_the_candidate_roll_it_back_at_once(world):
    n_green = send_invalid_for_green(world)
    assert n_green > 50
    world["server"].flush()
    [res] = look(world)
    assert res.action == "rolled_back", res
    assert res.reason.startswith("guardrail: error rate: ") and "FIRED" in res.reason, res.reason
    fired = {g["name"] for g in res.guardrails if g["fired"]}
    assert fired == {"error_rate"}, res.guardrails
    assert res.n_requests == 2 * n_green  # the valid and the invalid request of each green patient
    assert res.looks == looks(world["journal"].get("1.1.0"), world["server"].settings) == 1728  # 144 h / 300 s
    assert res.switch_ms is not None and 0 < res.switch_ms <= res.total_ms
    # endpoint: production at 100%, candidate gone; registry: rejected, by the guardrails, with the reason
    assert world["server"].variants() == [("blue", "1.0.0", 1.0)]
    reg = world["server"].registry
    assert reg.get("1.1.0").status == "rejected" and reg.production().version == "1.0.0"
    audit = reg.audit()
    last = [e for e in audit if e.get("kind") != "routing"][-1]
    assert (last["version"], last["to"], last["actor"]) == ("1.1.0", "rejected", "guardrails")
    routing = [i for i, e in enumerate(audit) if e.get("kind") == "routing"]
    assert routing[-1] < audit.index(last)  # the endpoint switched before the registry changed
    rec = world["journal"].get("1.1.0")
    assert rec.status == "rolled_back" and rec.decision == "rollback" and rec.reason == res.reason
    assert rec.history[-1]["event"] == "guardrail-breach"
    # the next look finds nothing running
    assert look(world) == []


def test_healthy_traffic_is_left_alone(world):
    counts = world["server"].send(world["traffic"].iloc[:600])
    world["server"].flush()
    assert counts["green"] > 100
    [res] = look(world)
    assert res.action == "ok" and res.switch_ms is None, res
    assert res.n_requests == counts["green"]
    assert not any(g["fired"] for g in res.guardrails)
    assert {g["name"] for g in res.guardrails} == {"error_rate", "latency_p95", "output"}
    assert world["server"].registry.get("1.1.0").status == "canary"
    assert ("green", "1.1.0", 0.5) in world["server"].variants()
    assert world["journal"].get("1.1.0").status == "running"


def test_rollouts_not_on_traffic_are_skipped(world):
    j, reg = world["journal"], world["server"].registry
    j.start("1.2.0", "1.0.0", "canary", PLAN, clock.utcnow(), traffic=0.0, status="waiting-approval")
    send_invalid_for_green(world, 100)
    world["server"].flush()
    # the registry says 1.1.0 is no longer on canary (someone else decided): nothing is touched
    rollout.reject_canary(reg, world["endpoint"], "1.1.0", actor="human", reason="manual rollback")
    results = {r.version: r for r in look(world)}
    assert results["1.1.0"].action == "skipped" and "rejected in the registry" in results["1.1.0"].reason
    assert results["1.2.0"].action == "skipped" and "waiting-approval" in results["1.2.0"].reason
    assert j.get("1.1.0").status == "running"  # the journal is the rollout flow's to close
    assert [e["actor"] for e in reg.audit() if e.get("kind") != "routing"][-1] == "human"


def test_looks_cover_the_longest_life_of_the_rollout(world):
    s = world["server"].settings
    rec = world["journal"].get("1.1.0")
    assert looks(rec, s) == 144 * 12  # max_duration_hours 144 > the plan's 1 h
    long = rec.__class__(**{**rec.to_dict(), "plan": {"stages": [{"duration_s": 200 * 3600}]}, "history": ()})
    assert looks(long, s) == 200 * 12
    fast = s.model_copy(update={"rollout": s.rollout.model_copy(update={"guardrail_interval_s": 3600.0})})
    assert looks(rec, fast) == 144


def test_a_plan_stage_s_criteria_set_the_limits(world):
    from retrainer.rollout.guardrail_watch import stage_settings

    s = world["server"].settings
    rec = world["journal"].get("1.1.0")
    assert stage_settings(rec, s) is s  # no criteria: the canary's limits
    staged = rec.__class__(**{**rec.to_dict(), "history": (), "stage": 1, "plan": {"stages": [
        {"duration_s": 60, "criteria": {"error_rate": 0.02}},
        {"duration_s": 60, "criteria": {"error_rate": 0.5, "p95_latency_ms": 0.001, "min_requests": 50}}]}})
    c = stage_settings(staged, s).canary
    assert (c.max_error_rate, c.max_p95_latency_ms, c.min_requests) == (0.5, 0.001, 50)
    # a p95 limit of 0.001 ms breaks on any real latency, from the stage's 50 requests on
    world["journal"].update("1.1.0", "stage", stage=1, plan=staged.plan)
    world["server"].send(world["traffic"].iloc[:400])
    world["server"].flush()
    [res] = look(world)
    assert res.action == "rolled_back" and "latency" in res.reason, res.reason
    assert world["server"].registry.get("1.1.0").status == "rejected"
