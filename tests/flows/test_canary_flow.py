"""The canary and rollback flows, in process, against the session Prefect server, with a
compressed plan (seconds) and real traffic through the real serving app (uvicorn, loopback).

In a plain (non-deployment) run the canary waits with `pause_flow_run` and an in-process timer
resumes it at each check; the suspend/tick path is covered by tests/e2e/test_e2e_canary.py."""
from __future__ import annotations

import contextvars
import threading
import time

import pytest

from retrainer.registry import LocalRegistry
from tests.canary_world import LiveServer, build_models, compressed, ingest_labels, make_registry, set_env


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return build_models(tmp_path_factory.mktemp("canary-models"))


class FlowThread(threading.Thread):
    """Run a flow in a thread (with the caller's Prefect settings context)."""

    def __init__(self, fn, **kwargs):
        super().__init__(daemon=True)
        self.ctx = contextvars.copy_context()
        self.fn, self.kwargs = fn, kwargs
        self.result = self.error = None

    def run(self):
        try:
            self.result = self.ctx.run(self.fn, **self.kwargs)
        except BaseException as exc:  # noqa: BLE001 - reported by .value()
            self.error = exc

    def value(self, timeout: float = 120):
        self.join(timeout)
        assert not self.is_alive(), "flow did not finish in time"
        if self.error is not None:
            raise self.error
        return self.result


def canary_run(prefect_api, monkeypatch, tmp_path, models, chain, candidate, plan, traffic_rows=2000,
               labels=True, **canary_settings):
    """Start the canary, send traffic once green is live, ingest the labels, return (result, server)."""
    from flows.canary import canary

    home = tmp_path / "home"
    make_registry(home, models["dirs"], chain, [candidate])
    server = LiveServer(home)
    set_env(monkeypatch, home, server.port, **canary_settings)
    with server:
        run = FlowThread(canary, candidate=candidate[0], plan=plan, actor="test-suite", home=str(home))
        run.start()
        server.wait_for_variant("green")
        counts = server.send(models["traffic"].iloc[:traffic_rows])
        server.flush()
        if labels:
            ingest_labels(home, models["traffic"].iloc[:traffic_rows], tmp_path)
        result = run.value()
        return result, server.variants(), counts, home


def test_promote_path(prefect_api, monkeypatch, tmp_path, models):
    t0 = time.monotonic()
    result, variants, counts, home = canary_run(
        prefect_api, monkeypatch, tmp_path, models, chain=[("1.0.0", "good2"), ("1.1.0", "shuffled")],
        candidate=("1.2.0", "good"), plan=compressed(8, 4))
    assert counts.get("green", 0) > 500 and counts.get("blue", 0) > 500
    assert result["action"] == "promote" and result["actor"] == "canary-policy", result
    assert result["auc_diff"] > 0 and result["ci"]["low"] < result["auc_diff"] < result["ci"]["high"]
    assert result["checks"] >= 2  # at least the first check and the final one
    reg = LocalRegistry(home / "registry")
    assert reg.production().version == "1.2.0"
    assert [r.version for r in reg.previous()] == ["1.1.0", "1.0.0"]
    assert variants == [("blue", "1.2.0", 1.0), ("previous-1", "1.1.0", 0.0), ("previous-2", "1.0.0", 0.0)]
    status_events = [e for e in reg.audit() if e.get("kind") != "routing"]  # the endpoint's changes are audited too
    audit = [(e["version"], e["from"], e["to"], e["actor"]) for e in status_events][-3:]
    assert audit == [("1.2.0", "candidate", "canary", "test-suite"),
                     ("1.1.0", "production", "previous", "canary-policy"),
                     ("1.2.0", "canary", "production", "canary-policy")]
    reason = status_events[-1]["reason"]
    assert "non-inferior: matured shadow rows" in reason and "95% CI" in reason and "lower bound > -0.02" in reason
    ev = result["evidence"]["verdict"]
    assert ev["paired"] and ev["pos_candidate"] >= 100 and ev["neg_candidate"] >= 100
    routing = [e for e in reg.audit() if e.get("kind") == "routing"]
    assert routing and routing[-1]["to"] == "blue=1.2.0:1 previous-1=1.1.0:0 previous-2=1.0.0:0"
    # Each routing change names who made it and why: the canary's start, then its promotion.
    assert any(e["actor"] == "test-suite" and e["reason"].startswith("canary 1.2.0 at 50%: ") for e in routing)
    assert routing[-1]["actor"] == "canary-policy" and routing[-1]["reason"].startswith("promote 1.2.0: ")
    # the rollout journal: started, every check, the decision with the deferred verdict's due time
    from retrainer.rollout.journal import RolloutJournal

    rec = RolloutJournal(home).get("1.2.0")
    assert rec.status == "promoted" and rec.strategy == "canary" and rec.production == "1.1.0"
    assert rec.decision == "promote" and rec.reason == result["reason"] and rec.flow_run_id
    assert rec.verdict_due_at == result["deferred_verdict"]["due_at"] and rec.next_check_at is None
    events = [e["event"] for e in rec.history]
    assert events[0] == "started" and events[-1] == "decision" and events.count("check") == result["checks"]
    print(f"promote path: {time.monotonic() - t0:.1f} s, diff {result['auc_diff']:+.4f} CI "
          f"[{result['ci']['low']:+.4f}, {result['ci']['high']:+.4f}]")

    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        keys = {a.key for a in client.read_artifacts()}
    assert {"canary-1-2-0", "canary-progress-1-2-0", "canary-decision-1-2-0"} <= keys


