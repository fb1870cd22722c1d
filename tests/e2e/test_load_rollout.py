"""Under load, a whole linear rollout (5/25/50/100%), a promotion and a rollback: zero failed requests.

A real uvicorn server of the serving app (`retrainer.serving.serve`, capture on) runs in a
subprocess on 127.0.0.1; an asyncio client paces single-row requests at RATE per second for
SECONDS (bounded: RATE * SECONDS requests at most) over keep-alive connections. Meanwhile the
rollout operations the flows use (`retrainer.rollout`) change the weights through the admin API.
"""
from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time

import httpx
import numpy as np
import pytest

from benchmarks.loadgen import http_request as _request
from retrainer import rollout
from retrainer.registry import LocalRegistry
from retrainer.rollout import RolloutPlan
from retrainer.serving import LocalEndpoint
from retrainer.settings import Settings
from tests.canary_world import AUTH, KEY, TOKEN, build_models, make_registry, records
from tests.helpers import REPO, free_port

RATE = 400          # requests per second offered (>= 300 required)
SECONDS = 30
CONNECTIONS = 16


async def paced_load(port: int, bodies: list[bytes], rate: float, seconds: float, connections: int) -> dict:
    total = int(rate * seconds)
    start = time.perf_counter() + 0.2
    next_i = 0
    lat, failures, log = [], [], []

    async def worker():
        nonlocal next_i
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while next_i < total:
                i = next_i
                next_i += 1
                delay = start + i / rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                t0 = time.perf_counter()
                try:
                    status, body = await asyncio.wait_for(_request(reader, writer, bodies[i % len(bodies)]), 10)
                except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, ValueError) as exc:
                    failures.append(f"{type(exc).__name__}")
                    writer.close()
                    reader, writer = await asyncio.open_connection("127.0.0.1", port)
                    continue
                t1 = time.perf_counter()
                if status != 200:
                    failures.append(f"HTTP {status}: {body[:200]!r}")
                    continue
                lat.append(t1 - t0)
                pred = json.loads(body)["predictions"][0]
                log.append((t0, t1, pred["variant"], pred["version"]))
        finally:
            writer.close()

    t_begin = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(connections)))
    wall = time.perf_counter() - t_begin
    ms = np.array(lat) * 1000
    return {"ok": len(lat), "failures": failures, "rps": len(lat) / wall, "wall_s": wall,
            "p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)),
            "max_ms": float(ms.max()), "log": log}


