"""End to end, decisions on evidence that exists (issue 10): the canary, canary-tick and
deferred-verdict deployments from prefect.yaml on the session Prefect server, a real process worker
whose label delay (30 s) is longer than the plan (10 s, checked every 5 s).

* A canary with no registration comparison cannot decide at the plan's end (no live label can have
  matured): it extends, stays Suspended between checks (no process for the run, no worker slot),
  and decides once the shadow-scored rows' labels have matured.
* A canary whose registration comparison says non-inferior is promoted at the plan's end, before any
  live label matures. The promotion schedules ONE deferred-verdict run at end + label_delay; it sits
  Scheduled (no process) until due, then finds the promoted version much worse on the canary
  period's own matured rows and rolls production back to the previous version."""
from __future__ import annotations

import subprocess
import time
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from retrainer import schema as S
from retrainer import training
from retrainer.evidence import compare_paired
from retrainer.registry import LocalRegistry
from tests.canary_world import KEY, TOKEN, build_models, compressed, ingest_labels, make_registry
from tests.e2e.test_e2e_canary import _history, _prefect, read_run, wait_state
from tests.helpers import BIN, REPO, PoolWorker, free_port, make_record

POOL = "retrainer-e2e-evidence"  # its own pool and worker: the worker's env carries the label delay
LABEL_DELAY_S = 30.0  # longer than the plan (and than a late check): nothing matures before its end
PLAN = dict(compressed(10, 5), resume_grace_s=300)
MAX_DURATION_S = 90  # the plan's end may be extended up to here (10 s at a time): room for a slow machine


def Worker(env, log: Path) -> PoolWorker:  # noqa: N802 - the module's worker, on its pool
    return PoolWorker(env, log, POOL)


