"""Prediction store on S3 (moto) against the same store on local disk (the baseline), on demand:

    .venv/bin/python benchmarks/bench_s3_store.py [--files 1000] [--rows-per-file 500] [--repeat 3]

Starts its own moto server (subprocess, 127.0.0.1, free port, its request log kept to count
requests), makes `--files x --rows-per-file` de-identified prediction rows of one day
(benchmarks/s3common.py) and, for each store in turn:

1. writes them as capture does: one `store.write_records(frame)` per file (the capture writer's
   call: cast to the schema, de-identification check, Parquet encode, one upload). The default
   500 rows is what the capture writer writes under load (`serving.capture_flush_rows` 1000 / 2);
2. reads the day back with `store.read()` (median of --repeat), objects and bytes listed;
3. `store.compact()` (timed once: it is destructive), objects listed again;
4. reads the day back after compaction (median of --repeat).

Stores: `local` (a directory: the named baseline), `s3` (s3://bucket/prefix through pyarrow's S3
filesystem as `S3Location` builds it, with `allow_delayed_open=True`: a file smaller than one
multipart part goes up as a single PutObject) and `s3-multipart` (the same without that option,
as first written: CreateMultipartUpload + UploadPart + CompleteMultipartUpload per file). Each phase's
requests are counted from moto's log, so they can be priced and timed for real S3.

moto runs on the same 2 cores as the client, over loopback: per-request latency here is well
under a millisecond of network plus moto's Python handling; real S3 adds ~10-30 ms per request.
The output prints the load average before and after (quote figures from a quiet machine).
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from s3common import MotoServer, local_objects, prediction_table  # noqa: E402

from retrainer.predstore import PredictionStore  # noqa: E402
from retrainer.predstore.location import S3Location  # noqa: E402

DAY = date(2026, 11, 2)
PUT_PER_1000 = 0.005  # S3 Standard list price, us-east-1: PUT/COPY/POST/LIST per 1,000 requests
GET_PER_1000 = 0.0004  # GET/SELECT (and HEAD) per 1,000 requests


def load() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def make_store(kind: str, work: Path, moto: MotoServer) -> PredictionStore:
    if kind == "local":
        return PredictionStore(work / "local-store")
    loc = S3Location(f"s3://{moto.bucket}/{kind}/model")
    if kind == "s3-multipart":
        import pyarrow.fs as pafs

        host = moto.url.split("://", 1)[1]  # as S3Location builds it, without delayed open
        loc._fs = pafs.S3FileSystem(region="us-east-1", endpoint_override=host, scheme="http",
                                    connect_timeout=loc.connect_timeout, request_timeout=loc.request_timeout,
                                    retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=loc.max_attempts),
                                    allow_delayed_open=False)
    return PredictionStore(loc)


def diff(after: dict, before: dict) -> dict:
    return {k: after.get(k, 0) - before.get(k, 0) for k in after if after.get(k, 0) - before.get(k, 0)}


def priced(reqs: dict) -> float:
    puts = reqs.get("PUT", 0) + reqs.get("POST", 0) + reqs.get("LIST", 0)
    gets = reqs.get("GET", 0) + reqs.get("HEAD", 0)
    return puts * PUT_PER_1000 / 1000 + gets * GET_PER_1000 / 1000


def fmt_reqs(reqs: dict) -> str:
    return " ".join(f"{k} {v}" for k, v in sorted(reqs.items())) or "-"


def run_store(kind: str, frames, work: Path, moto: MotoServer, repeat: int) -> dict:
    store = make_store(kind, work, moto)
    store.days()  # S3: the start-up check and the filesystem, outside the timings
    rows = sum(len(f) for f in frames)
    objects = (lambda: local_objects(store.root)) if kind == "local" else (lambda: moto.objects(f"{kind}/"))
    r0 = moto.requests()
    lat = []
    t0 = time.perf_counter()
    for f in frames:
        t = time.perf_counter()
        store.write_records(f)
        lat.append(time.perf_counter() - t)
    write_s = time.perf_counter() - t0
    r1 = moto.requests()
    n_before, bytes_before = objects()

    def read_once():
        t = time.perf_counter()
        got = len(store.read(DAY, DAY + timedelta(days=1)))
        return time.perf_counter() - t, got

    reads = [read_once() for _ in range(repeat)]
    r2 = moto.requests()
    assert all(g == rows for _, g in reads), f"{kind}: read {reads[0][1]} rows of {rows}"
    t = time.perf_counter()
    summary = store.compact()
    compact_s = time.perf_counter() - t
    r3 = moto.requests()
    n_after, bytes_after = objects()
    reads_after = [read_once() for _ in range(repeat)]
    r4 = moto.requests()
    assert all(g == rows for _, g in reads_after), f"{kind}: read {reads_after[0][1]} rows after compaction"
    lat.sort()
    return {
        "kind": kind, "rows": rows, "files": len(frames), "write_s": write_s,
        "put_ms_p50": 1000 * statistics.median(lat), "put_ms_p99": 1000 * lat[int(0.99 * (len(lat) - 1))],
        "objects_before": n_before, "bytes_before": bytes_before, "objects_after": n_after,
        "bytes_after": bytes_after, "read_before_s": statistics.median(s for s, _ in reads),
        "compact_s": compact_s, "compact": summary, "read_after_s": statistics.median(s for s, _ in reads_after),
        "req_write": diff(r1, r0), "req_read_before": {k: v // repeat for k, v in diff(r2, r1).items()},
        "req_compact": diff(r3, r2), "req_read_after": {k: v // repeat for k, v in diff(r4, r3).items()},
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=1000)
    ap.add_argument("--rows-per-file", type=int, default=500)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--stores", default="local,s3,s3-multipart")
    args = ap.parse_args(argv)
    if args.files < 2 or args.rows_per_file < 1 or args.repeat < 1:
        print("error: --files must be at least 2, --rows-per-file and --repeat at least 1", file=sys.stderr)
        return 2
    kinds = [k.strip() for k in args.stores.split(",") if k.strip()]
    bad = [k for k in kinds if k not in ("local", "s3", "s3-multipart")]
    if bad or not kinds:
        print(f"error: unknown store(s) {', '.join(bad) or '(none)'}: choose from local, s3, s3-multipart",
              file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="bench-s3-store-"))
    moto = None
    try:
        moto = MotoServer(tmp=work, log=work / "moto.log")
        return _bench(args, kinds, work, moto)
    finally:
        if moto is not None:
            moto.close()
        shutil.rmtree(work, ignore_errors=True)


def _bench(args, kinds, work: Path, moto: MotoServer) -> int:
    import pyarrow as pa

    n = args.files * args.rows_per_file
    print(f"prediction store on S3 (moto {moto.url}) vs local disk: {args.files:,} files x "
          f"{args.rows_per_file:,} rows = {n:,} rows of one day, {os.cpu_count()} CPUs, pyarrow "
          f"{pa.__version__}; {load()}", flush=True)
    t = time.perf_counter()
    table = prediction_table(n, DAY, seed=11)
    frames = [table.slice(i * args.rows_per_file, args.rows_per_file).to_pandas() for i in range(args.files)]
    del table
    print(f"rows generated in {time.perf_counter() - t:.1f} s (not counted)", flush=True)

    results = {}
    for kind in kinds:
        print(f"{kind}: writing, reading, compacting ...", flush=True)
        results[kind] = run_store(kind, frames, work, moto, args.repeat)
    print(f"moto server RSS at the end: {moto.rss_mb():.0f} MB; {load()}")

    base = results.get("local")
    print()
    cols = list(results)
    width = 34
    print(f"{'':<{width}}" + "".join(f"{k:>18}" for k in cols) + ("".join(f"{k + '/local':>22}" for k in cols[1:])
                                                                    if base else ""))

    def line(label, fn, fmt="{:,.0f}", ratio=True):
        vals = [fn(results[k]) for k in cols]
        s = f"{label:<{width}}" + "".join(f"{fmt.format(v):>18}" for v in vals)
        if base and ratio:
            s += "".join(f"{(v / vals[0] if vals[0] else float('nan')):>21.2f}x" for v in vals[1:])
        print(s)

    line("write: rows/s", lambda r: r["rows"] / r["write_s"])
    line("write: files/s", lambda r: r["files"] / r["write_s"], "{:,.1f}")
    line("write: ms per file p50", lambda r: r["put_ms_p50"], "{:.2f}")
    line("write: ms per file p99", lambda r: r["put_ms_p99"], "{:.2f}")
    line("objects before compaction", lambda r: r["objects_before"], ratio=False)
    line("MB before compaction", lambda r: r["bytes_before"] / 1e6, "{:.1f}", ratio=False)
    line("read() day: rows/s, before", lambda r: r["rows"] / r["read_before_s"])
    line("read() day: seconds, before", lambda r: r["read_before_s"], "{:.2f}")
    line("compact(): seconds", lambda r: r["compact_s"], "{:.2f}")
    line("compact(): rows/s", lambda r: r["rows"] / r["compact_s"])
    line("objects after compaction", lambda r: r["objects_after"], ratio=False)
    line("MB after compaction", lambda r: r["bytes_after"] / 1e6, "{:.1f}", ratio=False)
    line("read() day: rows/s, after", lambda r: r["rows"] / r["read_after_s"])
    line("read() day: seconds, after", lambda r: r["read_after_s"], "{:.3f}")
    line("read speed-up from compaction", lambda r: r["read_before_s"] / r["read_after_s"], "{:.1f}x", ratio=False)

    s3kinds = [k for k in cols if k != "local"]
    if s3kinds:
        print("\nrequests moto answered per phase (reads: per read()), and their price at S3 Standard list prices "
              f"(${PUT_PER_1000}/1000 PUT/POST/LIST, ${GET_PER_1000}/1000 GET/HEAD; DELETE free):")
        for k in s3kinds:
            r = results[k]
            for phase, label in (("req_write", "write"), ("req_read_before", "read before"),
                                 ("req_compact", "compact"), ("req_read_after", "read after")):
                reqs = r[phase]
                print(f"  {k:<16} {label:<12} {sum(reqs.values()):>7,} requests  ({fmt_reqs(reqs)})"
                      f"  ${priced(reqs):.4f}")
            w = sum(r["req_write"].values()) / r["files"]
            print(f"  {k:<16} {w:.1f} requests per captured file")
        print("\nat real S3's ~10-30 ms per request, one writer uploading serially (as the capture writer does):")
        for k in s3kinds:
            w = sum(results[k]["req_write"].values()) / results[k]["files"]
            lo, hi = args.rows_per_file / (w * 0.030), args.rows_per_file / (w * 0.010)
            here = results[k]["rows"] / results[k]["write_s"]
            print(f"  {k:<16} {w:.0f} round trips per file -> about {lo:,.0f}-{hi:,.0f} rows/s per writer "
                  f"at {args.rows_per_file} rows per file (moto here: {here:,.0f})")
    c = next(iter(results.values()))["compact"]
    print(f"\ncompaction: {c['files_in']} files -> {c['files_out']} ({c['rows']:,} rows); {load()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
