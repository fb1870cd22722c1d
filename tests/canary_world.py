"""Builders shared by the canary/rollback tests: real small models, a registry, the real serving
app on a real uvicorn server (loopback, free port), simulated traffic and delayed labels."""
from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pandas as pd

from retrainer import datagen, training
from retrainer import schema as S
from retrainer.registry import LocalRegistry
from retrainer.serving import BackgroundServer
from retrainer.settings import ModelSettings, Settings
from tests.helpers import free_port, make_record

TOKEN = "canary-test-admin-token-0123456789abcdef"  # >= 32 bytes: serving refuses shorter
KEY = "canary-test-pseudonym-key-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}

# name -> (hyperparameters, shuffle the training labels?). On this data: good ~0.74 AUC,
# mid ~0.66, shuffled ~0.50.
MODELS = {"good": (dict(max_iter=60), False), "mid": (dict(max_iter=3, max_leaf_nodes=2), False),
          "shuffled": (dict(max_iter=30), True), "good2": (dict(max_iter=40, random_state=1), False)}


def build_models(tmp: Path) -> dict:
    paths = datagen.generate(tmp / "data", datagen.GenerationSpec(months=3, rows_per_month=2000, seed=3))
    df = pd.concat([pd.read_parquet(p) for p in paths], ignore_index=True)
    train, val, traffic = df.iloc[:3000], df.iloc[3000:4000], df.iloc[4000:].reset_index(drop=True)
    dirs = {}
    for name, (kw, shuffle) in MODELS.items():
        t = train.copy()
        if shuffle:
            t[S.LABEL] = np.random.default_rng(0).permutation(t[S.LABEL].to_numpy())
        training.train(t, val, tmp / f"model-{name}", ModelSettings(**kw).model_dump())
        dirs[name] = tmp / f"model-{name}"
    return {"dirs": dirs, "traffic": traffic}


def make_registry(home: Path, dirs: dict, chain: list[tuple[str, str]], candidates: list[tuple[str, str]] = ()):
    """`chain`: (version, model) promoted in order (the last one is production); `candidates`:
    (version, model) registered as candidates."""
    reg = LocalRegistry(home / "registry")
    for i, (version, model) in enumerate(chain):
        reg.register(make_record(version, "production" if i == 0 else "candidate"), dirs[model], actor="test")
        if i:
            reg.promote(version, actor="test", reason="test setup")
    for version, model in candidates:
        reg.register(make_record(version, "candidate"), dirs[model], actor="test")
    return reg


def records(frame: pd.DataFrame) -> list[dict]:
    cols = list(S.FEATURES) + ["patient_id", S.ADMISSION_ID]
    return json.loads(frame[cols].to_json(orient="records"))


def set_env(monkeypatch, home: Path, port: int, **canary) -> None:
    monkeypatch.setenv("RETRAINER_HOME", str(home))
    monkeypatch.setenv("RETRAINER_SERVING__PORT", str(port))
    monkeypatch.setenv("RETRAINER_SERVING__ADMIN_TOKEN", TOKEN)
    monkeypatch.setenv("RETRAINER_PSEUDONYM_KEY", KEY)
    monkeypatch.delenv("RETRAINER_CONFIG", raising=False)
    monkeypatch.setenv("RETRAINER_LABEL_DELAY", "1s")  # the traffic's labels mature within a check
    for k, v in canary.items():
        monkeypatch.setenv(f"RETRAINER_CANARY__{k.upper()}", str(v))


