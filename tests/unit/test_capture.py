"""Prediction capture (retrainer/serving/capture.py): one bad row never costs another, the backlog
is bounded and only real losses are counted, /metrics reports them, and a kill -9 of a real
serving process under load loses no more than the stated durability window."""
from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import pytest
from fastapi.testclient import TestClient

from benchmarks.loadgen import http_request
from retrainer import datagen, training
from retrainer import schema as S
from retrainer.deid import Pseudonymizer
from retrainer.predstore import PredictionStore
from retrainer.registry import LocalRegistry
from retrainer.serving.capture import CaptureQueue
from retrainer.settings import ModelSettings, Settings
from tests.helpers import free_port, make_record

REPO = Path(__file__).resolve().parents[2]
KEY = "capture-test-pseudonym-key-0123456789"
KEY_ENV = "RETRAINER_TEST_CAPTURE_KEY"
TOKEN = "capture-test-admin-token-0123456789abcdef"
NOW = datetime(2026, 3, 2, 12, 0, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("capture")
    paths = datagen.generate(tmp / "data", datagen.GenerationSpec(months=2, rows_per_month=1000, seed=11))
    df = pd.concat([pd.read_parquet(p) for p in paths], ignore_index=True)
    home = tmp / "home"
    training.train(df.iloc[:1500], df.iloc[1500:], tmp / "model", ModelSettings(max_iter=10).model_dump())
    LocalRegistry(home / "registry").register(make_record("1.0.0", "production"), tmp / "model", actor="test")
    cols = list(S.FEATURES) + ["patient_id", S.ADMISSION_ID, "patient_name", "mrn"]
    records = json.loads(df[cols].to_json(orient="records", date_format="iso"))
    return {"home": home, "records": records}


def queue(store, monkeypatch, process: bool, **kw) -> CaptureQueue:
    monkeypatch.setenv(KEY_ENV, KEY)
    return CaptureQueue(store, Pseudonymizer(KEY.encode()), key_env=KEY_ENV, process=process, **kw)


def accounted(st: dict) -> int:
    return st["written"] + sum(st["dropped"].values()) + st["backlog"]


# ------------------------------------------------------------------------------------------------
# A. one bad row never costs another

@pytest.mark.parametrize("process", [False, True], ids=["thread", "process"])
def test_one_bad_row_never_drops_the_others(world, tmp_path, monkeypatch, process):
    store = PredictionStore(tmp_path)
    recs = world["records"]
    cq = queue(store, monkeypatch, process, flush_rows=10_000, flush_seconds=None)
    try:
        for i, r in enumerate(recs[:50]):  # 50 good one-row requests ...
            cq.put("blue", "1.0.0", [r], [i / 100], 1.0, NOW)
        huge = dict(recs[50], age=10**30)  # ... one that cannot be cast ...
        cq.put("blue", "1.0.0", [huge], [0.9], 1.0, NOW)
        # ... and a 3-row request whose middle row is bad (a boolean feature that is not one)
        cq.put("green", "1.1.0", [recs[51], dict(recs[52], **{S.BOOLEAN_FEATURES[0]: "maybe"}), recs[53]],
               [0.1, 0.2, 0.3], 1.0, NOW)
        assert cq.flush() == 52
        st = cq.stats()
    finally:
        cq.close()
    stored = store.read()
    assert len(stored) == 52
    assert (stored["variant"] == "green").sum() == 2
    assert st["dropped"] == {"invalid": 2, "backlog_full": 0, "queue_full": 0, "writer_lost": 0}
    assert st["written"] == 52 and st["backlog"] == 0 and st["accepted"] == 53 + 1
    assert st["writer"] == ("process" if process else "thread")


@pytest.mark.parametrize("process", [False, True], ids=["thread", "process"])
def test_shadow_and_error_rows_keep_their_keys_through_the_writer(world, tmp_path, monkeypatch, process):
    store = PredictionStore(tmp_path)
    recs = world["records"]
    cq = queue(store, monkeypatch, process, flush_rows=10_000, flush_seconds=None)
    drained = []
    cq.before_flush.append(lambda: drained.append(True))  # the shadow scorer hands over here
    try:
        cq.put("blue", "1.0.0", recs[:3], [0.1, 0.2, 0.3], 2.0, NOW, request_id="req-b")
        cq.put("green", "1.1.0", [recs[0], recs[2]], [0.4, 0.6], 5.0, NOW, shadow=True, request_id="req-b",
               rows=[0, 2])
        cq.put("green", "1.1.0", [{"patient_id": recs[5]["patient_id"]}], [float("nan")], 1.0, NOW,
               request_id="req-c", rows=[0], error=True)
        assert cq.flush() == 6 and drained == [True]
    finally:
        cq.close()
    stored = store.read().sort_values(["request_id", "variant", "row"]).reset_index(drop=True)
    assert list(stored["request_id"]) == ["req-b"] * 5 + ["req-c"]
    assert list(stored["row"]) == [0, 1, 2, 0, 2, 0]
    assert list(stored["shadow"]) == [False, False, False, True, True, False]
    assert list(stored["error"]) == [False] * 5 + [True]
    assert stored["score"].iloc[5] != stored["score"].iloc[5]  # NaN
    pairs = store.paired(production="blue", candidate="green", labelled=False)
    assert list(pairs["row"]) == [0, 2] and list(pairs["score_candidate"]) == [0.4, 0.6]


def test_a_writer_process_is_used_only_with_the_same_key_in_the_environment(tmp_path, monkeypatch):
    store = PredictionStore(tmp_path)
    monkeypatch.setenv(KEY_ENV, "some-other-key-0123456789abcdef")
    cq = CaptureQueue(store, Pseudonymizer(KEY.encode()), key_env=KEY_ENV)  # auto: falls back to a thread
    try:
        assert cq.stats()["writer"] == "thread" and cq.writer_pid is None
    finally:
        cq.close()
    with pytest.raises(ValueError, match="does not hold the serving key"):
        CaptureQueue(store, Pseudonymizer(KEY.encode()), key_env=KEY_ENV, process=True)


# ------------------------------------------------------------------------------------------------
# B. bounded backlog, only real losses counted

class FlakyStore(PredictionStore):
    """A store whose disk is full until `full = False`."""

    full = True
    attempts = 0

    def write_records(self, records, **kw):
        FlakyStore.attempts += 1
        if FlakyStore.full:
            raise OSError(28, "No space left on device")
        return super().write_records(records, **kw)


def test_full_disk_keeps_a_bounded_backlog_drops_the_oldest_and_recovers(world, tmp_path, monkeypatch):
    FlakyStore.full, FlakyStore.attempts = True, 0
    store = FlakyStore(tmp_path)
    cq = queue(store, monkeypatch, False, flush_rows=20, flush_seconds=None, max_backlog_rows=100)
    try:
        for i in range(250):  # latency encodes the arrival order
            cq.put("blue", "1.0.0", [world["records"][i]], [0.5], float(i), NOW)
        with pytest.raises(RuntimeError, match="No space left"):
            cq.flush()
        st = cq.stats()
        assert st["written"] == 0
        assert st["backlog"] == 100  # bounded, not 250
        # the oldest 150 are dropped by the writer's bound or, if they had not been handed off yet,
        # the serving side's queue bound (the same number)
        assert st["dropped"]["backlog_full"] + st["dropped"]["queue_full"] == 150
        assert accounted(st) == st["accepted"] == 250
        # while the disk is full, adding rows does not retry the write on every add (back-off)
        assert FlakyStore.attempts <= 2
        FlakyStore.full = False
        assert cq.flush() == 100
        st = cq.stats()
    finally:
        cq.close()
    assert st["written"] == 100 and st["backlog"] == 0
    assert st["dropped"]["backlog_full"] + st["dropped"]["queue_full"] == 150
    assert sorted(store.read()["latency_ms"].astype(int)) == list(range(150, 250))  # the newest kept


def test_a_dead_writer_process_is_counted_and_replaced(world, tmp_path, monkeypatch):
    store = PredictionStore(tmp_path)
    cq = queue(store, monkeypatch, True, flush_rows=10_000, flush_seconds=60)
    try:
        for r in world["records"][:30]:
            cq.put("blue", "1.0.0", [r], [0.5], 1.0, NOW)
        first = cq.writer_pid
        deadline = time.monotonic() + 60
        while cq.counters[0] < 30 and time.monotonic() < deadline:
            time.sleep(0.05)  # until the writer received the 30 rows (it holds them: no write due)
        os.kill(first, signal.SIGKILL)
        while cq.writer_pid == first and time.monotonic() < deadline:
            time.sleep(0.05)
        for r in world["records"][30:50]:
            cq.put("blue", "1.0.0", [r], [0.5], 1.0, NOW)
        cq.flush()
        st = cq.stats()
    finally:
        cq.close()
    assert cq.writer_pid != first
    assert st["dropped"]["writer_lost"] == 30
    assert st["written"] == len(store.read()) == 20
    assert accounted(st) == st["accepted"] == 50


def test_metrics_route_reports_capture_in_prometheus_text(world, tmp_path, monkeypatch):
    from retrainer.serving import create_app

    settings = Settings(home=tmp_path / "home", serving={"admin_token": TOKEN})
    registry = LocalRegistry(world["home"] / "registry")
    store = PredictionStore(tmp_path / "home")
    app = create_app(settings, registry, store, Pseudonymizer(KEY.encode()), flush_rows=1000, flush_seconds=None)
    with TestClient(app) as client:
        for r in world["records"][:7]:
            assert client.post("/invocations", json={"instances": [r]}).status_code == 200
        app.state.serving.capture.flush()
        resp = client.get("/metrics")
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/plain")
    samples = {}
    for line in resp.text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    assert samples["retrainer_capture_enabled"] == 1
    assert samples["retrainer_capture_rows_accepted_total"] == 7
    assert samples["retrainer_capture_rows_written_total"] == 7 == len(store.read())
    assert samples["retrainer_capture_backlog_rows"] == 0
    assert samples['retrainer_capture_rows_dropped_total{reason="invalid"}'] == 0
    assert samples["retrainer_capture_window_rows"] == 1000
    assert samples["retrainer_capture_backlog_limit_rows"] == settings.serving.capture_backlog_rows

    off = create_app(settings, registry)  # no store: capture off
    with TestClient(off) as client:
        assert "retrainer_capture_enabled 0" in client.get("/metrics").text


# ------------------------------------------------------------------------------------------------
# B. durability window: kill -9 a real serving process under load

WINDOW_ROWS, WINDOW_SECONDS = 400, 1.0


def start_server(home: Path, port: int) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "RETRAINER_PSEUDONYM_KEY": KEY,
           "RETRAINER_SERVING__CAPTURE_FLUSH_ROWS": str(WINDOW_ROWS),
           "RETRAINER_SERVING__CAPTURE_FLUSH_SECONDS": str(WINDOW_SECONDS)}
    env.pop("RETRAINER_CONFIG", None)
    code = ("from retrainer.settings import Settings; from retrainer.serving import serve; "
            f"serve(Settings(home={str(home)!r}, serving={{'admin_token': {TOKEN!r}}}), port={port})")
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, cwd=str(home.parent), start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    import httpx

    deadline = time.monotonic() + 90
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=1).text.count("writer_process 1"):
                return proc
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("the serving process did not start with a writer process")
        time.sleep(0.2)