@pytest.fixture
def live_server(tmp_path):
    models = build_models(tmp_path / "models")
    home = tmp_path / "home"
    make_registry(home, models["dirs"], [("1.0.0", "good")], [("1.1.0", "good2")])
    port = free_port()
    env = {**os.environ, "RETRAINER_PSEUDONYM_KEY": KEY, "PYTHONPATH": str(REPO)}
    env.pop("RETRAINER_CONFIG", None)
    code = ("from retrainer.settings import Settings; from retrainer.serving import serve; "
            f"serve(Settings(home={str(home)!r}, serving={{'admin_token': {TOKEN!r}}}), host='127.0.0.1', port={port})")
    log = open(tmp_path / "server.log", "w")
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, cwd=str(tmp_path), stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    settings = Settings(home=home, serving={"admin_token": TOKEN, "port": port})
    try:
        LocalEndpoint(settings).wait_healthy(60)
        yield {"port": port, "settings": settings, "home": home, "models": models}
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def test_linear_rollout_promotion_and_rollback_under_load(live_server):
    """Protocol 24's linear plan (rollout-plans/protocol24-linear.yaml: 5/25/50/100%), stage by
    stage with the weight changes its flow makes, then the promotion and a rollback, under 400
    requests per second: no request fails, and each stage answers its share from the candidate."""
    port, settings = live_server["port"], live_server["settings"]
    reg = LocalRegistry(settings.registry_dir)
    endpoint = LocalEndpoint(settings)
    plan = RolloutPlan.from_file(REPO / "rollout-plans" / "protocol24-linear.yaml")
    shares = [st.traffic for st in plan.stages]
    assert plan.strategy == "linear" and shares == [0.05, 0.25, 0.5, 1.0]
    rows = records(live_server["models"]["traffic"].iloc[:500])
    bodies = [(f"POST /invocations HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
               f"Content-Length: {len(b)}\r\n\r\n").encode() + b
              for b in (json.dumps({"instances": [r]}).encode() for r in rows)]
    events: dict[str, float] = {}

    def operations():
        time.sleep(4)
        for i, share in enumerate(shares):
            events[f"stage{i}_issued"] = time.perf_counter()
            if i == 0:
                rollout.start_canary(reg, endpoint, "1.1.0", share, actor="load-test", reason="linear under load")
            else:
                rollout.set_canary_traffic(reg, endpoint, "1.1.0", share, actor="load-test")
            events[f"stage{i}"] = time.perf_counter()
            time.sleep(4)
        events["promote_issued"] = time.perf_counter()
        rollout.promote_canary(reg, endpoint, "1.1.0", actor="load-test", reason="promote under load")
        events["promote"] = time.perf_counter()
        time.sleep(4)
        events["rollback_issued"] = time.perf_counter()
        res = rollout.rollback_production(reg, endpoint, None, actor="load-test", reason="rollback under load")
        events["rollback"] = time.perf_counter()
        events["rollback_switch_ms"] = res["switch_ms"]

    ops = threading.Thread(target=operations, daemon=True)
    ops.start()
    stats = asyncio.run(paced_load(port, bodies, RATE, SECONDS, CONNECTIONS))
    ops.join(30)
    assert {"stage3", "promote", "rollback"} <= set(events), events

    log = stats.pop("log")

    def answered(start: str, end: str) -> list[tuple[str, str]]:
        """(variant, version) of requests sent after `start` returned and answered before `end` was issued."""
        return [(v, ver) for t0, t1, v, ver in log if events[start] < t0 and t1 < events[end]]

    before = {(v, ver) for t0, t1, v, ver in log if t1 < events["stage0_issued"]}
    after = {(v, ver) for t0, t1, v, ver in log if t0 > events["rollback"]}
    print(f"\nload: {stats['ok']} ok, {len(stats['failures'])} failed, {stats['rps']:.0f} rps over "
          f"{stats['wall_s']:.1f} s, p50 {stats['p50_ms']:.2f} ms, p99 {stats['p99_ms']:.2f} ms, "
          f"max {stats['max_ms']:.1f} ms; rollback command to 100% {events['rollback_switch_ms']:.1f} ms")
    assert stats["failures"] == [], stats["failures"][:5]
    assert stats["rps"] >= 300 and stats["ok"] >= 300 * SECONDS * 0.95
    assert before == {("blue", "1.0.0")}
    for i, share in enumerate(shares):
        got = answered(f"stage{i}", f"stage{i + 1}_issued" if i + 1 < len(shares) else "promote_issued")
        green = sum(1 for v, ver in got if (v, ver) == ("green", "1.1.0")) / len(got)
        print(f"stage {i + 1}: planned {share:.0%}, answered by the candidate {green:.1%} of {len(got)}")
        assert len(got) > 500 and abs(green - share) < 0.08, (i, share, green)
        assert set(got) <= {("blue", "1.0.0"), ("green", "1.1.0")}
    assert set(answered("promote", "rollback_issued")) == {("blue", "1.1.0")}
    assert after == {("blue", "1.0.0")}
    assert reg.production().version == "1.0.0" and reg.get("1.1.0").status == "previous"
    state = httpx.get(f"http://127.0.0.1:{port}/admin/variants", headers=AUTH).json()
    assert [(v["variant"], v["version"], v["weight"]) for v in state["variants"]] == [
        ("blue", "1.0.0", 1.0), ("previous-1", "1.1.0", 0.0)]
