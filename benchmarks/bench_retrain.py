"""Retrain flow on 100k and 1M rows: time per stage and Prefect's share of wall time.

    .venv/bin/python benchmarks/bench_retrain.py [--sizes 100000 1000000] [--months 10] [--repeats 3]
    .venv/bin/python benchmarks/bench_retrain.py --model lead-scoring --sizes 1000000 --months 14

`--model` picks the model spec (default readmission-30d); its data come from its spec's generator
(`--months` is then the number of that model's periods: days for lead-scoring).

Baseline (named "plain"): the flow's domain steps called directly, no Prefect, in the same run, on
the same data, each side into a fresh home (empty registry) every repeat. Both sides run, in order
(flows/retrain.py `retrain`, tasks in tasks/lifecycle.py):

    setup            load_settings(home) + get_backend(settings)       (flow body, outside any task)
    load-data        load_batch(data) + parquet_files(data)
    validate-data    validate_frame(frame, settings.validation) + result.to_markdown() + result.summary()
    time-split       time_split(frame, settings.split)
    check-duplicate  load_triggers(settings.triggers_file) + fingerprint(train, params)
                     + duplicate_decision(..., records=registry.list(), window=policy.dedupe_window)
    train-candidate  backend.trainer.fit(train, validation, params, mkdtemp())
    reference-profile  fit_reference_profile(load_model(dir), train, validation, settings, meta) + save
    evaluate         lifecycle.evaluate_against_production(registry, dir, test)  (the task's one call)
    register-model   lifecycle.register_candidate(registry, dir, ...)  (the task's one call)
    publish-report   comparison_table(...) + version_card(record)  (the two artifacts' contents)

Left out of the baseline, because they are Prefect's own bookkeeping: the flow/task run state
calls, the `retrain-<model>` global concurrency slot, the flow run's created time (the baseline uses
its own start time), the log filter, and sending the three artifacts (validation markdown,
champion/challenger table, version card) to the API - their contents are still rendered.

The flow runs on Prefect's ephemeral API (started once and warmed up before timing). Per-stage
times inside the flow come from the task runs' own durations as recorded by Prefect; the flow's
"setup" is not a task, so it counts in the time outside task bodies. Each size is run --repeats
times, alternating which side goes first; the figures printed at the end are medians.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

STAGES = ("load-data", "validate-data", "time-split", "check-duplicate", "train-candidate",
          "reference-profile", "evaluate", "register-model", "publish-report")


def plain(data: Path, home: Path, trigger: str = "manual", actor: str = "retrainer") -> tuple[float, dict[str, float]]:
    """One retrain without Prefect: the flow's domain calls in the flow's order (see the module
    docstring). Returns (wall time including setup, seconds per stage)."""
    from retrainer import evaluation, lifecycle, triggers
    from retrainer.backends import get_backend
    from retrainer.dataio import load_batch, parquet_files, time_split
    from retrainer.settings import load_settings
    from retrainer.training import load_model
    from retrainer.validation import validate_frame

    t: dict[str, float] = {}

    @contextmanager
    def stage(name: str):
        s = time.perf_counter()
        yield
        t[name] = time.perf_counter() - s

    wall_start = time.perf_counter()
    with stage("setup"):
        settings = load_settings(home=home)
        backend = get_backend(settings)
        created_at = datetime.now(timezone.utc)
        context: dict = {}
    with stage("load-data"):
        frame, files = load_batch(data), [str(p) for p in parquet_files(data)]
    with stage("validate-data"):
        result = validate_frame(frame, settings.validation)
        result.to_markdown()
        if not result.success:
            raise RuntimeError(f"data failed validation: {result.failure_lines()[:3]}")
        validation = result.summary()
    with stage("time-split"):
        split = time_split(frame, settings.split)
    with stage("check-duplicate"):
        policy = triggers.load_triggers(settings.triggers_file).policy
        fp = lifecycle.fingerprint(split.train, settings.model.model_dump())
        duplicate = triggers.duplicate_decision(
            schema_hash=fp.schema_hash, data_hash=fp.data_hash, params_hash=fp.params_hash,
            records=backend.registry.list(), run_created_at=created_at,
            now=datetime.now(timezone.utc), window=policy.dedupe_window, trigger=trigger)
    if duplicate.duplicate:
        raise RuntimeError(f"unexpected duplicate in a fresh home: {duplicate.reason}")
    with stage("train-candidate"):
        workdir = Path(tempfile.mkdtemp(prefix="retrainer-train-"))
        model_dir = str(backend.trainer.fit(split.train, split.validation, settings.model.model_dump(), workdir))
    with stage("reference-profile"):
        profile = triggers.fit_reference_profile(
            load_model(model_dir), split.train, split.validation, settings,
            meta={"model_name": settings.model_name, "trigger": trigger, "months": split.months})
        profile.save(Path(model_dir) / triggers.PROFILE_FILE)
    with stage("evaluate"):
        metrics = lifecycle.evaluate_against_production(backend.registry, model_dir, split.test)
    with stage("register-model"):
        record = lifecycle.register_candidate(
            backend.registry, model_dir, frame=frame, files=files, split=split, metrics=metrics,
            validation=validation, trigger=trigger, settings=settings, actor=actor, context=context)
    with stage("publish-report"):
        m = record.metrics
        prod_version = (m.get("production") or {}).get("version")
        evaluation.comparison_table(m["candidate"], m.get("production"), record.version, prod_version)
        lifecycle.version_card(record)
    return time.perf_counter() - wall_start, t


def with_prefect(data: Path, home: Path) -> tuple[float, dict[str, float]]:
    """One retrain flow run. Returns (flow wall time, seconds per task as recorded by Prefect)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    from flows.retrain import retrain

    s = time.perf_counter()
    state = retrain(data=str(data), home=str(home), return_state=True)
    wall = time.perf_counter() - s
    summary = state.result()
    assert summary["status"] != "skipped", summary
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id])))
    stages: dict[str, float] = {}
    for r in runs:
        name = r.name.rsplit("-", 1)[0]
        stages[name] = stages.get(name, 0.0) + (r.total_run_time.total_seconds() if r.total_run_time else 0.0)
    missing = set(STAGES) - set(stages)
    assert not missing, f"flow ran no task for {sorted(missing)} - the baseline no longer matches the flow"
    return wall, stages