def writer_processes(pid: int) -> list[int]:
    """The spawned children of `pid` (not multiprocessing's resource tracker)."""
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes():
                out.append(int(child))
    return out


def running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (FileNotFoundError, ProcessLookupError):
        return False


async def load_then_kill(port: int, records: list[dict], kill, seconds: float, connections: int = 4):
    """Keep `connections` clients busy; after `seconds` call `kill()`; returns (answered
    completion times, requests sent, kill time)."""
    bodies = [(f"POST /invocations HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
               f"Content-Length: {len(b)}\r\n\r\n").encode() + b
              for b in (json.dumps({"instances": [r]}).encode() for r in records)]
    answered: list[float] = []
    sent = 0
    killed = asyncio.Event()

    async def client(k: int):
        nonlocal sent
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        i = k
        try:
            while not killed.is_set():
                sent += 1
                try:
                    status, _ = await asyncio.wait_for(http_request(reader, writer, bodies[i % len(bodies)]), 10)
                except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError):
                    return
                if status == 200:
                    answered.append(time.monotonic())
                i += connections
                await asyncio.sleep(0.003)  # a steady load the writer keeps up with on 2 shared cores
        finally:
            writer.close()

    async def killer():
        await asyncio.sleep(seconds)
        kill()
        killed.set()

    t = asyncio.gather(*(client(k) for k in range(connections)))
    await killer()
    t_kill = time.monotonic()
    await t
    return answered, sent, t_kill


