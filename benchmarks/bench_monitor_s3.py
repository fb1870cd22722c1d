"""The monitor's drift window streamed from the prediction store on S3 (moto) and on local disk,
on demand:

    .venv/bin/python benchmarks/bench_monitor_s3.py [--days 10] [--rows-per-day 1000000]
        [--windows 1,4,10] [--baseline-windows 1,4] [--stores local,s3]

Starts its own moto server (subprocess, 127.0.0.1, free port) and writes `--days` day partitions
of `--rows-per-day` de-identified prediction rows each (benchmarks/s3common.py; float features
shifted by 0.3 SD, so the window drifts) as the files `compact()` leaves: one compact-sized
`compact-*.parquet` per day (1M rows, row groups of 131,072, zstd), to both stores; the upload
through moto is timed. A reference profile is fitted on 200,000 unshifted rows.

Then, for each store and each window of the last N days (N from --windows, 1M rows a day by
default: 1M, 4M, 10M rows), a fresh process scores the window the way the monitor does
(retrainer/triggers/inputs.py): `store.scan(start, end, where=traffic_filter(version))` consumed
batch by batch by `ReferenceProfile.score`. Named baseline: the monitor's path before streaming,
`store.read(start, end)` into a DataFrame, production's untargeted rows, then `profile.score(frame)`
(at --baseline-windows only: it holds the whole window). Each child measures its own peak RSS
(VmHWM) and its growth over the RSS after imports, the S3 start-up check, the profile load and a
warm-up of the same path on a one-second window, and its CPU seconds; moto's requests (from its
log) and CPU seconds per run are counted too (moto's CPU near the wall time: moto is the limit).

moto serves from the same 2 cores over loopback; real S3 adds ~10-30 ms per request and serves
one connection at tens of MB/s (more with parallel ranged GETs). The output prints the load average.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import s3common  # noqa: E402
from s3common import MotoServer, prediction_table  # noqa: E402

FIRST_DAY = date(2026, 10, 1)
PROFILE_ROWS = 200_000


def load() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


# ---- child: one measurement in a fresh process ------------------------------------------------


def _status_kb(field: str) -> int:
    """VmRSS (now) or VmHWM (peak) of this process (not ru_maxrss: see bench_psi.py)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def child(url: str, profile_path: str, start: str, end: str, mode: str, tuning: str) -> None:
    import pandas as pd
    import scipy.stats  # noqa: F401  (imports before measuring)

    from retrainer import predstore as P
    from retrainer.drift import ReferenceProfile
    from retrainer.errors import DataError
    from retrainer.predstore import PredictionStore, traffic_filter, untargeted

    if tuning:  # batch_rows=..,batch_readahead=..,fragment_readahead=.. for scan(): a patched copy;
        opts = dict(kv.split("=") for kv in tuning.split(","))  # memory_pool=system|jemalloc|mimalloc
        if "memory_pool" in opts:
            import pyarrow as pa

            pa.set_memory_pool(getattr(pa, f"{opts.pop('memory_pool')}_memory_pool")())
        _tune_scan(P, opts)
    store = PredictionStore(P.location_for(url, check_first=True))
    prof = ReferenceProfile.load(profile_path)
    version = s3common.VERSION
    start_t, end_t = pd.Timestamp(start), pd.Timestamp(end)

    def run(a, b):
        if mode == "stream":
            return prof.score(store.scan(a, b, where=traffic_filter(version)))
        frame = untargeted(store.read(a, b))
        return prof.score(frame[frame["version"].astype(str) == version])

    try:  # warm-up: S3 check, thread pools, lazy imports (a toy-sized day may have no row in it)
        run(start_t, start_t + pd.Timedelta(seconds=1))
    except DataError:
        pass
    before = _status_kb("VmRSS")
    cpu0, t = os.times(), time.perf_counter()
    report = run(start_t, end_t)
    secs, cpu1 = time.perf_counter() - t, os.times()
    peak = _status_kb("VmHWM")
    print(json.dumps({"growth_mb": (peak - before) / 1024, "peak_mb": peak / 1024, "before_mb": before / 1024,
                      "seconds": secs, "cpu_s": cpu1.user + cpu1.system - cpu0.user - cpu0.system,
                      "rows": report.n_cur, "drifted": len(report.drifted())}))