def test_rollback_path_weak_candidate(prefect_api, monkeypatch, tmp_path, models):
    result, variants, counts, home = canary_run(
        prefect_api, monkeypatch, tmp_path, models, chain=[("1.0.0", "mid"), ("1.1.0", "good")],
        candidate=("1.2.0", "shuffled"), plan=compressed(8, 4))
    assert result["action"] == "rollback" and result["reason"].startswith("inferior: "), result
    assert "upper bound < -0.02" in result["reason"]
    assert result["auc_diff"] < -0.02 and result["ci"]["high"] < 0
    reg = LocalRegistry(home / "registry")
    assert reg.get("1.2.0").status == "rejected" and reg.production().version == "1.1.0"
    assert variants == [("blue", "1.1.0", 1.0), ("previous-1", "1.0.0", 0.0)]
    last = [e for e in reg.audit() if e.get("kind") != "routing"][-1]
    assert (last["version"], last["to"], last["actor"]) == ("1.2.0", "rejected", "canary-policy")


def test_guardrail_breach_rolls_back_at_once(prefect_api, monkeypatch, tmp_path, models):
    # Any real latency breaches a 0.001 ms p95 guardrail: the first check after traffic rolls back,
    # long before the plan's end (60 s).
    t0 = time.monotonic()
    result, variants, counts, home = canary_run(
        prefect_api, monkeypatch, tmp_path, models, chain=[("1.0.0", "good")], candidate=("1.1.0", "good2"),
        plan=compressed(60, 3), traffic_rows=400, labels=False, max_p95_latency_ms=0.001, min_requests=50)
    assert result["action"] == "rollback" and result["reason"].startswith("guardrail: ") and "p95" in result["reason"]
    assert time.monotonic() - t0 < 40
    assert result["decisions"][-1]["elapsed_s"] < 60
    assert LocalRegistry(home / "registry").get("1.1.0").status == "rejected"
    assert variants == [("blue", "1.0.0", 1.0)]
    from retrainer.rollout.journal import RolloutJournal

    rec = RolloutJournal(home).get("1.1.0")
    assert rec.status == "rolled_back" and rec.reason.startswith("guardrail: ") and rec.verdict_due_at is None


def test_without_matured_labels_the_canary_extends_to_its_maximum_then_rolls_back(prefect_api, monkeypatch,
                                                                                    tmp_path, models):
    # No labels ever arrive: the verdict stays inconclusive, the last stage is extended while the
    # end stays within max_duration (8 s: one extension), then the policy rolls back.
    result, variants, counts, home = canary_run(
        prefect_api, monkeypatch, tmp_path, models, chain=[("1.0.0", "good")], candidate=("1.1.0", "good2"),
        plan=compressed(4, 2), traffic_rows=300, labels=False, max_duration_hours=8 / 3600)
    actions = [d["action"] for d in result["decisions"]]
    assert actions.count("extend") == 1 and actions[-1] == "rollback", actions
    assert result["extended"] and "still inconclusive at the maximum duration" in result["reason"]
    assert result["decisions"][-1]["elapsed_s"] >= 8  # plan end 4 s + one extension of 4 s
    assert LocalRegistry(home / "registry").get("1.1.0").status == "rejected"


