"""PSI benchmark: retrainer.drift against a plain per-column numpy loop and Evidently 0.7.

    python benchmarks/bench_psi.py [--rows 1000000 --cols 50] [--no-evidently] [--no-memory]

Makes float64 reference and current frames (rows x cols; current shifted on some columns),
writes both as Parquet (row groups of 100k rows) and times, in one run:
  - ours: fit the reference profile, score in memory, score streamed from the Parquet file;
  - "numpy-loop": a plain per-column loop computing the same PSI (quantile edges, searchsorted,
    bincount), checked to agree with ours;
  - Evidently's PSI stat test, a ValueDrift(method="psi") report and a DataDriftPreset(method=
    "psi") report, in benchmarks/.venv-evidently (created if absent: Evidently 0.7 needs
    pandas<3) via benchmarks/evidently_psi.py. The two reports run on a few columns and are
    scaled linearly to all columns (the output says so). Evidently's PSI bins differently
    (equal-width Sturges bins over both samples), so its values are not ours.
Then peak RSS growth of streamed scoring in fresh processes at --rows and 4x --rows, against
reading the whole window into pandas first, to show streaming memory stays flat.
Times are medians of --repeat runs, page cache warm.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from retrainer.drift import ReferenceProfile  # noqa: E402

EV_VENV = HERE / ".venv-evidently"
EV_SCRIPT = HERE / "evidently_psi.py"
ROW_GROUP = 100_000


# ---- data -------------------------------------------------------------------------------------


def make_columns(rows: int, cols: int, seed: int, shifted: bool, offset: int = 0) -> dict[str, np.ndarray]:
    """Mixed shapes: normal, lognormal, uniform, rounded (ties). Current: columns 0-4 shift by
    1 SD (large drift), columns 5-14 by 0.1 SD (small), the rest unchanged."""
    rng = np.random.default_rng([seed, offset])
    out = {}
    for j in range(cols):
        shift = (1.0 if j < 5 else 0.1 if j < 15 else 0.0) if shifted else 0.0
        kind = j % 4
        if kind == 0:
            x = rng.normal(shift, 1.0, rows)
        elif kind == 1:
            x = rng.lognormal(0.3 * shift, 0.5, rows)
        elif kind == 2:
            x = rng.uniform(0.0 + 0.3 * shift, 1.0 + 0.3 * shift, rows)
        else:
            x = np.round(rng.normal(50 + 5 * shift, 5, rows))
        out[f"f{j:02d}"] = x
    return out


def write_parquet(path: Path, rows: int, cols: int, seed: int, shifted: bool) -> None:
    """Written in row-group chunks, so a 4x window never sits in this process's memory."""
    writer = None
    for i, start in enumerate(range(0, rows, ROW_GROUP)):
        chunk = make_columns(min(ROW_GROUP, rows - start), cols, seed, shifted, offset=i)
        table = pa.table(chunk)
        writer = writer or pq.ParquetWriter(path, table.schema)
        writer.write_table(table, row_group_size=ROW_GROUP)
    writer.close()


def timed(fn, repeat: int):
    times, value = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        value = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), value


# ---- the plain baseline -----------------------------------------------------------------------


def numpy_loop(ref: pd.DataFrame, cur: pd.DataFrame, n_bins: int = 10) -> dict[str, float]:
    """The same PSI, written the obvious way: one column at a time."""
    q = np.arange(1, n_bins) / n_bins
    out = {}
    for c in ref.columns:
        r, x = ref[c].to_numpy(), cur[c].to_numpy()
        edges = np.unique(np.quantile(r[~np.isnan(r)], q))

        def hist(v):
            nan = np.isnan(v)
            return np.append(np.bincount(np.searchsorted(edges, v[~nan], side="left"),
                                         minlength=len(edges) + 1), nan.sum())

        rs, cs = hist(r) / len(r), hist(x) / len(x)
        rs[rs == 0] = 1e-4
        cs[cs == 0] = 1e-4
        out[c] = float(np.sum((cs - rs) * np.log(cs / rs)))
    return out


# ---- Evidently ----------------------------------------------------------------------------------


