"""`retrainer demo`: the whole lifecycle on generated data, on embedded defaults (local registry,
local endpoint, Prefect's ephemeral API unless PREFECT_API_URL is set).

1. the first model (1.0.0, straight to production);
2. the monthly retrain (1.1.0) and its 72-hour canary on live traffic, scored in shadow by both
   models, with labels arriving 36 simulated hours after the predictions (the compressed
   `label_delay`); a promotion is re-checked by the deferred verdict once its labels matured;
3. drifted months through the endpoint; the monitor finds PSI > 0.20 and emits
   `retrainer.drift.detected` (with deployments, an automation starts the emergency retrain; here
   the demo starts it with the event's payload);
4. the emergency retrain (1.2.0) and its canary;
5. a forced rollback, which leaves production plus two previous versions ready.

`retrainer demo --model lead-scoring` runs the same five steps for the weekly lead-scoring model
(its `Scenario` below): days instead of months, the weekly retrain, the Spearman gate, a shadow
rollout then a blue/green cutover (its spec's rollout plan, compressed), drift, the emergency
retrain, and the rollback.

Time is a `retrainer.clock.ManualClock` that only this script moves: the canary's 72 hours and
the monitor's 24-hour drift window pass when the demo advances the clock, after the traffic and
labels they judge are in. So the outcome does not depend on how fast the machine is. Everything
the demo writes (registry, prediction store, generated data) lives under RETRAINER_HOME, which
the demo owns: it resets one it created and refuses any other.
"""
from __future__ import annotations

import contextvars
import json
import os
import secrets
import shutil
import socket
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable

import yaml

from retrainer import clock
from retrainer import schema as S
from retrainer.errors import ConfigError, RetrainerError
from retrainer.registry import LocalRegistry
from retrainer.registry.model import Status

MARKER = ".retrainer-demo"
DEMO_KEY = "retrainer-demo-pseudonym-key-not-for-production"
DRIFT_WINDOW = "24h"
SIMULATED_SPAN = timedelta(days=14)  # more than the scenario's simulated time


@dataclass(frozen=True)
class Scenario:
    """One model's demo: which generated periods (1-based, inclusive) each step trains on or sends
    through the endpoint, the rollout plan, and the compressed label delay."""
    periods: int
    drift_from: int
    unit: str  # "month", "day": for the printed steps
    first: tuple[int, int]
    regular: tuple[int, int]
    regular_name: str  # "monthly", "weekly"
    regular_traffic: int
    drifted: tuple[int, int]
    emergency: tuple[int, int]
    emergency_traffic: int
    plan: dict[str, Any]
    plan_name: str
    check: timedelta  # the plan's check interval: the clock moves this far at a time
    label_delay: str
    rows: int  # default rows per period
    shadow: bool = False  # the candidate starts at weight 0, scored in shadow


_CHECK_RA = timedelta(hours=24)
# The readmission outcome takes 30 days; the demo compresses that to 36 simulated hours, so labels
# for a canary's traffic arrive half-way through its 72 hours, not at once.
READMISSION = Scenario(
    periods=12, drift_from=9, unit="month", first=(1, 6), regular=(1, 8), regular_name="monthly",
    regular_traffic=8, drifted=(9, 10), emergency=(1, 10), emergency_traffic=11,
    plan={"stages": [{"traffic": 0.10, "duration_s": 72 * 3600, "check_interval_s": int(_CHECK_RA.total_seconds())}]},
    plan_name="a 72-hour canary", check=_CHECK_RA, label_delay="36h", rows=4000)
# Lead scoring: 4 weeks of days, drifting from day 22; reps score a lead within 2 days, compressed
# to 12 simulated hours; the spec's shadow-then-cutover plan with 24 h in shadow, checked every 6 h.
_CHECK_LS = timedelta(hours=6)
LEAD_SCORING = Scenario(
    periods=28, drift_from=22, unit="day", first=(1, 7), regular=(1, 14), regular_name="weekly",
    regular_traffic=15, drifted=(22, 23), emergency=(1, 24), emergency_traffic=25,
    plan={"strategy": "shadow", "description": "24 h in shadow, then blue/green cutover",
          "shadow": {"duration": "24h", "check_interval": "6h",
                     "criteria": {"error_rate": 0.01, "p95_latency_ms": 250, "min_requests": 200}},
          "cutover": "blue-green"},
    plan_name="24 hours in shadow, then a blue/green cutover", check=_CHECK_LS, label_delay="12h", rows=2000,
    shadow=True)
