"""Serving benchmark (on demand): `python benchmarks/bench_serving.py [--seconds 8] [--runs 2]`.

What it does, all on 127.0.0.1:

1. trains two small real models (synthetic data, default hyperparameters) into a temporary
   LocalRegistry (1.0.0 previous, 1.1.0 production) and starts two real servers
   (`retrainer.serving.serve`, uvicorn, one worker each), one with capture ON (a throwaway key;
   its writer process is spawned) and one with capture OFF, each in a subprocess on a free port;
2. in-process baselines: one-row scoring through `LoadedModel.predict` (pandas pipeline) vs
   `FastScorer.predict`;
3. load: an asyncio client keeps `--connections` keep-alive HTTP/1.1 connections busy for
   `--seconds` (bounded by `--max-requests`), single-row JSON `POST /invocations`; reports
   requests/s, p50/p99 latency, failures, alternating capture ON and OFF run by run (the idle
   server costs nothing), and prints both with the ratios ON/OFF (targets: p99 within 1.5x,
   throughput within 10%) and the capture counters from `GET /metrics` (every answered row
   written or in the backlog, none lost). `GET /ping` the same way is the server-overhead ceiling;
4. rollback switch: under load with green (1.0.0) at weight 1, the admin call sets blue (1.1.0)
   to 1; reports the admin call's latency and the time from issuing it to the point after which
   every response came from blue (the last green response's completion, then the first blue one).

5. shadow scoring cost: two more servers, capture ON, both with blue (1.1.0) at 0.9 and green
   (1.0.0) at 0.1, one with `serving.shadow = "off"` and one with `"candidate"` (every request
   also scored by the other of the two: one extra variant), measured alternately in the same run;
   prints both and the ratios shadow/no shadow (target: throughput cost under 15%, i.e. >= 0.85x)
   and the shadow counters from `GET /metrics`. `--shadow-only` runs just this (with
   `--seconds 3 --runs 1 --max-iter 30` it takes well under a minute).

With `--baseline-rev REV` (e.g. the commit before a change), a third server runs that revision's
code (`git archive REV`, its own registry written by its own code, capture OFF) in the same run,
alternating with the others, and the current code's capture-OFF figures are printed as a ratio of
it: the cost of whatever changed on the request path since REV (target for the request-boundary
checks: throughput within 5%).

Each measurement runs `--runs` times; the medians are printed. The client shares the machine's
CPUs with the server, so throughput is a lower bound for a remote client.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.loadgen import http_request as _request  # noqa: E402
from retrainer import datagen, training  # noqa: E402
from retrainer import schema as S  # noqa: E402
from retrainer.clock import utcnow_iso  # noqa: E402
from retrainer.registry import LocalRegistry, ModelRecord  # noqa: E402
from retrainer.scoring import FastScorer  # noqa: E402
from retrainer.settings import ModelSettings  # noqa: E402

TOKEN = "bench-admin-token-0123456789abcdef"  # serving needs >= 32 bytes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def record(version: str, status: str) -> ModelRecord:
    return ModelRecord(version=version, status=status, created_at=utcnow_iso(), trigger="bench", parent=None,
                       bump="minor", bump_reason="bench", schema_hash="s", data_hash="d", params_hash="p",
                       code_version="bench", params={}, metrics={}, data={}, validation={}, gate={})


def json_records(frame: pd.DataFrame) -> list[dict]:
    sub = frame[list(S.FEATURES) + [S.ENTITY, S.ADMISSION_ID]]
    return json.loads(sub.to_json(orient="records"))


def build_post(port: int, path: str, body: bytes, extra: str = "") -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n{extra}\r\n").encode() + body


async def load(port: int, requests: list[bytes], seconds: float, connections: int, max_requests: int,
               log: list | None = None) -> dict:
    latencies: list[float] = []
    failures = 0
    stop_at = time.perf_counter() + seconds
    counter = 0

    async def worker(k: int):
        nonlocal failures, counter
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        i = k
        try:
            while time.perf_counter() < stop_at and counter < max_requests:
                counter += 1
                t0 = time.perf_counter()
                try:
                    status, body = await _request(reader, writer, requests[i % len(requests)])
                except (OSError, asyncio.IncompleteReadError, ValueError):
                    failures += 1
                    writer.close()
                    reader, writer = await asyncio.open_connection("127.0.0.1", port)
                    continue
                t1 = time.perf_counter()
                if status != 200:
                    failures += 1
                else:
                    latencies.append(t1 - t0)
                    if log is not None:
                        log.append((t0, t1, body))
                i += connections
        finally:
            writer.close()

    t_start = time.perf_counter()
    await asyncio.gather(*(worker(k) for k in range(connections)))
    wall = time.perf_counter() - t_start
    lat = np.array(latencies) * 1000
    return {"requests": len(latencies), "failures": failures, "rps": len(latencies) / wall,
            "p50_ms": float(np.percentile(lat, 50)) if len(lat) else None,
            "p99_ms": float(np.percentile(lat, 99)) if len(lat) else None}


async def switch_run(port: int, requests: list[bytes], connections: int, admin_body: bytes) -> dict:
    """Load for ~3 s; at 1 s issue the admin change; find when responses became all-new."""
    log: list = []
    task = asyncio.create_task(load(port, requests, 3.0, connections, 10**9, log))
    await asyncio.sleep(1.0)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    raw = build_post(port, "/admin/variants", admin_body, f"Authorization: Bearer {TOKEN}\r\n")
    t_issue = time.perf_counter()
    status, body = await _request(reader, writer, raw)
    t_admin = time.perf_counter() - t_issue
    writer.close()
    stats = await task
    assert status == 200, body
    after = [(t0, t1, json.loads(b)["predictions"][0]["variant"]) for t0, t1, b in log if t1 >= t_issue]
    last_old = max((t1 for _, t1, v in after if v != "blue"), default=t_issue)
    first_new = min((t1 for _, t1, v in after if v == "blue" and t1 >= last_old), default=float("nan"))
    return {"admin_ms": t_admin * 1000, "switch_ms": (first_new - t_issue) * 1000,
            "old_after_issue": sum(v != "blue" for _, _, v in after), "failures": stats["failures"]}


def median_of(runs: list[dict], key: str):
    vals = [r[key] for r in runs if r.get(key) is not None]
    return statistics.median(vals) if vals else None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--max-requests", type=int, default=200_000)
    ap.add_argument("--max-iter", type=int, default=250, help="trees per model (settings default 250)")
    ap.add_argument("--shadow-only", action="store_true",
                    help="measure only the shadow scoring cost (shadow off vs one extra variant)")
    ap.add_argument("--baseline-rev", default=None, metavar="REV",
                    help="also serve git revision REV (capture off) in the same run and print the ratios")
    ap.add_argument("--scorers-only", action="store_true",
                    help="measure only the scorer paths in process: compiled HGB, XGBoost, pipeline fallback")
    args = ap.parse_args()
    if args.scorers_only:
        return scorer_paths()

    tmp = Path(tempfile.mkdtemp(prefix="bench-serving-"))
    home = tmp / "home"
    paths = datagen.generate(tmp / "data", datagen.GenerationSpec(months=3, rows_per_month=3000, seed=5))
    df = pd.concat([pd.read_parquet(p) for p in paths], ignore_index=True)
    train, val = df.iloc[:6000], df.iloc[6000:].reset_index(drop=True)
    reg = LocalRegistry(home / "registry")
    for i, version in enumerate(("1.0.0", "1.1.0")):
        params = ModelSettings(max_iter=args.max_iter, random_state=i).model_dump()
        training.train(train, val, tmp / f"m{version}", params)
        reg.register(record(version, "production" if i == 0 else "candidate"), tmp / f"m{version}", actor="bench")
    reg.promote("1.1.0", actor="bench", reason="bench")

    # ---- in-process baseline: pandas pipeline vs FastScorer, one row -------------------------
    model = training.load_model(tmp / "m1.1.0")
    scorer = FastScorer.from_model(model)
    rows = json_records(val.iloc[:200])
    frames = [val.iloc[[i]] for i in range(200)]
    t = time.perf_counter()
    for f in frames[:100]:
        model.predict(f)
    pandas_us = (time.perf_counter() - t) / 100 * 1e6
    t = time.perf_counter()
    for r in rows:
        scorer.predict([r])
    fast_us = (time.perf_counter() - t) / len(rows) * 1e6
    print(f"one-row scoring in process: LoadedModel.predict {pandas_us:.0f} us, "
          f"FastScorer.predict {fast_us:.0f} us ({pandas_us / fast_us:.0f}x), mode={scorer.mode}")

    # ---- the servers: capture on and off ------------------------------------------------------
    import httpx

    env = {**os.environ, "RETRAINER_PSEUDONYM_KEY": secrets.token_hex(32), "PYTHONPATH": str(REPO)}
    procs, logs = [], []

    def start(capture: bool, code_root: Path = REPO, state: Path = home, serving: dict | None = None) -> int:
        port = free_port()
        serving = {"admin_token": TOKEN, **(serving or {})}
        code = ("from retrainer.settings import Settings; from retrainer.serving import serve; "
                f"serve(Settings(home={str(state)!r}, serving={serving!r}), port={port}, "
                f"capture={capture})")
        logs.append(open(tmp / f"server-{port}.log", "w"))
        procs.append(subprocess.Popen([sys.executable, "-c", code], env={**env, "PYTHONPATH": str(code_root)},
                                      cwd=str(tmp), stdout=logs[-1], stderr=subprocess.STDOUT,
                                      start_new_session=True))
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/ping", timeout=1).status_code == 200:
                    return port
            except httpx.HTTPError:
                pass
            if procs[-1].poll() is not None or time.monotonic() > deadline:
                print((tmp / f"server-{port}.log").read_text()[-3000:])
                raise SystemExit("server did not start")
            time.sleep(0.2)

    try:
        if args.shadow_only:
            shadow_cost(args, start, tmp, home, rows)
            return 0
        port = start(True)
        port_off = start(False)
        port_base = start(False, *baseline(args.baseline_rev, tmp, env)) if args.baseline_rev else None

        def posts(p: int) -> list[bytes]:
            return [build_post(p, "/invocations", json.dumps({"instances": [r]}).encode()) for r in rows]

        invocations, invocations_off = posts(port), posts(port_off)
        invocations_base = posts(port_base) if port_base else None
        ping = [f"GET /ping HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()]
        asyncio.run(load(port, invocations, 1.0, args.connections, 10**6))  # warm-up
        asyncio.run(load(port_off, invocations_off, 1.0, args.connections, 10**6))
        if port_base:
            asyncio.run(load(port_base, invocations_base, 1.0, args.connections, 10**6))

        results = {"ping": [], "invocations": [], "capture off": [], "baseline": [], "switch": []}
        for _ in range(args.runs):
            results["ping"].append(asyncio.run(load(port, ping, args.seconds, args.connections, args.max_requests)))
            results["invocations"].append(asyncio.run(
                load(port, invocations, args.seconds, args.connections, args.max_requests)))
            results["capture off"].append(asyncio.run(
                load(port_off, invocations_off, args.seconds, args.connections, args.max_requests)))
            if port_base:
                results["baseline"].append(asyncio.run(
                    load(port_base, invocations_base, args.seconds, args.connections, args.max_requests)))
        answered = sum(r["requests"] for r in results["invocations"])  # plus the warm-up's
        time.sleep(2.5)  # > capture_flush_seconds: everything answered should now be written
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics").text
        to_green = json.dumps([{"variant": "blue", "version": "1.1.0", "weight": 0.0},
                               {"variant": "green", "version": "1.0.0", "weight": 1.0}]).encode()
        to_blue = json.dumps([{"variant": "blue", "version": "1.1.0", "weight": 1.0},
                              {"variant": "green", "version": "1.0.0", "weight": 0.0}]).encode()
        admin = {"Authorization": f"Bearer {TOKEN}"}
        for _ in range(args.runs):
            r = httpx.post(f"http://127.0.0.1:{port}/admin/variants", content=to_green, headers=admin, timeout=60)
            assert r.status_code == 200, r.text
            results["switch"].append(asyncio.run(switch_run(port, invocations, args.connections, to_blue)))

        for name in ("ping", "invocations", "capture off") + (("baseline",) if port_base else ()):
            runs = results[name]
            print(f"{name:12s} runs: " + "; ".join(
                f"{r['rps']:.0f} rps p50 {r['p50_ms']:.2f} ms p99 {r['p99_ms']:.2f} ms fail {r['failures']}"
                for r in runs))
            print(f"{name:12s} median: {median_of(runs, 'rps'):.0f} rps, p50 {median_of(runs, 'p50_ms'):.2f} ms,"
                  f" p99 {median_of(runs, 'p99_ms'):.2f} ms, failures {sum(r['failures'] for r in runs)}")
        sw = results["switch"]
        print("rollback     runs: " + "; ".join(
            f"admin {r['admin_ms']:.1f} ms, switch {r['switch_ms']:.1f} ms, old responses after issue "
            f"{r['old_after_issue']}, fail {r['failures']}" for r in sw))
        print(f"rollback     median: admin call {median_of(sw, 'admin_ms'):.1f} ms, issue -> all-new "
              f"{median_of(sw, 'switch_ms'):.1f} ms")
        on, off = results["invocations"], results["capture off"]
        ratios = {k: median_of(on, k) / median_of(off, k) for k in ("rps", "p50_ms", "p99_ms")}
        print(f"capture ON/OFF: throughput {ratios['rps']:.2f}x, p50 {ratios['p50_ms']:.2f}x, "
              f"p99 {ratios['p99_ms']:.2f}x (targets: throughput >= 0.90x, p99 <= 1.5x)")
        if port_base:
            base = results["baseline"]
            r = {k: median_of(off, k) / median_of(base, k) for k in ("rps", "p50_ms", "p99_ms")}
            print(f"capture OFF, this code / {args.baseline_rev} (both capture off): throughput {r['rps']:.3f}x, "
                  f"p50 {r['p50_ms']:.2f}x, p99 {r['p99_ms']:.2f}x (target for request checks: throughput >= 0.95x)")
        samples = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
                   for line in metrics.splitlines() if line and not line.startswith("#")}
        dropped = sum(v for k, v in samples.items() if k.startswith("retrainer_capture_rows_dropped_total"))
        print(f"capture counters after the load (+2.5 s): accepted "
              f"{samples['retrainer_capture_rows_accepted_total']:.0f} (measured runs answered {answered}),"
              f" written {samples['retrainer_capture_rows_written_total']:.0f}, backlog "
              f"{samples['retrainer_capture_backlog_rows']:.0f}, dropped {dropped:.0f}, writer process "
              f"{samples['retrainer_capture_writer_process']:.0f}")
        print(f"targets: >= 1000 rps and p99 < 25 ms (connections={args.connections}, 1 uvicorn worker, "
              f"{os.cpu_count()} CPUs shared with the client)")
        shadow_cost(args, start, tmp, home, rows)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
        for f in logs:
            f.close()
    return 0


def shadow_cost(args, start, tmp: Path, home: Path, rows: list[dict]) -> dict:
    """Shadow scoring off vs one extra variant, same routing (blue 0.9, green 0.1), capture on,
    single-row requests, measured alternately; prints both and the ratios."""
    import httpx

    from retrainer.serving.routing import write_routing

    ports = {}
    for mode in ("off", "candidate"):
        state = tmp / f"home-shadow-{mode}"
        state.mkdir()
        (state / "registry").symlink_to(home / "registry")
        write_routing(state / "serving" / "routing.json",
                      {"variants": [{"variant": "blue", "version": "1.1.0", "weight": 0.9},
                                    {"variant": "green", "version": "1.0.0", "weight": 0.1}]})
        ports[mode] = start(True, state=state, serving={"shadow": mode})
    posts = {m: [build_post(p, "/invocations", json.dumps({"instances": [r]}).encode()) for r in rows]
             for m, p in ports.items()}
    for m, p in ports.items():  # warm-up
        asyncio.run(load(p, posts[m], 1.0, args.connections, 10**6))
    results: dict[str, list] = {"off": [], "candidate": []}
    for _ in range(args.runs):
        for m, p in ports.items():
            results[m].append(asyncio.run(load(p, posts[m], args.seconds, args.connections, args.max_requests)))
    for m, label in (("off", "shadow off"), ("candidate", "shadow +1")):
        runs = results[m]
        print(f"{label:12s} runs: " + "; ".join(
            f"{r['rps']:.0f} rps p50 {r['p50_ms']:.2f} ms p99 {r['p99_ms']:.2f} ms fail {r['failures']}"
            for r in runs))
        print(f"{label:12s} median: {median_of(runs, 'rps'):.0f} rps, p50 {median_of(runs, 'p50_ms'):.2f} ms,"
              f" p99 {median_of(runs, 'p99_ms'):.2f} ms, failures {sum(r['failures'] for r in runs)}")
    on, off = results["candidate"], results["off"]
    ratios = {k: median_of(on, k) / median_of(off, k) for k in ("rps", "p50_ms", "p99_ms")}
    print(f"shadow +1 variant / off: throughput {ratios['rps']:.2f}x (cost {1 - ratios['rps']:.1%}), "
          f"p50 {ratios['p50_ms']:.2f}x, p99 {ratios['p99_ms']:.2f}x (target: throughput >= 0.85x)")
    time.sleep(0.5)
    metrics = httpx.get(f"http://127.0.0.1:{ports['candidate']}/metrics").text
    samples = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
               for line in metrics.splitlines() if line and not line.startswith("#")}
    scored = sum(v for k, v in samples.items() if k.startswith("retrainer_shadow_scores_total"))
    failed = sum(v for k, v in samples.items() if k.startswith("retrainer_shadow_failures_total"))
    answered = sum(r["requests"] for r in on)
    print(f"shadow counters: scored {scored:.0f} (measured runs answered {answered}, plus the warm-up), failed "
          f"{failed:.0f}, dropped {samples.get('retrainer_shadow_dropped_total', 0):.0f}, backlog "
          f"{samples.get('retrainer_shadow_backlog_rows', 0):.0f}")
    return ratios


def baseline(rev: str, tmp: Path, env: dict) -> tuple[Path, Path]:
    """(code root, state dir) for revision `rev`: its files from `git archive`, and a registry
    holding the same two trained models, written by that revision's own registry code."""
    root, state = tmp / "baseline-code", tmp / "baseline-home"
    root.mkdir()
    archive = subprocess.run(["git", "-C", str(REPO), "archive", "--format=tar", rev], capture_output=True)
    if archive.returncode != 0:
        raise SystemExit(f"error: cannot read revision {rev}: {archive.stderr.decode().strip()}")
    subprocess.run(["tar", "-x", "-C", str(root)], input=archive.stdout, check=True)
    code = (
        "from pathlib import Path\n"
        "from retrainer.registry import LocalRegistry, ModelRecord\n"
        f"reg = LocalRegistry(Path({str(state / 'registry')!r}))\n"
        "def rec(v, s):\n"
        f"    return ModelRecord(version=v, status=s, created_at={utcnow_iso()!r}, trigger='bench', parent=None,\n"
        "        bump='minor', bump_reason='bench', schema_hash='s', data_hash='d', params_hash='p',\n"
        "        code_version='bench', params={}, metrics={}, data={}, validation={}, gate={})\n"
        f"reg.register(rec('1.0.0', 'production'), Path({str(tmp / 'm1.0.0')!r}), actor='bench')\n"
        f"reg.register(rec('1.1.0', 'candidate'), Path({str(tmp / 'm1.1.0')!r}), actor='bench')\n"
        "reg.promote('1.1.0', actor='bench', reason='bench')\n")
    subprocess.run([sys.executable, "-c", code], env={**env, "PYTHONPATH": str(root)}, cwd=str(tmp), check=True)
    short = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", rev], capture_output=True, text=True)
    print(f"baseline: {rev} ({short.stdout.strip()}) served from {root}")
    return root, state


