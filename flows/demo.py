"""`retrainer demo`: the whole lifecycle on generated data with time compressed, on embedded
defaults (local registry, local endpoint, ephemeral Prefect API unless PREFECT_API_URL is set).

1. the first model (1.0.0, straight to production);
2. the monthly retrain (1.1.0) and its canary on live traffic with delayed labels -> promoted;
3. drifted months through the endpoint; the monitor finds PSI > 0.20 and emits
   `retrainer.drift.detected` (with deployments, an automation starts the emergency retrain; here
   the demo starts it with the event's payload);
4. the emergency retrain (1.2.0) and its canary -> promoted;
5. a forced rollback, which leaves production plus two previous versions ready.
"""
from __future__ import annotations

import contextvars
import json
import os
import secrets
import shutil
import threading
import time
from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from retrainer import schema as S
from retrainer.datagen import GenerationSpec, generate
from retrainer.errors import ConfigError
from retrainer.serving import BackgroundServer
from tasks.runtime import install_log_filter, settings_for

from .canary import canary
from .monitor import monitor
from .retrain import retrain

MARKER = ".retrainer-demo"
DEMO_KEY = "retrainer-demo-pseudonym-key-not-for-production"
MONTHS = 12
DRIFT_FROM = 9  # months 9-12 drift
PLAN = {"stages": [{"traffic": 0.10, "duration_s": 8, "check_interval_s": 4}]}
opts = dict(cache_policy=NO_CACHE, persist_result=False)


def prepare_home(home: Path) -> None:
    """The demo owns its state directory: it resets one it created before, refuses any other."""
    if home.exists() and any(home.iterdir()) and not (home / MARKER).exists():
        raise ConfigError(f"{home} holds a registry the demo did not create; point RETRAINER_HOME "
                          "at an empty directory to run the demo")
    if home.exists():
        shutil.rmtree(home)
    home.mkdir(parents=True)
    (home / MARKER).write_text("state written by `retrainer demo`; safe to delete\n")


@task(name="generate-data", **opts)
def generate_data(workdir: Path, rows_per_month: int) -> dict[str, Any]:
    months = generate(workdir / "months", GenerationSpec(months=MONTHS, rows_per_month=rows_per_month,
                                                         seed=7, drift_from=DRIFT_FROM))
    batches = {"first": months[:6], "monthly": months[:8], "emergency": months[:10]}
    out: dict[str, Any] = {"months": [str(m) for m in months]}
    for name, files in batches.items():
        folder = workdir / f"batch-{name}"
        folder.mkdir(parents=True, exist_ok=True)
        for f in files:
            os.link(f, folder / f.name)
        out[name] = str(folder)
    return out


class Endpoint(BackgroundServer):
    """The local endpoint (`retrainer serve`'s app, capture on) on a free loopback port, in a thread."""

    def __init__(self, settings):
        from retrainer.deid import pseudonymizer_from_env
        from retrainer.predstore import PredictionStore
        from retrainer.registry import LocalRegistry
        from retrainer.serving import create_app

        self.settings = settings
        app = create_app(settings, LocalRegistry(settings.registry_dir, settings.model_name),
                         PredictionStore(settings.home), pseudonymizer_from_env(settings.pseudonym_key_env),
                         flush_rows=500, flush_seconds=0.5, capture_interval=0.05)
        super().__init__(app, settings.serving.port, name="demo-endpoint")

    def send(self, frame, batch: int = 50) -> dict[str, int]:
        """Score admissions as a hospital system would (identifiers included); count by variant."""
        import httpx

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
        cap.drain()
        cap.writer.flush()
        return counts

    def wait_for(self, variant: str, timeout: float = 60) -> None:
        import httpx

        headers = {"Authorization": f"Bearer {self.settings.serving.admin_token.get_secret_value()}"}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = httpx.get(f"{self.url}/admin/variants", headers=headers, timeout=10).json()
            if any(v["variant"] == variant and v["weight"] > 0 for v in state["variants"]):
                return
            time.sleep(0.1)
        raise RuntimeError(f"variant {variant} never got traffic")


def ingest_labels(settings, frame, workdir: Path) -> int:
    """Outcomes arrive 30 days later as a file keyed by the raw admission id."""
    from retrainer.deid import pseudonymizer_from_env
    from retrainer.predstore import PredictionStore

    path = workdir / f"labels-{time.time_ns()}.csv"
    frame[[S.ADMISSION_ID, "patient_id", S.LABEL]].to_csv(path, index=False)
    return PredictionStore(settings.home).ingest_labels(path, pseudonymizer_from_env(settings.pseudonym_key_env))


def run_canary(endpoint: Endpoint, settings, candidate: str, traffic, workdir: Path) -> dict[str, Any]:
    """The canary flow (it waits in process between checks) while traffic flows and labels land."""
    box: dict[str, Any] = {}
    ctx = contextvars.copy_context()

    def target():
        try:
            box["result"] = ctx.run(canary, candidate=candidate, plan=PLAN, actor="demo")
        except BaseException as exc:  # noqa: BLE001 - re-raised below
            box["error"] = exc

    t = threading.Thread(target=target, daemon=True, name="demo-canary")
    t.start()
    endpoint.wait_for("green")
    counts = endpoint.send(traffic)
    n = ingest_labels(settings, traffic, workdir)
    print(f"   traffic: {counts} ; {n} delayed labels ingested")
    t.join(300)
    if "error" in box:
        raise box["error"]
    return box["result"]


