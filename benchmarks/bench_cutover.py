"""Blue/green cutover time of the shadow strategy on a running local server:
`python benchmarks/bench_cutover.py [--reps 5] [--cold-reps 3]`.

* hot (what the rollout flow does when a shadow rollout is promoted): the candidate is already
  loaded at weight 0 (`rollout.shadow_variants`: production 100%, candidate scored in shadow);
  `rollout.promote_canary` records the promotion and moves the candidate to 100% with the old
  production kept warm as previous-1, while a probe client sends single-row requests back to back.
  Measured: the promotion call -> the endpoint confirming 100% (`cutover_ms`, what the flow records),
  and the call -> the first candidate response after which every response is the candidate's.
* baseline, cold: the same cutover by restarting the server with the new routing (stop it, write
  the registry and routing.json, start it, first response from the candidate).

Both run in this one invocation on 127.0.0.1 with small real models; medians and maxima printed,
and the ratio of the medians (hot against the cold baseline).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "benchmarks")]

from bench_rollback import TOKEN, Probe, Server, first_all_new  # noqa: E402

from retrainer import rollout  # noqa: E402
from retrainer.registry import LocalRegistry  # noqa: E402
from retrainer.serving import LocalEndpoint  # noqa: E402
from retrainer.settings import Settings  # noqa: E402
from tests.canary_world import build_models, make_registry, records  # noqa: E402
from tests.helpers import free_port, make_record  # noqa: E402


def new_candidate(reg: LocalRegistry, endpoint, dirs: dict, i: int, *, load: bool) -> str:
    """Register version 1.<i+1>.0 (alternating the two models), put it on canary and, when
    `load`, on the endpoint at weight 0 (the shadow layout)."""
    version = f"1.{i + 1}.0"
    reg.register(make_record(version, "candidate"), dirs["good" if i % 2 else "good2"], actor="bench")
    reg.set_status(version, "canary", actor="bench", reason="benchmark shadow")
    if load:
        endpoint.set_variants(rollout.shadow_variants(reg, version), actor="bench", reason="benchmark shadow")
    return version


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--cold-reps", type=int, default=3)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-cutover-"))
    models = build_models(tmp / "models")
    home = tmp / "home"
    make_registry(home, models["dirs"], [("1.0.0", "good")])
    body = {"instances": records(models["traffic"].iloc[:1])}
    settings = Settings(home=home, serving={"admin_token": TOKEN, "port": free_port()})
    reg, endpoint = LocalRegistry(settings.registry_dir), LocalEndpoint(settings)

    hot, confirmed = [], []
    i = 0
    server = Server(home, settings.serving.port, tmp / "server.log")
    try:
        endpoint.wait_healthy(60)
        for _ in range(args.reps):
            version = new_candidate(reg, endpoint, models["dirs"], i, load=True)
            i += 1
            probe = Probe(endpoint.base_url, body)
            probe.start()
            time.sleep(0.5)
            t_issue = time.perf_counter()
            res = rollout.promote_canary(reg, endpoint, version, actor="bench", reason="benchmark cutover")
            time.sleep(0.5)
            probe.stop_flag.set()
            probe.join()
            hot.append((first_all_new(probe.log, t_issue, version) - t_issue) * 1000)
            confirmed.append(res["cutover_ms"])
    finally:
        server.stop()

    cold = []
    for _ in range(args.cold_reps):
        version = new_candidate(reg, endpoint, models["dirs"], i, load=False)
        i += 1
        server = Server(home, settings.serving.port, tmp / "server.log")
        endpoint.wait_healthy(60)
        t_issue = time.perf_counter()
        server.stop()
        rollout.promote_canary(reg, endpoint, version, actor="bench", reason="benchmark cold")  # routing.json
        server = Server(home, settings.serving.port, tmp / "server.log")
        with httpx.Client(base_url=endpoint.base_url, timeout=5) as c:
            while True:
                try:
                    r = c.post("/invocations", json=body)
                    if r.status_code == 200 and r.json()["predictions"][0]["version"] == version:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.02)
        cold.append((time.perf_counter() - t_issue) * 1000)
        server.stop()

    print(f"hot blue/green cutover (candidate loaded at weight 0 -> 100%), {len(hot)} reps: promotion -> endpoint "
          f"confirmed median {statistics.median(confirmed):.1f} ms, max {max(confirmed):.1f} ms; promotion -> "
          f"all responses from the candidate median {statistics.median(hot):.1f} ms, max {max(hot):.1f} ms")
    print(f"baseline cold cutover (restart with the new routing), {len(cold)} reps: promotion -> first candidate "
          f"response median {statistics.median(cold):.0f} ms, max {max(cold):.0f} ms")
    print(f"hot is {statistics.median(cold) / statistics.median(hot):.0f}x faster than the restart baseline (median)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