@pytest.fixture(scope="module")
def world(prefect_server, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("e2e-evidence")
    env = {**prefect_server.env, "PYTHONPATH": str(REPO),
           "PREFECT_LOCAL_STORAGE_PATH": str(tmp / "results"),
           "PREFECT_WORKER_QUERY_SECONDS": "2", "PREFECT_WORKER_PREFETCH_SECONDS": "1",
           "RETRAINER_SERVING__PORT": str(free_port()),        # nothing listens: routing.json is written
           "RETRAINER_SERVING__ADMIN_TOKEN": TOKEN, "RETRAINER_PSEUDONYM_KEY": KEY,
           "RETRAINER_LABEL_DELAY": f"{LABEL_DELAY_S:g}s",
           "RETRAINER_CANARY__MAX_DURATION_HOURS": str(MAX_DURATION_S / 3600)}
    env.pop("RETRAINER_CONFIG", None)
    t0 = time.monotonic()
    _prefect(env, "work-pool", "create", POOL, "--type", "process", "--overwrite")
    deploys = [subprocess.Popen([str(BIN / "prefect"), "--no-prompt", "deploy", "--name", name, "--pool", POOL],
                                cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
               for name in ("canary", "canary-tick", "deferred-verdict")]
    for p in deploys:
        out, _ = p.communicate(timeout=240)
        assert p.returncode == 0, out[-3000:]
    worker = Worker(env, tmp / "worker.log")
    print(f"\ne2e evidence setup (pool, three deployments, worker): {time.monotonic() - t0:.1f} s")
    state = {"env": env, "tmp": tmp, "worker": worker, "log": tmp / "worker.log",
             "models": build_models(tmp / "models")}
    yield state
    state["worker"].stop()


# ---------------------------------------------------------------------------------------------
# Helpers


def launch(home: Path) -> str:
    from prefect.deployments import run_deployment

    fr = run_deployment("canary/canary", parameters={"plan": PLAN, "home": str(home), "actor": "e2e"}, timeout=0)
    return str(fr.id)


def processes_of(run_id: str) -> list[int]:
    """Pids of the processes executing flow run `run_id` (a process worker starts each one with
    PREFECT__FLOW_RUN_ID in its environment)."""
    needle = f"PREFECT__FLOW_RUN_ID={run_id}".encode()
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if needle in (d / "environ").read_bytes().split(b"\0"):
                    pids.append(int(d.name))
            except OSError:  # gone, or not ours
                pass
    return pids


def watch_until_final(run_id: str, timeout: float, log: Path) -> tuple[object, int, int]:
    """Poll the run until it is final. Returns (flow run, samples taken while it had been Suspended
    for over 2 s, of them the samples where a process still ran it)."""
    deadline = time.monotonic() + timeout
    suspended_samples = held = 0
    while True:
        fr = read_run(run_id)
        st = fr.state
        if st is not None and st.is_final():
            return fr, suspended_samples, held
        if st is not None and st.name == "Suspended":
            age = (datetime.now(st.timestamp.tzinfo) - st.timestamp).total_seconds()
            if age > 2.0 and read_run(run_id).state.name == "Suspended":
                suspended_samples += 1
                held += bool(processes_of(run_id))
        if time.monotonic() > deadline:
            raise AssertionError(f"run still {st.name if st else None} after {timeout} s\n{log.read_text()[-4000:]}")
        time.sleep(0.5)


def run_result(fr, env) -> dict:
    """A finished run's persisted result (the worker's result storage)."""
    from prefect.settings import PREFECT_LOCAL_STORAGE_PATH, temporary_settings

    with temporary_settings(updates={PREFECT_LOCAL_STORAGE_PATH: env["PREFECT_LOCAL_STORAGE_PATH"]}):
        return fr.state.result()


def simulate_shadow_traffic(home: Path, models: dict, candidate_model: str, production_model: str,
                            n: int = 2000) -> pd.Timestamp:
    """Half the requests routed to each arm (the plan's 50%), every row also scored in shadow by
    the other model and keyed by (request_id, row) as the endpoint stores it; then the labels.
    Returns the prediction time."""
    from retrainer.deid import Pseudonymizer
    from retrainer.predstore import PredictionStore

    rows = models["traffic"].iloc[:n].reset_index(drop=True)
    rng = np.random.default_rng(2)
    request_id = np.array([f"req-{i // 20}" for i in range(len(rows))])  # requests of 20 rows
    row = np.arange(len(rows)) % 20
    to_green = np.repeat(rng.random(len(rows) // 20 + 1) < 0.5, 20)[:len(rows)]  # routed per request
    store, pz = PredictionStore(home), Pseudonymizer(KEY.encode())
    reg = LocalRegistry(home / "registry")
    versions = {"green": [r.version for r in reg.list() if r.status == "canary"][0], "blue": reg.production().version}
    ts = pd.Timestamp.now(tz="UTC")
    for variant, routed, model in (("green", to_green, candidate_model), ("blue", ~to_green, production_model)):
        scores = training.load_model(models["dirs"][model]).predict(rows)
        store.append(rows, scores, version=versions[variant], variant=variant, latency_ms=2.0, pseudonymizer=pz,
                     ts=ts, shadow=~routed, request_id=request_id, row=row)
    ingest_labels(home, rows, home.parent)
    return ts


def start(world, name: str, chain, candidate_version: str, candidate_model: str, record_kw=None):
    home = world["tmp"] / name / "home"
    reg = make_registry(home, world["models"]["dirs"], chain)
    reg.register(make_record(candidate_version, "candidate", **(record_kw or {})),
                 world["models"]["dirs"][candidate_model], actor="test")
    run_id = launch(home)
    wait_state(run_id, {"Suspended"}, 180, world["log"])
    assert LocalRegistry(home / "registry").get(candidate_version).status == "canary"
    return home, run_id


def started_at(result: dict) -> pd.Timestamp:
    return pd.Timestamp(result["evidence_window"]["start"])


# ---------------------------------------------------------------------------------------------
# Tests


def test_e2e_canary_waits_for_matured_labels_without_holding_a_worker(prefect_api, world):
    """No registration comparison, labels mature 30 s after the predictions: the plan's end (10 s)
    is inconclusive, the run extends and waits Suspended, and a later check promotes on the matured
    shadow-scored rows (good candidate vs a production model trained on shuffled labels)."""
    t0 = time.monotonic()
    home, run_id = start(world, "waits", [("1.0.0", "mid"), ("1.1.0", "shuffled")], "1.2.0", "good")
    ts = simulate_shadow_traffic(home, world["models"], "good", "shuffled")
    fr, suspended_samples, held = watch_until_final(run_id, 300, world["log"])
    assert fr.state.name == "Completed", fr.state.message
    out = run_result(fr, world["env"])

    # promoted on the matured shadow rows, and only once they could have matured
    assert out["action"] == "promote", out["reason"]
    reg = LocalRegistry(home / "registry")
    assert reg.production().version == "1.2.0" and reg.get("1.1.0").status == "previous"
    decided = started_at(out) + timedelta(seconds=out["decisions"][-1]["elapsed_s"])
    assert decided - ts >= timedelta(seconds=LABEL_DELAY_S), (decided, ts)
    assert out["decisions"][-1]["elapsed_s"] >= LABEL_DELAY_S
    actions = [d["action"] for d in out["decisions"]]
    assert "extend" in actions and out["extensions"] >= 1, actions
    first_end = next(d for d in out["decisions"] if d["action"] == "extend")
    assert "inconclusive" in first_end["reason"] and "0 positives" in first_end["reason"], first_end
    assert first_end["elapsed_s"] >= 10  # at the plan's end, before the traffic's labels matured:
    assert started_at(out) + timedelta(seconds=first_end["elapsed_s"]) < ts + timedelta(seconds=LABEL_DELAY_S)
    assert not any("no live prediction has matured yet" in n for n in out["evidence"]["notes"]), out["evidence"]
    verdict = out["evidence"]["verdict"]
    assert verdict["source"] == "matured shadow rows", verdict
    assert verdict["verdict"] == "promote" and verdict["paired"] is True
    labels = world["models"]["traffic"].iloc[:2000][S.LABEL]
    assert verdict["n_candidate"] == 2000 and verdict["pos_candidate"] == int(labels.sum()), verdict
    assert verdict["low"] > -verdict["tolerance"]
    assert "matured shadow rows" in out["reason"] and "2,000 rows" in out["reason"], out["reason"]
    assert "matured shadow rows" in reg.audit()[-1]["reason"]

    # it waited Suspended, with no process running it, between its checks
    states = _history(run_id)
    # (a wake-up costs a tick run and a new process: on this machine each check is ~10 s late, so
    # the 5 s check falls after the plan's end: one wait before the end, one after the extension)
    assert states.count("Suspended") >= 2 and states.count("Resuming") >= 2, states
    assert states[-1] == "Completed" and "Failed" not in states, states
    assert suspended_samples >= 4 and held == 0, (suspended_samples, held)
    # the promotion's deferred verdict, run by the worker when due, confirms it on the same rows
    dv = out["deferred_verdict"]
    vr = wait_state(dv["flow_run_id"], {"Completed"}, 240, world["log"])
    confirmed = run_result(vr, world["env"])
    assert confirmed["outcome"] == "confirmed", confirmed["reason"]
    assert LocalRegistry(home / "registry").production().version == "1.2.0"
    took = time.monotonic() - t0
    print(f"e2e waits for matured labels: {out['action']} after {out['decisions'][-1]['elapsed_s']:.1f} s "
          f"(traffic at +{(ts - started_at(out)).total_seconds():.1f} s), {len(actions)} checks {actions}, "
          f"{suspended_samples} suspended samples; test took {took:.1f} s")


def registration_comparison(delta: float = 0.0, n: int = 3000, seed: int = 5) -> dict:
    """Both models' scores on a simulated registration month that say non-inferior: the paired
    comparison as it is stored in a version's gate."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.15).astype(int)
    prod = y * 1.2 + rng.normal(size=n)
    cand = prod + delta + rng.normal(scale=0.1, size=n)
    return compare_paired(y, prod, cand, tolerance=0.02, source="registration month").to_dict()


def test_e2e_deferred_verdict_rolls_a_promotion_back(prefect_api, world):
    """The registration month says non-inferior, so the canary promotes at the plan's end before any
    live label matured. Live traffic (shadow-scored, labelled) shows the candidate much worse; the
    deferred verdict, run by the worker when due, rolls production back to the previous version."""
    ev = registration_comparison()
    assert ev["verdict"] == "promote", ev["reason"]
    record = dict(gate={"eligible": True, "reason": "paired gate: non-inferior", "evidence": ev},
                  metrics={"candidate": {"auc": 0.74}, "production": {"auc": 0.74, "version": "1.1.0"}})
    t0 = time.monotonic()
    home, run_id = start(world, "verdict", [("1.0.0", "mid"), ("1.1.0", "good")], "1.2.0", "shuffled", record)
    ts = simulate_shadow_traffic(home, world["models"], "shuffled", "good")
    fr, _, _ = watch_until_final(run_id, 240, world["log"])
    assert fr.state.name == "Completed", fr.state.message
    out = run_result(fr, world["env"])

    # promoted at the plan's end on the registration month alone
    assert out["action"] == "promote", out["reason"]
    assert out["extensions"] == 0
    assert out["evidence"]["verdict"]["source"] == "registration month", out["evidence"]["verdict"]
    end = pd.Timestamp(out["evidence_window"]["end"])
    assert end - ts < timedelta(seconds=LABEL_DELAY_S)  # no live label of the period had matured
    reg = LocalRegistry(home / "registry")
    assert reg.production().version == "1.2.0"

    # ONE deferred verdict, Scheduled at end + label_delay: no process until it is due
    dv = out["deferred_verdict"]
    assert dv and dv["flow_run_id"], dv
    due = pd.Timestamp(dv["due_at"])
    assert due == end + timedelta(seconds=LABEL_DELAY_S)
    verdict_run = read_run(dv["flow_run_id"])
    now = pd.Timestamp.now(tz="UTC")
    assert now < due - timedelta(seconds=3), (now, due)  # leave the worker time to not start it yet
    assert verdict_run.state.name == "Scheduled", verdict_run.state.name
    assert pd.Timestamp(verdict_run.state.state_details.scheduled_time) == due
    assert verdict_run.deployment_id is not None and not processes_of(dv["flow_run_id"])
    time.sleep(1.0)
    assert read_run(dv["flow_run_id"]).state.name == "Scheduled"

    vr = wait_state(dv["flow_run_id"], {"Completed"}, 240, world["log"])
    verdict_out = run_result(vr, world["env"])
    took = time.monotonic() - t0
    assert vr.start_time is not None and pd.Timestamp(vr.start_time) >= due - timedelta(seconds=2), (vr.start_time, due)
    assert verdict_out["outcome"] == "rolled_back", verdict_out["reason"]
    e = verdict_out["evidence"]
    assert e["verdict"] == "rollback" and e["paired"] is True and e["high"] < -e["tolerance"], e
    assert e["n_candidate"] == 2000, e

    reg = LocalRegistry(home / "registry")
    assert reg.production().version == "1.1.0"
    last = reg.audit()[-1]
    assert last["actor"] == "deferred-verdict" and last["version"] == "1.1.0" and last["to"] == "production", last
    assert reg.get("1.2.0").status != "production"
    from retrainer.serving import read_routing, routing_path
    from retrainer.settings import Settings

    specs = read_routing(routing_path(Settings(home=home)))
    assert [(s.variant, s.version, s.weight) for s in specs][0] == ("blue", "1.1.0", 1.0)
    # nothing else was scheduled for this promotion
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(deployment_filter=DeploymentFilter(
            id=DeploymentFilterId(any_=[verdict_run.deployment_id])))
    mine = [r for r in runs if (r.parameters or {}).get("home") == str(home)]
    assert len(mine) == 1, [(r.id, r.state_name) for r in mine]
    print(f"e2e deferred verdict: promoted after {out['decisions'][-1]['elapsed_s']:.1f} s, verdict due "
          f"{(due - end).total_seconds():.0f} s later, {verdict_out['outcome']}; test took {took:.1f} s")