class LiveServer(BackgroundServer):
    """The real app (`serving.create_app`, capture on) under uvicorn in a thread, 127.0.0.1 only."""

    def __init__(self, home: Path, port: int | None = None, **state_options):
        from retrainer.deid import Pseudonymizer
        from retrainer.predstore import PredictionStore
        from retrainer.serving import create_app

        port = port or free_port()
        self.settings = Settings(home=home, serving={"admin_token": TOKEN, "port": port})
        self.registry = LocalRegistry(home / "registry")
        self.store = PredictionStore(home)
        opts = dict(flush_rows=200, flush_seconds=0.3, capture_interval=0.05) | state_options
        app = create_app(self.settings, self.registry, self.store, Pseudonymizer(KEY.encode()), **opts)
        super().__init__(app, port, name="uvicorn-test")

    def variants(self) -> list[tuple[str, str, float]]:
        state = httpx.get(f"{self.url}/admin/variants", headers=AUTH, timeout=10).json()
        return [(v["variant"], v["version"], v["weight"]) for v in state["variants"]]

    def wait_for_variant(self, name: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not any(v[0] == name and v[2] > 0 for v in self.variants()):
            if time.monotonic() > deadline:
                raise AssertionError(f"variant {name} never got traffic: {self.variants()}")
            time.sleep(0.1)

    def wait_for_loaded(self, name: str, timeout: float = 60) -> None:
        """Until variant `name` is loaded (any weight, 0 included: a shadow candidate)."""
        deadline = time.monotonic() + timeout
        while not any(v[0] == name for v in self.variants()):
            if time.monotonic() > deadline:
                raise AssertionError(f"variant {name} never loaded: {self.variants()}")
            time.sleep(0.1)

    def send(self, frame: pd.DataFrame, batch: int = 50) -> dict[str, int]:
        """POST the rows through /invocations; returns predictions per variant."""
        counts: dict[str, int] = {}
        recs = records(frame)
        with httpx.Client(base_url=self.url, timeout=30) as client:
            for i in range(0, len(recs), batch):
                r = client.post("/invocations", json={"instances": recs[i:i + batch]})
                assert r.status_code == 200, r.text
                for p in r.json()["predictions"]:
                    counts[p["variant"]] = counts.get(p["variant"], 0) + 1
        return counts

    def flush(self) -> None:
        cap = self.app.state.serving.capture
        cap.flush()  # everything answered so far is in the store when this returns


def ingest_labels(home: Path, frame: pd.DataFrame, tmp: Path) -> int:
    """Delayed outcomes arrive as a file keyed by raw admission/patient id."""
    from retrainer.deid import Pseudonymizer
    from retrainer.predstore import PredictionStore

    path = tmp / f"labels-{time.monotonic_ns()}.csv"
    frame[[S.ADMISSION_ID, "patient_id", S.LABEL]].to_csv(path, index=False)
    return PredictionStore(home).ingest_labels(path, Pseudonymizer(KEY.encode()))


def compressed(duration_s: float, interval_s: float, traffic: float = 0.5) -> dict:
    return {"stages": [{"traffic": traffic, "duration_s": duration_s, "check_interval_s": interval_s}]}


class Traffic(threading.Thread):
    """Sends `frame`'s rows through the server in batches, round and round, until `stop()`:
    live traffic for rollouts whose stages need requests of their own. `counts`: answers per variant."""

    def __init__(self, server: LiveServer, frame: pd.DataFrame, batch: int = 40, pause: float = 0.05):
        super().__init__(daemon=True)
        self.server, self.frame, self.batch, self.pause = server, frame, batch, pause
        self.counts: dict[str, int] = {}
        self._stop_event = threading.Event()

    def run(self) -> None:
        recs = records(self.frame)
        with httpx.Client(base_url=self.server.url, timeout=30) as client:
            i = 0
            while not self._stop_event.is_set():
                part = recs[i:i + self.batch] or recs[:self.batch]
                i = (i + self.batch) % len(recs)
                r = client.post("/invocations", json={"instances": part})
                if r.status_code == 200:
                    for p in r.json()["predictions"]:
                        self.counts[p["variant"]] = self.counts.get(p["variant"], 0) + 1
                self._stop_event.wait(self.pause)

    def stop(self) -> dict[str, int]:
        self._stop_event.set()
        self.join(30)
        return dict(self.counts)
