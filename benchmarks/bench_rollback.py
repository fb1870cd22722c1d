"""Rollback switch time on a running local server: `python benchmarks/bench_rollback.py [--reps 5]`.

* hot (what `retrainer rollback` does): `retrainer.rollout.rollback_production` on the running
  server (admin weight change to an already loaded standby, then the registry), while a probe
  client sends single-row requests back to back. Measured: command issued -> first response from
  the target version after which every response is from the target.
* baseline, cold: the same rollback by restarting the server with the new routing (stop it, write
  routing.json and the registry, start it, first response from the target).

Both run in this one invocation on 127.0.0.1 with two small real models; medians and maxima printed.
"""
from __future__ import annotations

import argparse
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from retrainer import rollout  # noqa: E402
from retrainer.registry import LocalRegistry  # noqa: E402
from retrainer.serving import LocalEndpoint  # noqa: E402
from retrainer.settings import Settings  # noqa: E402
from tests.canary_world import build_models, make_registry, records  # noqa: E402
from tests.helpers import free_port  # noqa: E402

TOKEN = "bench-rollback-token-0123456789abcdef"  # serving needs >= 32 bytes


class Server:
    """`retrainer.serving.serve` in its own process on 127.0.0.1:`port` (a random pseudonym key
    unless `key` is given; admin token `token`)."""

    def __init__(self, home: Path, port: int, log: Path, *, key: str | None = None, token: str = TOKEN):
        env = {**os.environ, "RETRAINER_PSEUDONYM_KEY": key or secrets.token_hex(32), "PYTHONPATH": str(REPO)}
        code = ("from retrainer.settings import Settings; from retrainer.serving import serve; "
                f"serve(Settings(home={str(home)!r}, serving={{'admin_token': {token!r}}}), "
                f"host='127.0.0.1', port={port})")
        self.log = open(log, "a")
        self.proc = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


class Probe(threading.Thread):
    """Back-to-back single-row requests; records (sent, received, version)."""

    def __init__(self, url: str, body: dict):
        super().__init__(daemon=True)
        self.url, self.body, self.log, self.stop_flag = url, body, [], threading.Event()

    def run(self):
        with httpx.Client(base_url=self.url, timeout=10) as c:
            while not self.stop_flag.is_set():
                t0 = time.perf_counter()
                try:
                    r = c.post("/invocations", json=self.body)
                    v = r.json()["predictions"][0]["version"] if r.status_code == 200 else None
                except httpx.HTTPError:
                    v = None
                self.log.append((t0, time.perf_counter(), v))


def first_all_new(log, t_issue: float, target: str) -> float:
    """Receive time of the first target response after which every response is the target's."""
    after = [(t0, t1, v) for t0, t1, v in log if t1 >= t_issue]
    last_bad = max((t1 for _, t1, v in after if v != target), default=t_issue)
    return min(t1 for _, t1, v in after if v == target and t1 >= last_bad)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--cold-reps", type=int, default=3)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-rollback-"))
    models = build_models(tmp / "models")
    home = tmp / "home"
    make_registry(home, models["dirs"], [("1.0.0", "good"), ("1.1.0", "good2")])
    body = {"instances": records(models["traffic"].iloc[:1])}
    port = free_port()
    settings = Settings(home=home, serving={"admin_token": TOKEN, "port": port})
    reg, endpoint = LocalRegistry(settings.registry_dir), LocalEndpoint(settings)

    hot, admin = [], []
    server = Server(home, port, tmp / "server.log")
    try:
        endpoint.wait_healthy(60)
        for _ in range(args.reps):
            probe = Probe(endpoint.base_url, body)
            probe.start()
            time.sleep(0.5)
            t_issue = time.perf_counter()
            res = rollout.rollback_production(reg, endpoint, None, actor="bench", reason="benchmark")
            time.sleep(0.5)
            probe.stop_flag.set()
            probe.join()
            hot.append((first_all_new(probe.log, t_issue, res["version"]) - t_issue) * 1000)
            admin.append(res["switch_ms"])
    finally:
        server.stop()

    cold = []
    for i in range(args.cold_reps):
        server = Server(home, port, tmp / "server.log")
        endpoint.wait_healthy(60)
        t_issue = time.perf_counter()
        server.stop()
        res = rollout.rollback_production(reg, endpoint, None, actor="bench", reason="benchmark cold")  # file
        server = Server(home, port, tmp / "server.log")
        with httpx.Client(base_url=endpoint.base_url, timeout=5) as c:
            while True:
                try:
                    r = c.post("/invocations", json=body)
                    if r.status_code == 200 and r.json()["predictions"][0]["version"] == res["version"]:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.02)
        cold.append((time.perf_counter() - t_issue) * 1000)
        server.stop()

    print(f"hot rollback (weight change on the running server), {len(hot)} reps: command -> all-new responses "
          f"median {statistics.median(hot):.1f} ms, max {max(hot):.1f} ms; command -> admin confirmed "
          f"median {statistics.median(admin):.1f} ms, max {max(admin):.1f} ms")
    print(f"baseline cold rollback (restart with the new routing), {len(cold)} reps: command -> first target "
          f"response median {statistics.median(cold):.0f} ms, max {max(cold):.0f} ms")
    print(f"hot is {statistics.median(cold) / statistics.median(hot):.0f}x faster (median)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
