"""End to end: the canary and canary-tick deployments from prefect.yaml on the session Prefect
server, a real process worker, a compressed plan. The canary suspends between checks (no process,
no worker slot), the scheduled tick resumes it, and it ends promoted / rolled back. A worker
killed while the canary is suspended loses nothing: a new worker finishes the run."""
from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from retrainer import training
from retrainer.registry import LocalRegistry
from tests.canary_world import KEY, TOKEN, build_models, compressed, ingest_labels, make_registry
from tests.helpers import BIN, REPO, PoolWorker, free_port

POOL = "retrainer-local"
TICK_SECONDS = 5  # the plan's check interval: when the next wake-up (a tick run) falls due
PLAN = dict(compressed(10, 5), resume_grace_s=300)


def _prefect(env, *args, timeout=180) -> str:
    proc = subprocess.run([str(BIN / "prefect"), "--no-prompt", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)
    assert proc.returncode == 0, f"prefect {' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


def Worker(env, log: Path) -> PoolWorker:  # noqa: N802 - the module's worker, on its pool
    return PoolWorker(env, log, POOL)


@pytest.fixture(scope="module")
def e2e(prefect_server, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("e2e-canary")
    env = {**prefect_server.env, "PYTHONPATH": str(REPO),
           "PREFECT_LOCAL_STORAGE_PATH": str(tmp / "results"),   # shared by every worker: resumed runs read it
           "PREFECT_WORKER_QUERY_SECONDS": "2", "PREFECT_WORKER_PREFETCH_SECONDS": "1",
           "RETRAINER_SERVING__PORT": str(free_port()),        # nothing listens: routing.json is written
           "RETRAINER_SERVING__ADMIN_TOKEN": TOKEN, "RETRAINER_PSEUDONYM_KEY": KEY,
           "RETRAINER_LABEL_DELAY": "1s",                     # the traffic's labels mature within a check
           "RETRAINER_CANARY__DEFERRED_VERDICT": "false",     # tests/e2e/test_e2e_evidence.py covers it
           "RETRAINER_CANARY__MAX_DURATION_HOURS": str(20 / 3600)}  # inconclusive: one extension, then rollback
    env.pop("RETRAINER_CONFIG", None)
    t0 = time.monotonic()
    _prefect(env, "work-pool", "create", POOL, "--type", "process", "--overwrite")
    deploys = [subprocess.Popen([str(BIN / "prefect"), "--no-prompt", "deploy", "--name", name, *extra], cwd=REPO,
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
               for name, extra in (("canary", []), ("canary-tick", []))]
    for p in deploys:
        out, _ = p.communicate(timeout=240)
        assert p.returncode == 0, out[-3000:]
    worker = Worker(env, tmp / "worker.log")
    print(f"\ne2e setup (pool, two deployments, worker): {time.monotonic() - t0:.1f} s")
    state = {"env": env, "tmp": tmp, "worker": worker, "models": build_models(tmp / "models")}
    yield state
    state["worker"].kill(signal.SIGTERM)


def launch(prefect_api, home: Path) -> str:
    from prefect.deployments import run_deployment

    fr = run_deployment("canary/canary", parameters={"plan": PLAN, "home": str(home), "actor": "e2e"}, timeout=0)
    return str(fr.id)


def read_run(run_id: str):
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.read_flow_run(run_id)


def wait_state(run_id: str, names: set[str], timeout: float, log: Path | None = None):
    deadline = time.monotonic() + timeout
    while True:
        fr = read_run(run_id)
        if fr.state and fr.state.name in names:
            return fr
        if fr.state and fr.state.is_final():
            raise AssertionError(f"run ended {fr.state.name}: {fr.state.message}")
        if time.monotonic() > deadline:
            tail = log.read_text()[-4000:] if log and log.exists() else ""
            raise AssertionError(f"run still {fr.state.name if fr.state else None} after {timeout} s\n{tail}")
        time.sleep(0.5)


def simulate_traffic(home: Path, models: dict, candidate_model: str, production_model: str, n: int = 2000,
                     labels: bool = True) -> None:
    """Half the patients to each arm (the plan's 50%), real scores of the real models, then labels."""
    from retrainer.deid import Pseudonymizer
    from retrainer.predstore import PredictionStore

    rows = models["traffic"].iloc[:n]
    rng = np.random.default_rng(1)
    to_green = rng.random(len(rows)) < 0.5
    store, pz = PredictionStore(home), Pseudonymizer(KEY.encode())
    reg = LocalRegistry(home / "registry")
    versions = {"green": [r.version for r in reg.list() if r.status == "canary"][0], "blue": reg.production().version}
    for variant, mask, model in (("green", to_green, candidate_model), ("blue", ~to_green, production_model)):
        part = rows[mask]
        scores = training.load_model(models["dirs"][model]).predict(part)
        store.append(part, scores, version=versions[variant], variant=variant, latency_ms=2.0,
                     pseudonymizer=pz, ts=pd.Timestamp.now(tz="UTC"))
    if labels:
        ingest_labels(home, rows, home.parent)


def _history(run_id: str) -> list[str]:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return [s.name for s in client.read_flow_run_states(run_id)]


def run_canary(prefect_api, e2e, name, chain, candidate, cand_model, prod_model):
    home = e2e["tmp"] / name / "home"
    make_registry(home, e2e["models"]["dirs"], chain, [candidate])
    t0 = time.monotonic()
    run_id = launch(prefect_api, home)
    wait_state(run_id, {"Suspended"}, 180, e2e["tmp"] / "worker.log")
    t_suspended = time.monotonic() - t0
    assert LocalRegistry(home / "registry").get(candidate[0]).status == "canary"
    simulate_traffic(home, e2e["models"], cand_model, prod_model)
    return home, run_id, t0, t_suspended


def test_e2e_canary_promotes(prefect_api, e2e):
    home, run_id, t0, t_susp = run_canary(prefect_api, e2e, "promote", [("1.0.0", "good2"), ("1.1.0", "shuffled")],
                                          ("1.2.0", "good"), "good", "shuffled")
    wait_state(run_id, {"Completed"}, 240, e2e["tmp"] / "worker.log")
    took = time.monotonic() - t0
    states = _history(run_id)
    assert states.count("Suspended") >= 1 and "Resuming" in states, states
    reg = LocalRegistry(home / "registry")
    assert reg.production().version == "1.2.0" and reg.get("1.1.0").status == "previous"
    from retrainer.serving import read_routing, routing_path
    from retrainer.settings import Settings

    specs = read_routing(routing_path(Settings(home=home)))
    assert [(s.variant, s.version, s.weight) for s in specs][0] == ("blue", "1.2.0", 1.0)
    # the candidate -> canary step ran once although the flow re-ran from the top on each resume
    assert [e["to"] for e in reg.audit() if e["version"] == "1.2.0"] == ["candidate", "canary", "production"]
    print(f"e2e promote: suspended after {t_susp:.1f} s, completed after {took:.1f} s; states {states}")


def test_e2e_canary_rolls_back(prefect_api, e2e):
    home, run_id, t0, t_susp = run_canary(prefect_api, e2e, "rollback", [("1.0.0", "mid"), ("1.1.0", "good")],
                                          ("1.2.0", "shuffled"), "shuffled", "good")
    wait_state(run_id, {"Completed"}, 240, e2e["tmp"] / "worker.log")
    took = time.monotonic() - t0
    reg = LocalRegistry(home / "registry")
    assert reg.get("1.2.0").status == "rejected" and reg.production().version == "1.1.0"
    assert [e["to"] for e in reg.audit() if e["version"] == "1.2.0"] == ["candidate", "canary", "rejected"]
    assert "inferior: matured routed arms" in reg.audit()[-1]["reason"]
    print(f"e2e rollback: suspended after {t_susp:.1f} s, completed after {took:.1f} s")


# A linear plan whose second stage (100%) allows a p95 of 1 ms: the simulated requests take 2 ms.
LINEAR = {"strategy": "linear", "resume_grace_s": 300, "stages": [
    {"traffic": 0.1, "duration_s": 10, "check_interval_s": TICK_SECONDS,
     "criteria": {"p95_latency_ms": 150, "min_requests": 100}},
    {"traffic": 1.0, "duration_s": 10, "check_interval_s": TICK_SECONDS,
     "criteria": {"p95_latency_ms": 1, "min_requests": 100}}]}


def test_e2e_linear_plan_fails_its_second_stage_and_rolls_back(prefect_api, e2e):
    """A multi-stage rollout as a deployment run on the worker: stage 1 holds and advances (the
    endpoint moves to 100%), stage 2's criteria fail on its own requests, the run rolls back."""
    from prefect.deployments import run_deployment

    from retrainer.rollout.journal import RolloutJournal

    home = e2e["tmp"] / "linear" / "home"
    make_registry(home, e2e["models"]["dirs"], [("1.0.0", "mid"), ("1.1.0", "good")], [("1.2.0", "good2")])
    t0 = time.monotonic()
    run_id = str(run_deployment("canary/canary", parameters={"plan": LINEAR, "home": str(home), "actor": "e2e"},
                                timeout=0).id)
    wait_state(run_id, {"Suspended"}, 180, e2e["tmp"] / "worker.log")
    simulate_traffic(home, e2e["models"], "good2", "good")      # stage 1's requests (2 ms each)
    journal = RolloutJournal(home)
    deadline = time.monotonic() + 120
    while (journal.get("1.2.0") is None or journal.get("1.2.0").stage < 1) and time.monotonic() < deadline:
        assert not read_run(run_id).state.is_final(), read_run(run_id).state.message
        time.sleep(0.5)
    assert journal.get("1.2.0").stage == 1 and journal.get("1.2.0").traffic == 1.0
    simulate_traffic(home, e2e["models"], "good2", "good", labels=False)  # stage 2's requests
    wait_state(run_id, {"Completed"}, 240, e2e["tmp"] / "worker.log")
    reg = LocalRegistry(home / "registry")
    assert reg.get("1.2.0").status == "rejected" and reg.production().version == "1.1.0"
    reason = reg.audit()[-1]["reason"]
    assert "stage 2 criteria: p95 latency" in reason, reason
    rec = journal.get("1.2.0")
    assert rec.status == "rolled_back" and rec.strategy == "linear"
    assert [e["event"] for e in rec.history].count("stage") == 1
    states = _history(run_id)
    assert states.count("Suspended") >= 2, states
    print(f"e2e linear: rolled back at stage 2 after {time.monotonic() - t0:.1f} s; {reason}")


def test_e2e_worker_killed_while_suspended(prefect_api, e2e):
    home, run_id, t0, t_susp = run_canary(prefect_api, e2e, "killed", [("1.0.0", "mid"), ("1.1.0", "good")],
                                          ("1.2.0", "good2"), "good2", "good")
    e2e["worker"].kill()                                  # SIGKILL to the worker's process group
    time.sleep(TICK_SECONDS + 2)                          # the check falls due with no worker at all
    assert read_run(run_id).state.is_paused() or read_run(run_id).state.name in ("Resuming", "Scheduled")
    e2e["worker"] = Worker(e2e["env"], e2e["tmp"] / "worker.log")
    wait_state(run_id, {"Completed"}, 240, e2e["tmp"] / "worker.log")
    took = time.monotonic() - t0
    reg = LocalRegistry(home / "registry")
    assert reg.get("1.2.0").status in ("production", "rejected")
    assert [e["to"] for e in reg.audit() if e["version"] == "1.2.0"][:2] == ["candidate", "canary"]
    assert len([e for e in reg.audit() if e["version"] == "1.2.0"]) == 3   # nothing done twice, nothing lost
    print(f"e2e worker killed: completed after {took:.1f} s ({reg.get('1.2.0').status})")