def evidently_python() -> tuple[Path | None, str]:
    py = EV_VENV / "bin" / "python"
    check = [str(py), "-c", "import evidently, pandas; print(evidently.__version__)"]
    if py.exists() and subprocess.run(check, capture_output=True).returncode == 0:
        return py, "existing venv"
    base = shutil.which("python3.11") or sys.executable
    print(f"creating {EV_VENV} (python3.11 -m venv; pip install evidently==0.7.* 'pandas<3' pyarrow) ...",
          flush=True)
    try:
        subprocess.run([base, "-m", "venv", str(EV_VENV)], check=True, capture_output=True, timeout=300)
        r = subprocess.run([str(py), "-m", "pip", "install", "-q", "evidently==0.7.*", "pandas<3", "pyarrow"],
                           capture_output=True, text=True, timeout=1800)
        if r.returncode != 0:
            return None, "pip install failed: " + (r.stderr.strip().splitlines() or ["?"])[-1]
        if subprocess.run(check, capture_output=True).returncode != 0:
            return None, "evidently installed but does not import"
        return py, "venv created"
    except Exception as exc:  # no python3.11, no network, timeout
        return None, f"{type(exc).__name__}: {exc}"


def run_evidently(ref_path: Path, cur_path: Path, args) -> tuple[dict | None, str]:
    py, why = evidently_python()
    if py is None:
        return None, why
    cmd = [str(py), str(EV_SCRIPT), "--ref", str(ref_path), "--cur", str(cur_path),
           "--stat-cols", str(args.ev_stat_cols), "--value-drift-cols", str(args.ev_value_drift_cols),
           "--preset-cols", str(args.ev_preset_cols)]
    env = {**os.environ, "EVIDENTLY_DISABLE_TELEMETRY": "1", "DO_NOT_TRACK": "1"}
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=3600)
    if r.returncode != 0:
        return None, "evidently_psi.py failed: " + (r.stderr.strip().splitlines() or ["?"])[-1]
    return json.loads(r.stdout.strip().splitlines()[-1]), why


# ---- memory (fresh child processes) -------------------------------------------------------------