def _tune_scan(P, opts: dict) -> None:
    """Replace PredictionStore.scan's readahead settings for this process (the --tune experiment)."""
    import pyarrow.dataset  # noqa: F401

    from retrainer.drift.sources import BatchStream

    br = int(opts.get("batch_readahead", 2))
    fr = int(opts.get("fragment_readahead", 1))
    rows = int(opts.get("batch_rows", 131_072))

    def scan(self, start=None, end=None, columns=None, *, where=None, batch_rows=rows):
        start, end = P._utc(start), P._utc(end)
        wanted = self._columns(columns)
        expr = self._window(start, end)
        if where is not None:
            expr = where if expr is None else expr & where
        files = self._prediction_files(start, end)
        dataset = self._dataset(files, P.prediction_schema()) if files else None

        def batches(cols):
            if dataset is None:
                return
            yield from dataset.to_batches(columns=list(cols), filter=expr, batch_size=batch_rows,
                                          batch_readahead=br, fragment_readahead=fr)

        return BatchStream(P.prediction_schema(), wanted, batches)

    P.PredictionStore.scan = scan


def measure(url: str, profile: Path, start: date, end: date, mode: str, tuning: str = "") -> dict:
    r = subprocess.run([sys.executable, __file__, "--_child", url, str(profile), start.isoformat(),
                        end.isoformat(), mode, tuning], capture_output=True, text=True)
    if r.returncode != 0:
        tail = (r.stderr.strip().splitlines() or ["(no output)"])[-1]
        return {"error": tail}
    return json.loads(r.stdout.strip().splitlines()[-1])


# ---- parent -------------------------------------------------------------------------------------


def write_data(args, work: Path, moto: MotoServer, kinds: list[str]) -> dict:
    from retrainer.predstore import COMPACT_PREFIX, PREDICTIONS, REPLACES_KEY, PredictionStore
    from retrainer.predstore.location import to_parquet

    stores = {k: PredictionStore(work / "local-store" if k == "local" else f"s3://{moto.bucket}/monitor/model")
              for k in kinds}
    for s in stores.values():
        s.days()
    spent = {k: 0.0 for k in kinds}
    gen = enc = 0.0
    size = 0
    for i in range(args.days):
        day = FIRST_DAY + timedelta(days=i)
        t = time.perf_counter()
        table = prediction_table(args.rows_per_day, day, seed=21, shift=0.3)
        table = table.replace_schema_metadata({REPLACES_KEY: "[]"})
        gen += time.perf_counter() - t
        t = time.perf_counter()
        data = to_parquet(table, "zstd", 131_072)
        enc += time.perf_counter() - t
        size += data.size
        del table
        for k, s in stores.items():
            t = time.perf_counter()
            s.location.write_bytes(f"{PREDICTIONS}/date={day.isoformat()}", data, prefix=COMPACT_PREFIX)
            spent[k] += time.perf_counter() - t
        print(f"  day {i + 1}/{args.days} written", flush=True)
    return {"stores": stores, "upload_s": spent, "bytes": size, "gen_s": gen, "encode_s": enc}


def fit_profile(work: Path) -> Path:
    from retrainer import schema as S
    from retrainer.drift import ReferenceProfile

    ref = prediction_table(PROFILE_ROWS, FIRST_DAY - timedelta(days=30), seed=3).to_pandas()
    monitored = list(S.MONITORED_FEATURES)
    prof = ReferenceProfile.fit(ref[[*monitored, "score"]], features=monitored, score_column="score")
    return prof.save(work / "profile.json")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--days", type=int, default=10)
    ap.add_argument("--rows-per-day", type=int, default=1_000_000)
    ap.add_argument("--windows", default="1,4,10", help="window lengths in days (streamed)")
    ap.add_argument("--baseline-windows", default="1,4", help="window lengths for the read-then-score baseline")
    ap.add_argument("--stores", default="local,s3")
    ap.add_argument("--tune", action="append", default=[],
                    help="extra streamed runs with scan() settings, e.g. batch_readahead=0,fragment_readahead=1 "
                         "(and memory_pool=system|jemalloc|mimalloc)")
    ap.add_argument("--_child", nargs=6, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args._child:
        child(*args._child)
        return 0
    try:
        windows = [int(x) for x in args.windows.split(",") if x.strip()]
        base_windows = [int(x) for x in args.baseline_windows.split(",") if x.strip()]
    except ValueError:
        print("error: --windows and --baseline-windows are comma-separated day counts", file=sys.stderr)
        return 2
    kinds = [k.strip() for k in args.stores.split(",") if k.strip()]
    if (args.days < 1 or args.rows_per_day < 1 or any(w < 1 or w > args.days for w in windows + base_windows)
            or not kinds or any(k not in ("local", "s3") for k in kinds)):
        print("error: windows must be 1..--days days; --stores is local and/or s3", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="bench-monitor-s3-"))
    moto = None
    try:
        moto = MotoServer(tmp=work, log=work / "moto.log")
        return _bench(args, kinds, windows, base_windows, work, moto)
    finally:
        if moto is not None:
            moto.close()
        shutil.rmtree(work, ignore_errors=True)