@pytest.mark.parametrize("what", ["server", "server-and-writer"])
def test_kill9_under_load_loses_at_most_the_durability_window(world, tmp_path, what):
    home = tmp_path / "home"
    home.mkdir()
    shutil.copytree(world["home"] / "registry", home / "registry")
    port = free_port()
    proc = start_server(home, port)
    writers = writer_processes(proc.pid)
    assert len(writers) == 1
    try:
        def kill():
            if what == "server":
                os.kill(proc.pid, signal.SIGKILL)
            else:  # the whole process group: the server and its writer at once (like a power cut)
                os.killpg(proc.pid, signal.SIGKILL)

        answered, sent, t_kill = asyncio.run(load_then_kill(port, world["records"], kill, seconds=3.0))
        proc.wait(30)
        deadline = time.monotonic() + 60
        while running(writers[0]) and time.monotonic() < deadline:
            time.sleep(0.1)  # an orphaned writer writes what it received, then exits
        assert not running(writers[0])
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    stored = len(PredictionStore(home).read())
    recent = sum(1 for t in answered if t >= t_kill - WINDOW_SECONDS)
    window = min(WINDOW_ROWS, recent)
    assert len(answered) > 2 * WINDOW_ROWS  # the load was real: the window is a small share of it
    assert stored >= len(answered) - window, (stored, len(answered), window)
    assert stored <= sent  # nothing invented (requests in flight at the kill may be stored)