def med(xs: list[float]) -> float:
    return statistics.median(xs)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--months", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3, help="runs of each side per size; medians reported")
    ap.add_argument("--model", default="readmission-30d", help="the model spec (models/<name>.yaml)")
    a = ap.parse_args()
    os.environ["RETRAINER_MODEL_NAME"] = a.model  # settings, the contract and the flow runs follow it

    from prefect import flow

    from retrainer.datagen import generate_for_model

    def generate(out, rows_per_period: int, seed: int):
        """The model's periods (`--months` of them), ~`rows_per_period` rows each."""
        return generate_for_model(a.model, out, periods=a.months, rows_per_period=rows_per_period, seed=seed)

    @flow
    def warm() -> int:
        return 1

    s = time.perf_counter()
    warm()
    print(f"ephemeral Prefect API start + first flow: {time.perf_counter() - s:.1f} s (not counted below)")

    root = Path(tempfile.mkdtemp(prefix="bench-retrain-"))
    # Warm both paths (GX, scikit-learn and pyarrow imports, first-call costs) on a tiny batch.
    generate(root / "warm", 700, 1)
    plain(root / "warm", root / "home-warm-plain")
    with_prefect(root / "warm", root / "home-warm-flow")
    try:
        for n in a.sizes:
            data = root / f"data-{n}"
            s = time.perf_counter()
            generate(data, n // a.months, 5)
            print(f"\n== {a.model}: {n:,} rows ({a.months} periods; generated in {time.perf_counter() - s:.1f} s; "
                  f"{a.repeats} repeats) ==")
            plain_runs: list[tuple[float, dict[str, float]]] = []
            flow_runs: list[tuple[float, dict[str, float]]] = []
            for i in range(a.repeats):
                order = ("plain", "flow") if i % 2 == 0 else ("flow", "plain")
                for side in order:
                    if side == "plain":
                        plain_runs.append(plain(data, root / f"home-plain-{n}-{i}"))
                    else:
                        flow_runs.append(with_prefect(data, root / f"home-flow-{n}-{i}"))
                pw, fw = plain_runs[-1][0], flow_runs[-1][0]
                ft = flow_runs[-1][1]
                print(f"repeat {i + 1} ({order[0]} first): flow {fw:.2f} s (tasks {sum(ft.values()):.2f} s), "
                      f"plain {pw:.2f} s, ratio flow/plain {fw / pw:.3f}; train plain "
                      f"{plain_runs[-1][1]['train-candidate']:.2f} s / flow {ft['train-candidate']:.2f} s")
                shutil.rmtree(root / f"home-plain-{n}-{i}", ignore_errors=True)
                shutil.rmtree(root / f"home-flow-{n}-{i}", ignore_errors=True)

            print(f"{'stage (median)':<19}{'plain s':>10}{'in flow s':>11}")
            print(f"{'setup':<19}{med([t['setup'] for _, t in plain_runs]):>10.2f}{'(body)':>11}")
            for k in STAGES:
                print(f"{k:<19}{med([t[k] for _, t in plain_runs]):>10.2f}"
                      f"{med([t.get(k, float('nan')) for _, t in flow_runs]):>11.2f}")
            plain_wall = med([w for w, _ in plain_runs])
            flow_wall = med([w for w, _ in flow_runs])
            works = [sum(t.values()) for _, t in flow_runs]
            outside = [max(w - work, 0.0) for (w, _), work in zip(flow_runs, works)]
            shares = [o / w for o, (w, _) in zip(outside, flow_runs)]
            ratios = [fw / pw for (fw, _), (pw, _) in zip(flow_runs, plain_runs)]
            print(f"{'total (wall)':<19}{plain_wall:>10.2f}{flow_wall:>11.2f}")
            print(f"{'sum of tasks':<19}{'':>10}{med(works):>11.2f}")
            print(f"flow wall time {flow_wall:.2f} s; plain (baseline) {plain_wall:.2f} s; "
                  f"ratio flow/plain {flow_wall / plain_wall:.3f} (median of per-repeat ratios "
                  f"{med(ratios):.3f}, range {min(ratios):.3f}-{max(ratios):.3f}); Prefect's share of wall time "
                  f"{med(shares):.1%} ({med(outside):.2f} s outside task bodies, incl. the flow's setup)")
            # On shared cores a neighbour's burst inflates single runs; the fastest run of each side
            # is the least disturbed one.
            print(f"fastest of {a.repeats}: flow {min(w for w, _ in flow_runs):.2f} s, plain "
                  f"{min(w for w, _ in plain_runs):.2f} s, ratio flow/plain "
                  f"{min(w for w, _ in flow_runs) / min(w for w, _ in plain_runs):.3f}")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