SCENARIOS: dict[str, Scenario] = {"readmission-30d": READMISSION, "lead-scoring": LEAD_SCORING}


class DemoFailed(RetrainerError):
    """A demo step did not end as the scenario expects; the message names the step and why."""
    exit_code = 1


def prepare_home(home: Path) -> None:
    """The demo owns its state directory: it resets one it created before, refuses any other."""
    if home.exists() and any(home.iterdir()) and not (home / MARKER).exists():
        raise ConfigError(f"{home} holds a registry the demo did not create; point RETRAINER_HOME "
                          "at an empty directory to run the demo")
    if home.exists():
        shutil.rmtree(home)
    home.mkdir(parents=True)
    (home / MARKER).write_text("state written by `retrainer demo`; safe to delete\n")


def generate_data(workdir: Path, sc: Scenario, rows: int, model: str) -> dict[str, Any]:
    """The scenario's periods (drifting from `sc.drift_from`) and its three training batches, as
    hard links, from the model's own generator (its spec's `data.generator`)."""
    from retrainer.datagen import generate_for_model  # noqa: PLC0415 - heavy: pandas

    files = generate_for_model(model, workdir / "periods", periods=sc.periods, rows_per_period=rows, seed=7,
                               drift_from=sc.drift_from)
    out: dict[str, Any] = {"periods": [str(m) for m in files]}
    for name, (a, b) in {"first": sc.first, "regular": sc.regular, "emergency": sc.emergency}.items():
        folder = workdir / f"batch-{name}"
        folder.mkdir(parents=True, exist_ok=True)
        for f in files[a - 1:b]:
            os.link(f, folder / f.name)
        out[name] = str(folder)
    return out