def test_human_promote_from_cli_function(prefect_api, monkeypatch, tmp_path, models):
    """`retrainer canary promote --reason ...` resumes the waiting run with the decision as input."""
    from cli.rollout import act, status
    from flows.canary import canary

    home = tmp_path / "home"
    make_registry(home, models["dirs"], [("1.0.0", "good")], [("1.1.0", "good2")])
    server = LiveServer(home)
    set_env(monkeypatch, home, server.port)
    with server:
        run = FlowThread(canary, candidate="1.1.0", plan=compressed(600, 300), home=str(home))
        run.start()
        server.wait_for_variant("green")
        deadline = time.monotonic() + 60
        while not status(str(home))["runs"]:
            assert time.monotonic() < deadline, "the canary never waited"
            time.sleep(0.3)
        st = status(str(home))
        assert st["canary"] == "1.1.0" and st["runs"][0]["pause_key"] == "check-0"
        res = act("promote", "looks fine on the dashboards", "ml-lead", home=str(home))
        assert res["applied"] == "flow"
        result = run.value(60)
    assert result["action"] == "promote" and result["manual"] and result["actor"] == "ml-lead"
    reg = LocalRegistry(home / "registry")
    assert reg.production().version == "1.1.0"
    last = [e for e in reg.audit() if e["to"] == "production"][-1]
    assert last["actor"] == "ml-lead" and "looks fine on the dashboards" in last["reason"]


def test_manual_rollback_without_a_waiting_run_is_applied_directly(prefect_api, monkeypatch, tmp_path, models):
    from cli.rollout import act
    from retrainer.serving import routing_path

    home = tmp_path / "home"
    reg = make_registry(home, models["dirs"], [("1.0.0", "good")], [("1.1.0", "good2")])
    reg.set_status("1.1.0", "canary", actor="test", reason="a canary whose run died")
    set_env(monkeypatch, home, 1)  # no server: the endpoint writes routing.json
    res = act("rollback", "run crashed", "oncall", home=str(home), wait_s=0)
    assert res["applied"] == "direct" and reg.get("1.1.0").status == "rejected"
    assert routing_path(reg_settings(home)).is_file()
    from retrainer.errors import RolloutError

    with pytest.raises(RolloutError, match="no canary run is waiting"):
        act("promote", "x", "oncall", home=str(home), wait_s=0)


def reg_settings(home):
    from retrainer.settings import Settings

    return Settings(home=home)


# ------------------------------------------------------------------------------------------------
# Rollback flow

def test_rollback_flow_to_previous_and_previous_2_and_refusals(prefect_api, monkeypatch, tmp_path, models):
    from flows.rollback import rollback
    from retrainer.backends import get_backend
    from retrainer.errors import RolloutError
    from retrainer.rollout import rollback_production
    from retrainer.settings import load_settings

    home = tmp_path / "home"
    reg = make_registry(home, models["dirs"], [("1.0.0", "mid"), ("1.1.0", "good2"), ("1.2.0", "good")])
    server = LiveServer(home)
    set_env(monkeypatch, home, server.port)
    with server:
        assert server.variants() == [("blue", "1.2.0", 1.0), ("previous-1", "1.1.0", 0.0),
                                     ("previous-2", "1.0.0", 0.0)]
        res = rollback(reason="bad scores after deploy", actor="oncall", home=str(home))  # default: previous-1
        assert res["version"] == "1.1.0" and res["replaced"] == "1.2.0"
        assert server.variants() == [("blue", "1.1.0", 1.0), ("previous-1", "1.2.0", 0.0),
                                     ("previous-2", "1.0.0", 0.0)]
        assert server.send(server_rows(models, 40)) == {"blue": 40}
        assert reg.production().version == "1.1.0"
        print(f"rollback flow: command to 100% traffic {res['switch_ms']:.1f} ms")

        res = rollback(to="1.0.0", reason="go further back", actor="oncall", home=str(home))  # previous-2
        assert res["version"] == "1.0.0"
        assert server.variants()[0] == ("blue", "1.0.0", 1.0)
        assert {v[1] for v in server.variants()[1:]} == {"1.1.0", "1.2.0"}
        assert server.send(server_rows(models, 20)) == {"blue": 20}
        assert reg.production().version == "1.0.0"
        events = [e for e in reg.audit() if e["to"] == "production"][-2:]
        assert [(e["version"], e["actor"]) for e in events] == [("1.1.0", "oncall"), ("1.0.0", "oncall")]
        assert "rollback: go further back" in events[-1]["reason"]

        before = server.variants()
        for to, msg in (("1.0.0", "1.0.0 is already production"),
                        ("9.9.9", "9.9.9 is not a kept previous version"),
                        ("nonsense", "is not a kept previous version")):
            with pytest.raises(RolloutError, match=msg):
                backend = get_backend(load_settings(home=home))  # what `retrainer rollback` calls
                rollback_production(backend.registry, backend.endpoint, to, actor="oncall", reason="x")
        assert server.variants() == before  # refusals change nothing


def server_rows(models, n):
    return models["traffic"].iloc[-n:]
