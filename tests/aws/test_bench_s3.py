"""The S3 benchmarks (benchmarks/bench_s3_store.py, bench_monitor_s3.py) at toy sizes: each starts
its own moto server and runs to the end as a real process; their generated rows are what the
store accepts. Numbers are not asserted (they are the benchmarks' output), only what must hold
whatever the machine: rows read back, request counts per captured file, bad input refused."""
from __future__ import annotations

import re
import subprocess
import sys
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "benchmarks"


def run(script: str, *args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(BENCH / script), *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


def test_generated_rows_are_what_the_store_accepts(tmp_path):
    sys.path.insert(0, str(BENCH))
    try:
        from s3common import prediction_table
    finally:
        sys.path.remove(str(BENCH))
    from retrainer.predstore import PredictionStore, prediction_schema, traffic_filter

    day = date(2026, 11, 2)
    table = prediction_table(500, day, seed=1)
    assert table.schema.equals(prediction_schema())
    store = PredictionStore(tmp_path / "store")
    assert store.write_records(table.to_pandas()) == 500  # passes the de-identification check
    back = store.read(day, date(2026, 11, 3))
    assert len(back) == 500 and back["admission_pseudonym"].str.fullmatch(r"[0-9a-f]{32}").all()
    assert back["age"].max() <= 90
    routed = store.scan(day, date(2026, 11, 3), where=traffic_filter("1.0.0")).count()
    assert routed == int((~back["targeted"]).sum()) and 0 < routed < 500


def test_bench_s3_store_end_to_end():
    r = run("bench_s3_store.py", "--files", "6", "--rows-per-file", "20", "--repeat", "1")
    assert r.returncode == 0, r.stderr[-2000:]
    out = r.stdout
    assert "compaction: 6 files -> 1 (120 rows)" in out
    assert re.search(r"objects before compaction\s+6\s+6\s+6", out), out
    assert re.search(r"objects after compaction\s+1\s+1\s+1", out), out
    # the store uploads each small file as one PutObject (allow_delayed_open); without it pyarrow's
    # output stream makes a 3-request multipart upload
    assert re.search(r"s3\s+1\.0 requests per captured file", out), out
    assert re.search(r"s3-multipart\s+3\.0 requests per captured file", out), out


def test_bench_monitor_s3_end_to_end():
    r = run("bench_monitor_s3.py", "--days", "2", "--rows-per-day", "3000", "--windows", "1,2",
            "--baseline-windows", "1", "--tune", "batch_rows=500,memory_pool=system")
    assert r.returncode == 0, r.stderr[-2000:]
    out = r.stdout
    assert "failed" not in out, out
    rows = {}
    for store, path, n in re.findall(r"^(local|s3)\s+(scan \+ score \(streamed\)|read\(\) \+ score \(baseline\))"
                                     r"\s+([\d,]+)", out, re.M):
        rows.setdefault((store, path), []).append(int(n.replace(",", "")))
    streamed, baseline = "scan + score (streamed)", "read() + score (baseline)"
    # the same window scored both ways counts the same rows, on both stores; two days > one day
    assert rows[("local", streamed)][0] == rows[("local", baseline)][0] == rows[("s3", streamed)][0] \
        == rows[("s3", baseline)][0] > 0
    assert rows[("s3", streamed)][1] == rows[("local", streamed)][1] > rows[("s3", streamed)][0]
    # the --tune runs (scan with other batch settings, another Arrow memory pool) count the same rows
    tuned = re.findall(r"^(local|s3)\s+scan \+ score \(streamed\) \[batch_rows=500,memory_pool=system\]\s+([\d,]+)",
                       out, re.M)
    assert sorted(int(n.replace(",", "")) for _, n in tuned) == sorted(
        rows[("local", streamed)] + rows[("s3", streamed)])


def test_bad_arguments_are_one_line():
    for script, args in (("bench_monitor_s3.py", ["--days", "2", "--windows", "3"]),
                         ("bench_s3_store.py", ["--stores", "gcs"])):
        r = run(script, *args, timeout=60)
        assert r.returncode == 2
        assert r.stderr.strip().startswith("error:") and len(r.stderr.strip().splitlines()) == 1
        assert "Traceback" not in r.stderr
