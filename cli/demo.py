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
MONTHS = 12
DRIFT_FROM = 9  # months 9-12 drift
CHECK = timedelta(hours=24)
PLAN = {"stages": [{"traffic": 0.10, "duration_s": 72 * 3600, "check_interval_s": int(CHECK.total_seconds())}]}
DRIFT_WINDOW = "24h"
# The readmission outcome takes 30 days; the demo compresses that to 36 simulated hours, so labels
# for a canary's traffic arrive half-way through its 72 hours, not at once.
LABEL_DELAY = "36h"
SIMULATED_SPAN = timedelta(days=14)  # more than the scenario's simulated time


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


def generate_data(workdir: Path, rows_per_month: int) -> dict[str, Any]:
    """Twelve months (drifting from month 9) and the three training batches, as hard links."""
    from retrainer.datagen import GenerationSpec, generate  # noqa: PLC0415 - heavy: pandas

    months = generate(workdir / "months", GenerationSpec(months=MONTHS, rows_per_month=rows_per_month,
                                                         seed=7, drift_from=DRIFT_FROM))
    out: dict[str, Any] = {"months": [str(m) for m in months]}
    for name, files in {"first": months[:6], "monthly": months[:8], "emergency": months[:10]}.items():
        folder = workdir / f"batch-{name}"
        folder.mkdir(parents=True, exist_ok=True)
        for f in files:
            os.link(f, folder / f.name)
        out[name] = str(folder)
    return out