def _per_row_us(fn, batches: list, reps: int = 3) -> float:
    """Median over `reps` of the time per row to score every batch of `batches` with `fn`."""
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        for b in batches:
            fn(b)
        times.append((time.perf_counter() - t) / sum(len(b) for b in batches) * 1e6)
    return statistics.median(times)


def scorer_paths() -> int:
    """The serving scorer's three paths, in process, on request records (single rows and batches
    of 100): the compiled HistGradientBoosting forest (readmission, the baseline), an XGBoost
    regressor scored by its own predict on the request matrix (lead scoring, "sklearn" mode), and
    the pandas fallback for a pipeline the scorer cannot take apart ("pipeline" mode: here the same
    XGBoost pipeline forced through it). Prints µs per row and each path's ratio to the baseline."""
    from examples.lead_scoring.datagen import generate as leads
    from retrainer import spec
    from retrainer.scoring import PipelineScorer

    tmp = Path(tempfile.mkdtemp(prefix="bench-scorers-"))
    adm = pd.concat([pd.read_parquet(p) for p in datagen.generate(
        tmp / "adm", datagen.GenerationSpec(months=2, rows_per_month=3000, seed=5))], ignore_index=True)
    training.train(adm.iloc[:4000], adm.iloc[4000:], tmp / "hgb", ModelSettings().model_dump(),
                   spec=spec.load_spec("readmission-30d"))
    lead = pd.concat([pd.read_parquet(p) for p in leads(tmp / "leads", periods=5, rows_per_period=1500, seed=3)],
                     ignore_index=True)
    lspec = spec.load_spec("lead-scoring")
    training.train(lead.iloc[:4000], lead.iloc[4000:], tmp / "xgb", dict(lspec.training.params), spec=lspec)
    out: dict[str, dict[str, float]] = {}
    for name, model_dir, frame, model_name, force in (
            ("compiled HGB (readmission)", tmp / "hgb", adm, "readmission-30d", False),
            ("XGBoost, own predict (lead scoring)", tmp / "xgb", lead, "lead-scoring", False),
            ("pipeline fallback (the XGBoost pipeline via pandas)", tmp / "xgb", lead, "lead-scoring", True)):
        with spec.using(model_name):
            loaded = training.load_model(model_dir)
            scorer = PipelineScorer(loaded) if force else FastScorer.from_model(loaded)
            recs = json_records(frame.iloc[:2000])
            singles = [[r] for r in recs[:300]]
            batches = [recs[i:i + 100] for i in range(0, 2000, 100)]
            scorer.predict(singles[0])  # warm
            out[name] = {"mode": scorer.mode, "single": _per_row_us(scorer.predict, singles),
                         "batch": _per_row_us(scorer.predict, batches)}
    base = out["compiled HGB (readmission)"]
    print(f"{'scorer path':<52}{'mode':<10}{'1 row µs':>10}{'x base':>8}{'100 rows µs/row':>17}{'x base':>8}")
    for name, r in out.items():
        print(f"{name:<52}{r['mode']:<10}{r['single']:>10.0f}{r['single'] / base['single']:>8.1f}"
              f"{r['batch']:>17.1f}{r['batch'] / base['batch']:>8.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