def demo_environment() -> None:
    """Time-compressed settings for this process only (a user's own values win)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ["RETRAINER_SERVING__PORT"] = str(port)
    os.environ.setdefault("RETRAINER_SERVING__ADMIN_TOKEN", secrets.token_urlsafe(24))
    if not os.environ.get("RETRAINER_PSEUDONYM_KEY"):
        os.environ["RETRAINER_PSEUDONYM_KEY"] = DEMO_KEY  # synthetic data only; printed below
    os.environ.setdefault("RETRAINER_CANARY__MIN_LABELS", "100")


def drift_window_triggers(workdir: Path, seconds: float) -> Path:
    """triggers.yaml with the data-drift window compressed to the drifted traffic just sent."""
    import yaml

    from retrainer.settings import load_settings

    cfg = yaml.safe_load(Path(load_settings().triggers_file).read_text())
    for t in cfg["retraining_triggers"]:
        if t["type"] == "data_drift":
            t["window"] = f"{int(seconds) + 2}s"
    path = workdir / "triggers-demo.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@flow(name="demo", log_prints=True)
def demo(workdir: str = ".retrainer-demo-data", rows_per_month: int = 4000) -> dict[str, Any]:
    install_log_filter()
    import pandas as pd

    settings = settings_for()
    prepare_home(settings.home)
    demo_environment()
    settings = settings_for()
    work = Path(workdir).resolve()
    shutil.rmtree(work, ignore_errors=True)
    data = generate_data(work, rows_per_month)
    month = lambda i: pd.read_parquet(data["months"][i - 1])  # noqa: E731

    from retrainer import rollout
    from retrainer.backends import get_backend

    backend = get_backend(settings)
    print("== 1. first model: months 1-6 ==")
    first = retrain(data=data["first"], trigger="manual", actor="demo")

    with Endpoint(settings) as endpoint:
        print("== 2. monthly retrain on months 1-8, then a canary on month-8 traffic ==")
        monthly = retrain(data=data["monthly"], trigger="scheduled", actor="schedule")
        c1 = run_canary(endpoint, settings, monthly["version"], month(8), work)
        print(f"   canary {c1['candidate']}: {c1['action']} - {c1['reason']}")

        print(f"== 3. months {DRIFT_FROM}-10 drift; production scores them; the monitor runs ==")
        t0 = time.monotonic()
        endpoint.send(pd.concat([month(9), month(10)]).iloc[:3000])
        os.environ["RETRAINER_TRIGGERS_FILE"] = str(drift_window_triggers(work, time.monotonic() - t0))
        watch = monitor()
        drift = next(e for e in watch["evaluations"] if e["name"] == "data-drift")
        print(f"   data-drift: {'FIRED' if drift['fired'] else 'quiet'} - {drift['reason']}")
        if not watch.get("emitted"):
            raise RuntimeError(f"the demo expected a drift event: {watch.get('reason')}")
        print(f"   emitted {watch['event']} (an automation on retrain-on-drift starts the emergency "
              "retrain when deployed; here the demo starts it)")

        print("== 4. emergency retrain on months 1-10, then a canary on drifted month-11 traffic ==")
        emergency = retrain(data=data["emergency"], trigger="drift", actor="automation",
                            context=watch.get("payload"))
        c2 = run_canary(endpoint, settings, emergency["version"], month(11), work)
        print(f"   canary {c2['candidate']}: {c2['action']} - {c2['reason']}")

        print("== 5. forced rollback while the endpoint serves ==")
        rb = rollout.rollback_production(backend.registry, backend.endpoint, None, actor="demo",
                                         reason="forced rollback (demo)")
        print(f"   production {rb['replaced']} -> {rb['version']}: traffic switched in {rb['switch_ms']:.0f} ms")

    print("\n== registry ==")
    for r in backend.registry.list():
        print(f"  {r.version:<8} {r.status:<11} test AUC {r.metrics['candidate']['auc']:.4f}  "
              f"trigger={r.trigger:<9} bump={r.bump}")
    prod = backend.registry.production()
    kept = [r.version for r in backend.registry.previous()]
    print(f"\nproduction {prod.version}; kept ready for rollback: {', '.join(kept)}")
    print(f"state: {settings.home.resolve()}  (try: retrainer registry list; retrainer registry audit; "
          "retrainer rollback)")
    if os.environ.get("RETRAINER_PSEUDONYM_KEY") == DEMO_KEY:
        print(f"pseudonym key for this demo's synthetic data: export RETRAINER_PSEUDONYM_KEY={DEMO_KEY}")
    return {"first": first, "monthly": monthly, "canary_monthly": c1["action"], "drift_event": watch["event"],
            "emergency": emergency, "canary_emergency": c2["action"], "rollback": rb["version"],
            "production": prod.version, "previous": kept}
