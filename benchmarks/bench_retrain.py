"""Retrain flow on 100k and 1M rows: time per stage and Prefect's share of wall time.

    .venv/bin/python benchmarks/bench_retrain.py [--sizes 100000 1000000] [--months 10]

Baseline (named "plain"): the same domain steps called directly, no Prefect, in the same run.
The flow runs on Prefect's ephemeral API (started once and warmed up before timing). Per-stage
times inside the flow come from the task runs' own durations as recorded by Prefect.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def plain(data: Path, home: Path) -> dict[str, float]:
    """The domain steps of one retrain, timed, without Prefect."""
    from retrainer import evaluation, lifecycle
    from retrainer.backends import get_backend
    from retrainer.dataio import load_batch, parquet_files, time_split
    from retrainer.settings import load_settings
    from retrainer.training import load_model
    from retrainer.validation import validate_frame

    t: dict[str, float] = {}
    settings = load_settings(home=home)
    backend = get_backend(settings)
    s = time.perf_counter()
    frame = load_batch(data)
    t["load-data"] = time.perf_counter() - s
    s = time.perf_counter()
    result = validate_frame(frame, settings.validation)
    assert result.success, result.failure_lines()
    t["validate-data"] = time.perf_counter() - s
    s = time.perf_counter()
    split = time_split(frame, settings.split)
    t["time-split"] = time.perf_counter() - s
    s = time.perf_counter()
    model_dir = backend.trainer.fit(split.train, split.validation, settings.model.model_dump(),
                                    Path(tempfile.mkdtemp()))
    t["train-candidate"] = time.perf_counter() - s
    s = time.perf_counter()
    cand = evaluation.evaluate(load_model(model_dir), split.test)
    t["evaluate"] = time.perf_counter() - s
    s = time.perf_counter()
    params = settings.model.model_dump()
    fp = lifecycle.fingerprint(split.train, params)
    decision, parent = lifecycle.choose_version(backend.registry, fp)
    gate = evaluation.promotion_gate(cand, None, settings.gate)
    rec = lifecycle.build_record(decision=decision, parent=parent, fp=fp, trigger="manual", params=params,
                                 metrics={"candidate": cand, "production": None},
                                 data=lifecycle.data_summary(frame, split, [str(p) for p in parquet_files(data)]),
                                 validation=result.summary(), gate=gate.to_dict(), has_production=False)
    backend.registry.register(rec, model_dir, actor="bench")
    t["register-model"] = time.perf_counter() - s
    return t


def with_prefect(data: Path, home: Path) -> tuple[float, dict[str, float]]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    from flows.retrain import retrain

    s = time.perf_counter()
    state = retrain(data=str(data), home=str(home), return_state=True)
    wall = time.perf_counter() - s
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id])))
    stages = {}
    for r in runs:
        name = r.name.rsplit("-", 1)[0]
        stages[name] = stages.get(name, 0.0) + (r.total_run_time.total_seconds() if r.total_run_time else 0.0)
    return wall, stages


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--months", type=int, default=10)
    a = ap.parse_args()

    from prefect import flow

    from retrainer.datagen import GenerationSpec, generate

    @flow
    def warm() -> int:
        return 1

    s = time.perf_counter()
    warm()
    print(f"ephemeral Prefect API start + first flow: {time.perf_counter() - s:.1f} s (not counted below)")

    root = Path(tempfile.mkdtemp(prefix="bench-retrain-"))
    # Warm both paths (GX, scikit-learn and pyarrow imports, first-call costs) on a tiny batch.
    generate(root / "warm", GenerationSpec(months=a.months, rows_per_month=700, seed=1))
    plain(root / "warm", root / "home-warm-plain")
    with_prefect(root / "warm", root / "home-warm-flow")
    try:
        for n in a.sizes:
            data = root / f"data-{n}"
            s = time.perf_counter()
            generate(data, GenerationSpec(months=a.months, rows_per_month=n // a.months, seed=5))
            print(f"\n== {n:,} rows ({a.months} months; generated in {time.perf_counter() - s:.1f} s) ==")
            base = plain(data, root / f"home-plain-{n}")
            plain_total = sum(base.values())
            wall, stages = with_prefect(data, root / f"home-flow-{n}")
            print(f"{'stage':<18}{'plain s':>10}{'in flow s':>11}")
            for k, v in base.items():
                print(f"{k:<18}{v:>10.2f}{stages.get(k, float('nan')):>11.2f}")
            work = sum(stages.values())
            print(f"{'total':<18}{plain_total:>10.2f}{work:>11.2f}")
            print(f"flow wall time {wall:.2f} s; plain (baseline) {plain_total:.2f} s; "
                  f"ratio flow/plain {wall / plain_total:.2f}; Prefect's share of wall time "
                  f"{max(wall - work, 0) / wall:.1%} ({max(wall - work, 0):.2f} s outside task bodies)")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