def _status_kb(field: str) -> int:
    """VmRSS (now) or VmHWM (peak) of this process. Not ru_maxrss: that keeps the parent's
    peak across fork + exec, so a child of this big process would report the parent's RSS."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def mem_child(profile_path: str, data_path: str, mode: str) -> None:
    prof = ReferenceProfile.load(profile_path)
    import pyarrow.compute  # noqa: F401  (imports done before measuring)
    import scipy.spatial.distance  # noqa: F401
    import scipy.stats  # noqa: F401

    prof.score(pd.DataFrame({f.name: [0.0] for f in prof.features}))  # warm-up on one row

    before = _status_kb("VmRSS")
    t = time.perf_counter()
    if mode == "stream":
        report = prof.score(data_path)
    else:
        report = prof.score(pd.read_parquet(data_path))
    secs = time.perf_counter() - t
    peak = _status_kb("VmHWM")
    print(json.dumps({"growth_mb": (peak - before) / 1024, "seconds": secs, "rows": report.n_cur}))


def measure_memory(profile_path: Path, data_path: Path, mode: str) -> dict:
    r = subprocess.run([sys.executable, __file__, "--_mem-child", str(profile_path), str(data_path), mode],
                       capture_output=True, text=True, check=True)
    return json.loads(r.stdout.strip().splitlines()[-1])


# ---- main ---------------------------------------------------------------------------------------


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--cols", type=int, default=50)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-evidently", action="store_true")
    ap.add_argument("--no-memory", action="store_true")
    ap.add_argument("--ev-stat-cols", type=int, default=-1, help="columns for the stat test (-1 all)")
    ap.add_argument("--ev-value-drift-cols", type=int, default=10)
    ap.add_argument("--ev-preset-cols", type=int, default=3)
    ap.add_argument("--workdir", type=Path, default=None, help="where the Parquet files go (default: a temp dir)")
    ap.add_argument("--_mem-child", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args._mem_child:
        mem_child(*args._mem_child)
        return 0

    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-psi-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        return _bench(args, work)
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)


def _bench(args, work: Path) -> int:
    rows, cols = args.rows, args.cols
    print(f"PSI benchmark: {rows:,} rows x {cols} float64 columns, reference vs current, "
          f"{os.cpu_count()} CPUs, numpy {np.__version__}, pandas {pd.__version__}, repeat {args.repeat}",
          flush=True)
    ref_path, cur_path = work / "ref.parquet", work / "cur.parquet"
    t = time.perf_counter()
    write_parquet(ref_path, rows, cols, seed=1, shifted=False)
    write_parquet(cur_path, rows, cols, seed=2, shifted=True)
    ref = pq.read_table(ref_path).to_pandas()
    cur = pq.read_table(cur_path).to_pandas()
    print(f"data written and loaded in {time.perf_counter() - t:.1f} s ({work})", flush=True)

    fit_s, profile = timed(lambda: ReferenceProfile.fit(ref), args.repeat)
    profile.score(cur.iloc[:1000])  # warm-up: lazy scipy import
    score_s, report = timed(lambda: profile.score(cur), args.repeat)
    stream_s, streamed = timed(lambda: profile.score(cur_path), args.repeat)
    loop_s, loop_psi = timed(lambda: numpy_loop(ref, cur), args.repeat)
    read_s, _ = timed(lambda: [float(cur[c].to_numpy().sum()) for c in cur.columns], args.repeat)

    ours = {r.feature: r.psi for r in report}
    diff = max(abs(ours[c] - loop_psi[c]) for c in loop_psi)
    same_stream = streamed.to_records(detail=True) == report.to_records(detail=True)
    print(f"check: max |PSI ours - numpy-loop| = {diff:.2e}; streamed == in-memory: {same_stream}; "
          f"drifted: {len(report.drifted())} of {cols} (large shift on 5, small on 10)", flush=True)

    rows_out = [  # (label, seconds, note)
        ("ours: fit reference profile (in memory)", fit_s, ""),
        ("ours: score current (in memory)", score_s, ""),
        ("ours: score current streamed from Parquet", stream_s, "incl. read + decode"),
        ("ours: fit + score (in memory)", fit_s + score_s, ""),
        ("numpy-loop: fit + score", loop_s, "per-column quantile+searchsorted+bincount"),
        ("one read of the current window (sum)", read_s, "memory-bandwidth floor"),
    ]
    ev_ref = None
    if not args.no_evidently:
        print("running Evidently (separate venv; this takes a minute or more) ...", flush=True)
        ev, why = run_evidently(ref_path, cur_path, args)
        if ev is None:
            print(f"Evidently skipped: {why}")
        else:
            for key, label in (("stat_test", "Evidently: PSI stat test (function only)"),
                               ("value_drift", 'Evidently: ValueDrift(method="psi") report'),
                               ("preset", 'Evidently: DataDriftPreset(method="psi") report')):
                part = ev.get(key)
                if not part:
                    continue
                scaled = part["seconds"] * cols / part["cols"]
                note = (f"measured on {part['cols']} cols ({part['seconds']:.1f} s), scaled x{cols / part['cols']:g}"
                        if part["cols"] != cols else f"all {cols} cols")
                rows_out.append((label, scaled, note))
                if key == "stat_test":
                    ev_ref = scaled
            print(f"Evidently {ev['evidently']} (pandas {ev['pandas']}): import {ev['import_s']:.1f} s, "
                  f"Parquet load {ev['load_s']:.1f} s (not counted)")

    print()
    width = max(len(r[0]) for r in rows_out)
    head = f"{'step':<{width}}  {'seconds':>9}  {'numpy-loop/this':>15}  {'Evidently-PSI/this':>18}  note"
    print(head)
    print("-" * len(head))
    for label, secs, note in rows_out:
        ev_ratio = f"{ev_ref / secs:18.1f}" if ev_ref else f"{'-':>18}"
        print(f"{label:<{width}}  {secs:9.3f}  {loop_s / secs:15.1f}  {ev_ratio}  {note}")

    if not args.no_memory:
        print()
        profile_path = profile.save(work / "profile.json")
        big = work / "cur4x.parquet"
        write_parquet(big, 4 * rows, cols, seed=2, shifted=True)
        print("peak RSS growth while scoring, fresh process each (profile loaded first):")
        for mode, label in (("stream", "streamed from Parquet"), ("pandas", "pd.read_parquet, then score")):
            for n, path in ((rows, cur_path), (4 * rows, big)):
                m = measure_memory(profile_path, path, mode)
                print(f"  {label:<28} {n:>11,} rows: {m['growth_mb']:8.0f} MB  ({m['seconds']:.2f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