def _bench(args, kinds, windows, base_windows, work: Path, moto: MotoServer) -> int:
    import pyarrow as pa

    total = args.days * args.rows_per_day
    print(f"monitor drift window streamed from the prediction store: {args.days} days x {args.rows_per_day:,} rows "
          f"= {total:,} rows, stores {', '.join(kinds)} (moto {moto.url}), {os.cpu_count()} CPUs, pyarrow "
          f"{pa.__version__}; {load()}", flush=True)
    w = write_data(args, work, moto, kinds)
    mb = w["bytes"] / 1e6
    print(f"data: generated in {w['gen_s']:.1f} s, Parquet-encoded in {w['encode_s']:.1f} s, {mb:,.0f} MB "
          f"({w['bytes'] / total:.0f} bytes/row, {args.days} objects of {mb / args.days:.0f} MB)")
    for k in kinds:
        s = w["upload_s"][k]
        print(f"  write to {k:<5}: {s:6.1f} s  {mb / s:7.1f} MB/s  {total / s:12,.0f} rows/s")
    print(f"  moto server RSS after the upload: {moto.rss_mb():,.0f} MB; {load()}", flush=True)
    profile = fit_profile(work)

    last = FIRST_DAY + timedelta(days=args.days)
    results = []
    plan = [(k, n, "stream", "") for k in kinds for n in windows]
    plan += [(k, n, "pandas", "") for k in kinds for n in base_windows]
    plan += [(k, n, "stream", t) for t in args.tune for k in kinds for n in windows]
    for kind, n, mode, tuning in plan:
        url = str(work / "local-store") if kind == "local" else w["stores"][kind].url
        r0, c0 = moto.requests(), moto.cpu_s()
        m = measure(url, profile, last - timedelta(days=n), last, mode, tuning)
        r1, c1 = moto.requests(), moto.cpu_s()
        m["requests"] = sum(r1.values()) - sum(r0.values())
        m["moto_cpu_s"] = c1 - c0
        results.append((kind, n, mode, tuning, m))
        if "error" in m:
            print(f"  {kind:<5} {mode:<6} {n:>2} days: failed: {m['error']}", flush=True)
        else:
            print(f"  {kind:<5} {mode:<6} {n:>2} days {tuning}: {m['rows']:,} rows, {m['seconds']:.2f} s, "
                  f"peak RSS {m['peak_mb']:.0f} MB (+{m['growth_mb']:.0f} MB), {m['requests']} requests, CPU s: "
                  f"scorer {m['cpu_s']:.1f}, moto {m['moto_cpu_s']:.1f}", flush=True)

    print(f"\n{load()}\n")
    head = (f"{'store':<6} {'path':<28} {'window rows':>12} {'seconds':>8} {'rows/s':>11} {'peak RSS MB':>12} "
            f"{'growth MB':>10} {'requests':>9} {'CPU s':>6} {'moto CPU':>8}  vs baseline")
    print(head)
    print("-" * len(head))
    base = {(k, n): m for k, n, mode, t, m in results if mode == "pandas" and "error" not in m}
    for kind, n, mode, tuning, m in results:
        label = ("scan + score (streamed)" if mode == "stream" else "read() + score (baseline)") + (
            f" [{tuning}]" if tuning else "")
        if "error" in m:
            print(f"{kind:<6} {label:<28} {'failed: ' + m['error']}")
            continue
        note = ""
        b = base.get((kind, n))
        if mode == "stream" and b:
            less = b["growth_mb"] / max(m["growth_mb"], 1e-9)
            note = f"memory {less:.1f}x less, {b['seconds'] / m['seconds']:.2f}x the speed"
        print(f"{kind:<6} {label:<28} {m['rows']:>12,} {m['seconds']:>8.2f} {m['rows'] / m['seconds']:>11,.0f} "
              f"{m['peak_mb']:>12.0f} {m['growth_mb']:>10.0f} {m['requests']:>9} {m['cpu_s']:>6.1f} "
              f"{m['moto_cpu_s']:>8.1f}  {note}")
    for kind in kinds:
        s = sorted((n, m) for k, n, mode, t, m in results
                   if k == kind and mode == "stream" and not t and "error" not in m)
        if len(s) >= 2:
            a, b = s[0][1], s[-1][1]
            print(f"{kind}: streamed growth {a['growth_mb']:.0f} MB at {a['rows']:,} rows, {b['growth_mb']:.0f} MB at "
                  f"{b['rows']:,} rows ({b['growth_mb'] / max(a['growth_mb'], 1e-9):.2f}x for "
                  f"{b['rows'] / a['rows']:.0f}x the rows)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
