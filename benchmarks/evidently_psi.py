"""Time Evidently's PSI on the Parquet files bench_psi.py wrote. Runs inside
benchmarks/.venv-evidently (Evidently 0.7 needs pandas<3); prints one JSON object on stdout.

    python evidently_psi.py --ref ref.parquet --cur cur.parquet [--stat-cols N]
        [--value-drift-cols N] [--preset-cols N] [--repeat R]

Each part runs on the first N columns (0 skips it, -1 means all); bench_psi.py scales to all.
Times exclude the Parquet reads and the imports.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import warnings

os.environ.setdefault("EVIDENTLY_DISABLE_TELEMETRY", "1")
warnings.filterwarnings("ignore")


def _cols(all_cols, n):
    return list(all_cols) if n < 0 else list(all_cols)[:n]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ref", required=True)
    ap.add_argument("--cur", required=True)
    ap.add_argument("--stat-cols", type=int, default=-1)
    ap.add_argument("--value-drift-cols", type=int, default=10)
    ap.add_argument("--preset-cols", type=int, default=3)
    ap.add_argument("--repeat", type=int, default=1)
    args = ap.parse_args(argv)

    t = time.perf_counter()
    import evidently
    import pandas as pd
    from evidently import Report
    from evidently.legacy.calculations.stattests import psi_stat_test
    from evidently.legacy.core import ColumnType
    from evidently.metrics import ValueDrift
    from evidently.presets import DataDriftPreset
    out = {"evidently": evidently.__version__, "pandas": pd.__version__,
           "import_s": time.perf_counter() - t}

    t = time.perf_counter()
    ref = pd.read_parquet(args.ref)
    cur = pd.read_parquet(args.cur)
    out["load_s"] = time.perf_counter() - t
    out["rows"], out["cols"] = len(cur), cur.shape[1]

    def timed(fn):
        times = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            value = fn()
            times.append(time.perf_counter() - t0)
        return statistics.median(times), value

    if args.stat_cols:
        cols = _cols(ref.columns, args.stat_cols)

        def stat():
            return {c: float(psi_stat_test(ref[c], cur[c], ColumnType.Numerical, 0.2).drift_score) for c in cols}

        secs, psi = timed(stat)
        out["stat_test"] = {"cols": len(cols), "seconds": secs, "psi": psi}

    if args.value_drift_cols:
        cols = _cols(ref.columns, args.value_drift_cols)

        def value_drift():
            Report([ValueDrift(column=c, method="psi") for c in cols]).run(cur[cols], ref[cols])

        secs, _ = timed(value_drift)
        out["value_drift"] = {"cols": len(cols), "seconds": secs}

    if args.preset_cols:
        cols = _cols(ref.columns, args.preset_cols)

        def preset():
            Report([DataDriftPreset(columns=cols, method="psi")]).run(cur[cols], ref[cols])

        secs, _ = timed(preset)
        out["preset"] = {"cols": len(cols), "seconds": secs}

    json.dump(out, sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