def demo_environment(home: Path, sc: Scenario) -> None:
    """Settings for this process only (a user's own values win): a free loopback port, a random
    admin token, the demo's pseudonym key, and the demo's triggers file."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ["RETRAINER_SERVING__PORT"] = str(port)
    os.environ.setdefault("RETRAINER_SERVING__ADMIN_TOKEN", secrets.token_urlsafe(32))
    if not os.environ.get("RETRAINER_PSEUDONYM_KEY"):
        os.environ["RETRAINER_PSEUDONYM_KEY"] = DEMO_KEY  # synthetic data only; printed below
    os.environ.setdefault("RETRAINER_LABEL_DELAY", sc.label_delay)


def drift_window_triggers(home: Path, source: str) -> Path:
    """The triggers file with the data-drift window set to `DRIFT_WINDOW` (written under home)."""
    cfg = yaml.safe_load(Path(source).read_text())
    for t in cfg["retraining_triggers"]:
        if t["type"] == "data_drift":
            t["window"] = DRIFT_WINDOW
    path = home / "demo-data" / "triggers-demo.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


class Endpoint:
    """The local endpoint (`retrainer serve`'s app, capture on) on a free loopback port, in a thread."""

    def __init__(self, settings):
        from retrainer.deid import pseudonymizer_from_env  # noqa: PLC0415 - heavy: pandas
        from retrainer.predstore import PredictionStore  # noqa: PLC0415 - heavy: pyarrow
        from retrainer.serving import BackgroundServer, create_app  # noqa: PLC0415 - heavy: fastapi

        self.settings = settings
        self.app = create_app(settings, LocalRegistry(settings.registry_dir, settings.model_name),
                              PredictionStore(settings.home), pseudonymizer_from_env(settings.pseudonym_key_env),
                              flush_rows=500, flush_seconds=0.5, capture_interval=0.05)
        self.server = BackgroundServer(self.app, settings.serving.port, name="demo-endpoint")
        self.url = self.server.url

    def __enter__(self) -> "Endpoint":
        self.server.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.server.__exit__(*exc)

    def send(self, frame, batch: int = 50) -> dict[str, int]:
        """Score admissions as a hospital system would (identifiers included); count by variant.
        Returns once every prediction is in the store."""
        import httpx  # noqa: PLC0415 - heavy: httpx

        cols = list(dict.fromkeys([*S.FEATURES, *S.KEYS, *S.IDENTIFIERS[:3]]))  # as a caller sends them
        records = json.loads(frame[cols].to_json(orient="records", date_format="iso"))
        counts: dict[str, int] = {}
        with httpx.Client(base_url=self.url, timeout=30) as client:
            for i in range(0, len(records), batch):
                r = client.post("/invocations", json={"instances": records[i:i + batch]})
                r.raise_for_status()
                for p in r.json()["predictions"]:
                    counts[p["variant"]] = counts.get(p["variant"], 0) + 1
        cap = self.app.state.serving.capture
        cap.flush()  # everything answered so far is in the store when this returns
        return counts

    def wait_for(self, variant: str, alive: Callable[[], bool], timeout: float = 120, shadow: bool = False) -> None:
        """Until `variant` has traffic (the canary started) - or, in `shadow`, is loaded at weight 0
        - while `alive()` (its run goes on)."""
        import httpx  # noqa: PLC0415 - heavy: httpx

        headers = {"Authorization": f"Bearer {self.settings.serving.admin_token.get_secret_value()}"}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and alive():
            state = httpx.get(f"{self.url}/admin/variants", headers=headers, timeout=10).json()
            if any(v["variant"] == variant and (shadow or v["weight"] > 0) for v in state["variants"]):
                return
            time.sleep(0.1)
        raise DemoFailed(f"variant {variant} never got traffic")


def ingest_labels(settings, frame, workdir: Path) -> int:
    """Outcomes arrive later as a file keyed by the raw row id (and entity)."""
    from retrainer.deid import pseudonymizer_from_env  # noqa: PLC0415 - heavy: pandas
    from retrainer.predstore import PredictionStore  # noqa: PLC0415 - heavy: pyarrow

    path = workdir / f"labels-{time.time_ns()}.csv"
    frame[[*S.KEYS, S.LABEL]].to_csv(path, index=False)
    return PredictionStore(settings.home).ingest_labels(path, pseudonymizer_from_env(settings.pseudonym_key_env))


def run_canary(endpoint: Endpoint, settings, manual: clock.ManualClock, candidate: str, traffic,
               workdir: Path, sc: Scenario) -> dict[str, Any]:
    """The canary flow in a thread (it waits in process between checks). The demo sends the
    traffic, then moves the clock a check interval at a time until the flow decides; the labels
    of that traffic arrive `label_delay` after it was scored, before the first check after that."""
    from flows.canary import canary  # noqa: PLC0415 - heavy: prefect
    from retrainer.triggers.config import format_duration  # noqa: PLC0415 - heavy: pandas

    box: dict[str, Any] = {}
    ctx = contextvars.copy_context()

    def target():
        try:
            box["result"] = ctx.run(canary, candidate=candidate, plan=sc.plan, actor="demo")
        except BaseException as exc:  # noqa: BLE001 - re-raised in the demo's thread below
            box["error"] = exc

    t = threading.Thread(target=target, daemon=True, name="demo-canary")
    t.start()
    endpoint.wait_for("green", alive=t.is_alive, shadow=sc.shadow)
    manual.advance(timedelta(minutes=1))
    scored_at = manual.now()
    counts = endpoint.send(traffic)
    print(f"   traffic: {counts} (every request also scored in shadow by the other model)")
    check = sc.check
    labels_due = scored_at + settings.label_delay
    labelled = False
    deadline = time.monotonic() + 600
    while t.is_alive() and time.monotonic() < deadline:
        if not labelled and manual.now() + check >= labels_due:
            manual.advance(max(timedelta(0), labels_due - manual.now()))
            n = ingest_labels(settings, traffic, workdir)
            labelled = True
            print(f"   {format_duration(settings.label_delay)} later: {n} outcomes arrive")
        manual.advance(check - (manual.now() - scored_at) % check)  # to the next check; the flow's timer resumes it
        t.join(3)
    if t.is_alive():
        raise DemoFailed(f"canary {candidate} did not decide within 10 minutes")
    if "error" in box:
        raise DemoFailed(f"canary {candidate} failed: {type(box['error']).__name__}: {box['error']}")
    result = box["result"]
    if result.get("power"):
        print(f"   power at the start: {result['power'].get('text', result['power'])}")
    for d in result["decisions"]:
        print(f"   check {d['index']} at {d['elapsed_s'] / 3600:.0f} h: {d['action']} - {d['reason']}")
    if sc.shadow and result.get("action") == "promote":
        print("   cutover: the candidate takes 100% at once; the previous version stays loaded for rollback")
    return result


def run_verdict(manual: clock.ManualClock, canary_result: dict[str, Any], settings) -> dict[str, Any]:
    """After a promotion: wait (simulated) until the canary period's labels have matured, then
    the deferred verdict re-checks the promotion on them."""
    from flows.verdict import deferred_verdict  # noqa: PLC0415 - heavy: prefect
    from retrainer.triggers.config import format_duration  # noqa: PLC0415 - heavy: pandas

    sched = canary_result.get("deferred_verdict") or {}
    due = datetime.fromisoformat(sched["due_at"])
    manual.advance(max(timedelta(0), due - manual.now()) + timedelta(minutes=1))
    start = canary_result["evidence_window"]["start"]
    end = canary_result["evidence_window"]["end"]
    out = deferred_verdict(version=canary_result["candidate"], previous=canary_result["production_before"],
                           window_start=start, window_end=end)
    print(f"   deferred verdict ({format_duration(settings.label_delay)} after the canary's end): {out['outcome']} - "
          f"{out['reason']}")
    return out


def scenario(settings, manual: clock.ManualClock, data: dict[str, Any], work: Path, sc: Scenario) -> dict[str, Any]:
    """Steps 1-5 (module docstring); each raises DemoFailed naming what went wrong."""
    import pandas as pd  # noqa: PLC0415 - heavy: pandas

    from flows.monitor import monitor  # noqa: PLC0415 - heavy: prefect
    from flows.retrain import retrain  # noqa: PLC0415 - heavy: prefect
    from retrainer import rollout  # noqa: PLC0415 - heavy: pandas
    from retrainer.backends import get_backend  # noqa: PLC0415 - heavy: pandas

    def period(i: int) -> pd.DataFrame:
        return pd.read_parquet(data["periods"][i - 1])

    def span(r: tuple[int, int]) -> str:
        return f"{sc.unit}s {r[0]}-{r[1]}"

    u = sc.unit
    backend = get_backend(settings)
    print(f"== 1. first model: {span(sc.first)} ==")
    first = retrain(data=data["first"], trigger="manual", actor="demo")

    with Endpoint(settings) as endpoint:
        print(f"== 2. {sc.regular_name} retrain on {span(sc.regular)}, then {sc.plan_name} on "
              f"{u}-{sc.regular_traffic} traffic ==")
        regular = retrain(data=data["regular"], trigger="scheduled", actor="schedule")
        c1 = run_canary(endpoint, settings, manual, regular["version"], period(sc.regular_traffic), work, sc)
        print(f"   {sc.plan.get('strategy', 'canary')} {c1['candidate']}: {c1['action']} - {c1['reason']}")
        v1 = run_verdict(manual, c1, settings) if c1["action"] == "promote" and c1.get("deferred_verdict") else None

        a, b = sc.drifted
        print(f"== 3. {u}s {a}-{b} drift; production scores them; the monitor runs ==")
        manual.advance(timedelta(days=2))  # the rollout's traffic leaves the 24-hour drift window
        endpoint.send(pd.concat([period(i) for i in range(a, b + 1)]).iloc[:3000])
        manual.advance(timedelta(minutes=1))
        watch = monitor()
        drift = next(e for e in watch["evaluations"] if e["name"] == "data-drift")
        print(f"   data-drift: {'FIRED' if drift['fired'] else 'quiet'} - {drift['reason']}")
        if not watch.get("emitted") or watch.get("reported") != "data-drift":
            raise DemoFailed(f"step 3 expected a drift event, the monitor reported {watch.get('reported')}: "
                             f"{watch.get('reason')}")
        print(f"   emitted {watch['event']} (an automation on retrain-on-drift starts the emergency "
              "retrain when deployed; here the demo starts it)")

        print(f"== 4. emergency retrain on {span(sc.emergency)}, then {sc.plan_name} on drifted "
              f"{u}-{sc.emergency_traffic} traffic ==")
        emergency = retrain(data=data["emergency"], trigger="drift", actor="automation",
                            context=watch.get("payload"))
        if emergency.get("status") != Status.CANDIDATE:
            raise DemoFailed(f"step 4 expected a candidate, the retrain gave {emergency.get('status')}: "
                             f"{emergency.get('reason', '')}")
        c2 = run_canary(endpoint, settings, manual, emergency["version"], period(sc.emergency_traffic), work, sc)
        print(f"   {sc.plan.get('strategy', 'canary')} {c2['candidate']}: {c2['action']} - {c2['reason']}")
        v2 = run_verdict(manual, c2, settings) if c2["action"] == "promote" and c2.get("deferred_verdict") else None

        print("== 5. forced rollback while the endpoint serves ==")
        rb = rollout.rollback_production(backend.registry, backend.endpoint, None, actor="demo",
                                         reason="forced rollback (demo)")
        print(f"   production {rb['replaced']} -> {rb['version']}: traffic switched in {rb['switch_ms']:.0f} ms")
    return {"first": first, "regular": regular, "canary_regular": c1["action"], "drift_event": watch["event"],
            "emergency": emergency, "canary_emergency": c2["action"], "rollback": rb["version"],
            "verdicts": [v and v["outcome"] for v in (v1, v2)]}


def run(rows_per_period: int | None = None) -> int:
    """Run the active model's demo (`retrainer --model NAME demo`) in its RETRAINER_HOME; print the
    registry at the end. Exit 0, or DemoFailed."""
    from retrainer.backends import get_backend  # noqa: PLC0415 - heavy: pandas
    from retrainer.settings import load_settings  # noqa: PLC0415 - heavy: pydantic
    from retrainer.spec import active_model, load_spec  # noqa: PLC0415 - the model chosen by --model
    from tasks.runtime import install_log_filter  # noqa: PLC0415 - heavy: prefect

    model = active_model()
    sc = SCENARIOS.get(model)
    if sc is None:
        raise ConfigError(f"no demo scenario for model {model!r} (demos: {', '.join(SCENARIOS)}); try "
                          f"retrainer --model {model} data generate, then retrainer --model {model} retrain")
    install_log_filter()
    home = load_settings().home.resolve()
    prepare_home(home)
    demo_environment(home, sc)
    work = home / "demo-data"
    data = generate_data(work, sc, rows_per_period or sc.rows, model)
    os.environ["RETRAINER_TRIGGERS_FILE"] = str(drift_window_triggers(home, load_settings().triggers_file))
    settings = load_settings()
    # The scenario spans about 9 simulated days (two 72-hour canaries, two days between them): it
    # starts in the past so that its records end before real time, and commands run after the
    # demo (`retrainer rollback`, say) append to the audit log in time order.
    start = datetime.now(timezone.utc).replace(microsecond=0) - SIMULATED_SPAN
    with clock.use(clock.ManualClock(start)) as manual:
        scenario(settings, manual, data, work, sc)

    registry = get_backend(settings).registry
    metric = load_spec(model).metrics.primary
    label = metric.upper() if metric == "auc" else metric.capitalize()
    print("\n== registry ==")
    for r in registry.list():
        print(f"  {r.version:<8} {r.status:<11} test {label} {r.metrics['candidate'][metric]:.4f}  "
              f"trigger={r.trigger:<9} bump={r.bump}")
    prod = registry.production()
    kept = [r.version for r in registry.previous()]
    print(f"\nproduction {prod.version}; kept ready for rollback: {', '.join(kept)}")
    flag = "" if model == "readmission-30d" else f"--model {model} "
    print(f"state: {home}  (try: retrainer {flag}registry list; retrainer {flag}registry audit; "
          f"retrainer {flag}rollback)")
    if os.environ.get("RETRAINER_PSEUDONYM_KEY") == DEMO_KEY:
        print(f"pseudonym key for this demo's synthetic data: export RETRAINER_PSEUDONYM_KEY={DEMO_KEY}")
    return 0