def demo_environment(home: Path) -> None:
    """Settings for this process only (a user's own values win): a free loopback port, a random
    admin token, the demo's pseudonym key, and the demo's triggers file."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ["RETRAINER_SERVING__PORT"] = str(port)
    os.environ.setdefault("RETRAINER_SERVING__ADMIN_TOKEN", secrets.token_urlsafe(32))
    if not os.environ.get("RETRAINER_PSEUDONYM_KEY"):
        os.environ["RETRAINER_PSEUDONYM_KEY"] = DEMO_KEY  # synthetic data only; printed below
    os.environ.setdefault("RETRAINER_LABEL_DELAY", LABEL_DELAY)


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

        cols = list(S.FEATURES) + ["patient_id", S.ADMISSION_ID, "patient_name", "mrn"]
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

    def wait_for(self, variant: str, alive: Callable[[], bool], timeout: float = 120) -> None:
        """Until `variant` has traffic (the canary started), while `alive()` (its run goes on)."""
        import httpx  # noqa: PLC0415 - heavy: httpx

        headers = {"Authorization": f"Bearer {self.settings.serving.admin_token.get_secret_value()}"}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and alive():
            state = httpx.get(f"{self.url}/admin/variants", headers=headers, timeout=10).json()
            if any(v["variant"] == variant and v["weight"] > 0 for v in state["variants"]):
                return
            time.sleep(0.1)
        raise DemoFailed(f"variant {variant} never got traffic")


def ingest_labels(settings, frame, workdir: Path) -> int:
    """Outcomes arrive later as a file keyed by the raw admission id."""
    from retrainer.deid import pseudonymizer_from_env  # noqa: PLC0415 - heavy: pandas
    from retrainer.predstore import PredictionStore  # noqa: PLC0415 - heavy: pyarrow

    path = workdir / f"labels-{time.time_ns()}.csv"
    frame[[S.ADMISSION_ID, "patient_id", S.LABEL]].to_csv(path, index=False)
    return PredictionStore(settings.home).ingest_labels(path, pseudonymizer_from_env(settings.pseudonym_key_env))


def run_canary(endpoint: Endpoint, settings, manual: clock.ManualClock, candidate: str, traffic,
               workdir: Path) -> dict[str, Any]:
    """The canary flow in a thread (it waits in process between checks). The demo sends the
    traffic, then moves the clock a check interval at a time until the flow decides; the labels
    of that traffic arrive `label_delay` after it was scored, before the first check after that."""
    from flows.canary import canary  # noqa: PLC0415 - heavy: prefect
    from retrainer.triggers.config import format_duration  # noqa: PLC0415 - heavy: pandas

    box: dict[str, Any] = {}
    ctx = contextvars.copy_context()

    def target():
        try:
            box["result"] = ctx.run(canary, candidate=candidate, plan=PLAN, actor="demo")
        except BaseException as exc:  # noqa: BLE001 - re-raised in the demo's thread below
            box["error"] = exc

    t = threading.Thread(target=target, daemon=True, name="demo-canary")
    t.start()
    endpoint.wait_for("green", alive=t.is_alive)
    manual.advance(timedelta(minutes=1))
    scored_at = manual.now()
    counts = endpoint.send(traffic)
    print(f"   traffic: {counts} (every request also scored in shadow by the other model)")
    labels_due = scored_at + settings.label_delay
    labelled = False
    deadline = time.monotonic() + 600
    while t.is_alive() and time.monotonic() < deadline:
        if not labelled and manual.now() + CHECK >= labels_due:
            manual.advance(max(timedelta(0), labels_due - manual.now()))
            n = ingest_labels(settings, traffic, workdir)
            labelled = True
            print(f"   {format_duration(settings.label_delay)} later: {n} outcomes arrive")
        manual.advance(CHECK - (manual.now() - scored_at) % CHECK)  # to the next check; the flow's timer resumes it
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


def scenario(settings, manual: clock.ManualClock, data: dict[str, Any], work: Path) -> dict[str, Any]:
    """Steps 1-5 (module docstring); each raises DemoFailed naming what went wrong."""
    import pandas as pd  # noqa: PLC0415 - heavy: pandas

    from flows.monitor import monitor  # noqa: PLC0415 - heavy: prefect
    from flows.retrain import retrain  # noqa: PLC0415 - heavy: prefect
    from retrainer import rollout  # noqa: PLC0415 - heavy: pandas
    from retrainer.backends import get_backend  # noqa: PLC0415 - heavy: pandas

    def month(i: int) -> pd.DataFrame:
        return pd.read_parquet(data["months"][i - 1])

    backend = get_backend(settings)
    print("== 1. first model: months 1-6 ==")
    first = retrain(data=data["first"], trigger="manual", actor="demo")

    with Endpoint(settings) as endpoint:
        print("== 2. monthly retrain on months 1-8, then a 72-hour canary on month-8 traffic ==")
        monthly = retrain(data=data["monthly"], trigger="scheduled", actor="schedule")
        c1 = run_canary(endpoint, settings, manual, monthly["version"], month(8), work)
        print(f"   canary {c1['candidate']}: {c1['action']} - {c1['reason']}")
        v1 = run_verdict(manual, c1, settings) if c1["action"] == "promote" else None

        print(f"== 3. months {DRIFT_FROM}-10 drift; production scores them; the monitor runs ==")
        manual.advance(timedelta(days=2))  # the canary's traffic leaves the 24-hour drift window
        endpoint.send(pd.concat([month(9), month(10)]).iloc[:3000])
        manual.advance(timedelta(minutes=1))
        watch = monitor()
        drift = next(e for e in watch["evaluations"] if e["name"] == "data-drift")
        print(f"   data-drift: {'FIRED' if drift['fired'] else 'quiet'} - {drift['reason']}")
        if not watch.get("emitted") or watch.get("reported") != "data-drift":
            raise DemoFailed(f"step 3 expected a drift event, the monitor reported {watch.get('reported')}: "
                             f"{watch.get('reason')}")
        print(f"   emitted {watch['event']} (an automation on retrain-on-drift starts the emergency "
              "retrain when deployed; here the demo starts it)")

        print("== 4. emergency retrain on months 1-10, then a canary on drifted month-11 traffic ==")
        emergency = retrain(data=data["emergency"], trigger="drift", actor="automation",
                            context=watch.get("payload"))
        if emergency.get("status") != Status.CANDIDATE:
            raise DemoFailed(f"step 4 expected a candidate, the retrain gave {emergency.get('status')}: "
                             f"{emergency.get('reason', '')}")
        c2 = run_canary(endpoint, settings, manual, emergency["version"], month(11), work)
        print(f"   canary {c2['candidate']}: {c2['action']} - {c2['reason']}")
        v2 = run_verdict(manual, c2, settings) if c2["action"] == "promote" else None

        print("== 5. forced rollback while the endpoint serves ==")
        rb = rollout.rollback_production(backend.registry, backend.endpoint, None, actor="demo",
                                         reason="forced rollback (demo)")
        print(f"   production {rb['replaced']} -> {rb['version']}: traffic switched in {rb['switch_ms']:.0f} ms")
    return {"first": first, "monthly": monthly, "canary_monthly": c1["action"], "drift_event": watch["event"],
            "emergency": emergency, "canary_emergency": c2["action"], "rollback": rb["version"],
            "verdicts": [v and v["outcome"] for v in (v1, v2)]}


def run(rows_per_month: int = 4000) -> int:
    """Run the demo in RETRAINER_HOME; print the registry at the end. Exit 0, or DemoFailed."""
    from retrainer.backends import get_backend  # noqa: PLC0415 - heavy: pandas
    from retrainer.settings import load_settings  # noqa: PLC0415 - heavy: pydantic
    from tasks.runtime import install_log_filter  # noqa: PLC0415 - heavy: prefect

    install_log_filter()
    home = load_settings().home.resolve()
    prepare_home(home)
    demo_environment(home)
    work = home / "demo-data"
    data = generate_data(work, rows_per_month)
    os.environ["RETRAINER_TRIGGERS_FILE"] = str(drift_window_triggers(home, load_settings().triggers_file))
    settings = load_settings()
    # The scenario spans about 9 simulated days (two 72-hour canaries, two days between them): it
    # starts in the past so that its records end before real time, and commands run after the
    # demo (`retrainer rollback`, say) append to the audit log in time order.
    start = datetime.now(timezone.utc).replace(microsecond=0) - SIMULATED_SPAN
    with clock.use(clock.ManualClock(start)) as manual:
        scenario(settings, manual, data, work)

    registry = get_backend(settings).registry
    print("\n== registry ==")
    for r in registry.list():
        print(f"  {r.version:<8} {r.status:<11} test AUC {r.metrics['candidate']['auc']:.4f}  "
              f"trigger={r.trigger:<9} bump={r.bump}")
    prod = registry.production()
    kept = [r.version for r in registry.previous()]
    print(f"\nproduction {prod.version}; kept ready for rollback: {', '.join(kept)}")
    print(f"state: {home}  (try: retrainer registry list; retrainer registry audit; retrainer rollback)")
    if os.environ.get("RETRAINER_PSEUDONYM_KEY") == DEMO_KEY:
        print(f"pseudonym key for this demo's synthetic data: export RETRAINER_PSEUDONYM_KEY={DEMO_KEY}")
    return 0
