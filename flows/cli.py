"""`retrainer` command line. Commands that only read or compute (data, validate, registry, drift)
never import Prefect; commands that run the lifecycle run Prefect flows (on Prefect's ephemeral
API unless PREFECT_API_URL points at a server).

Every expected failure prints one line `error: ...` and exits non-zero; no tracebacks.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

EXIT_BUG = 1


def _print_json(obj) -> None:
    print(json.dumps(obj, indent=2, sort_keys=True, default=str))


# ---- data -------------------------------------------------------------------------------------
def cmd_data_generate(a) -> int:
    from retrainer.datagen import GenerationSpec, generate

    try:
        paths = generate(a.out, GenerationSpec(months=a.months, rows_per_month=a.rows_per_month,
                                               seed=a.seed, start=a.start, drift_from=a.drift_from))
    except ValueError as exc:
        from retrainer.errors import ConfigError

        raise ConfigError(str(exc)) from None
    print(f"wrote {len(paths)} monthly files ({a.rows_per_month} rows each) to {a.out}")
    return 0


def cmd_validate(a) -> int:
    from retrainer.dataio import load_batch
    from retrainer.settings import load_settings
    from retrainer.validation import validate_frame

    settings = load_settings()
    frame = load_batch(a.data)
    result = validate_frame(frame, settings.validation)
    if a.json:
        _print_json(result.summary())
    elif result.success:
        print(f"ok: {a.data}: {result.n_rows} rows passed {result.n_expectations} expectations")
    else:
        print(f"FAILED: {a.data}: {result.n_failed} of {result.n_expectations} expectations failed")
        for line in result.failure_lines():
            print(f"  - {line}")
    return 0 if result.success else 3


# ---- lifecycle --------------------------------------------------------------------------------
def cmd_retrain(a) -> int:
    actor = a.requested_by or os.environ.get("USER", "cli")
    if a.manual:
        from flows.retrain import manual_retrain

        if not a.requested_by:
            from retrainer.errors import ConfigError

            raise ConfigError("--manual needs --requested-by NAME")
        summary = manual_retrain(requested_by=a.requested_by, reason=a.reason or "", data=a.data,
                                 approval_timeout_s=a.approval_timeout)
    else:
        from flows.retrain import retrain

        summary = retrain(data=a.data, trigger=a.trigger, actor=actor)
    if a.json:
        _print_json(summary)
    elif summary.get("status") in ("skipped", "rejected") and not summary.get("version"):
        print(f"\n{summary['status']}: {summary.get('reason', '')}")
    else:
        prod = (f" vs production {summary['production_version']} {summary['production_auc']:.4f}"
                if summary.get("production_version") else "")
        print(f"\n{summary['version']} registered as {summary['status']} ({summary['bump']}); "
              f"test AUC {summary['auc']:.4f}{prod}")
    return 5 if summary.get("status") == "rejected" and a.manual else 0


def cmd_approve(a) -> int:
    import uuid

    from prefect.flow_runs import resume_flow_run

    try:
        run_id = uuid.UUID(a.run_id)
    except ValueError:
        from retrainer.errors import ConfigError

        raise ConfigError(f"{a.run_id!r} is not a flow run id") from None
    resume_flow_run(run_id, run_input={"approver": a.approver, "approve": not a.reject, "reason": a.reason})
    print(f"{'rejected' if a.reject else 'approved'} run {run_id} as {a.approver}")
    return 0


def cmd_monitor(a) -> int:
    from flows.monitor import monitor

    out = monitor(now=a.now, emit=not a.no_emit)
    if a.json:
        _print_json(out)
    return 0


def cmd_triggers_check(a) -> int:
    from retrainer.settings import load_settings
    from retrainer.triggers import load_triggers

    path = a.file or load_settings().triggers_file
    cfg = load_triggers(path)
    print(f"ok: {path}: {len(cfg.retraining_triggers)} triggers")
    return 0


def cmd_demo(a) -> int:
    from flows.demo import demo

    demo(workdir=a.workdir, rows_per_month=a.rows_per_month)
    return 0


# ---- registry ---------------------------------------------------------------------------------
def _registry():
    from retrainer.backends import get_backend
    from retrainer.settings import load_settings

    return get_backend(load_settings()).registry


def cmd_registry_list(a) -> int:
    records = _registry().list()
    if a.json:
        _print_json([{"version": r.version, "status": r.status, "created_at": r.created_at,
                      "trigger": r.trigger, "auc": r.metrics.get("candidate", {}).get("auc"),
                      "parent": r.parent, "bump": r.bump} for r in records])
        return 0
    if not records:
        print("no versions registered")
        return 0
    print(f"{'VERSION':<10} {'STATUS':<11} {'AUC':>7}  {'TRIGGER':<11} {'BUMP':<6} CREATED")
    for r in records:
        auc = r.metrics.get("candidate", {}).get("auc")
        print(f"{r.version:<10} {r.status:<11} {auc if auc is None else format(auc, '.4f'):>7}  "
              f"{r.trigger:<11} {r.bump:<6} {r.created_at}")
    return 0


def cmd_registry_show(a) -> int:
    from retrainer.lifecycle import version_card

    rec = _registry().get(a.version)
    if a.json:
        _print_json(rec.to_dict())
    else:
        print(version_card(rec))
    return 0


def cmd_registry_audit(a) -> int:
    events = _registry().audit()
    if a.json:
        _print_json(events)
    for e in ([] if a.json else events):
        print(f"{e['time']}  {e['version']:<8} {str(e['from']):>10} -> {e['to']:<10} by {e['actor']}: {e['reason']}")
    return 0


# ---- monitoring and serving -------------------------------------------------------------------
def cmd_drift(a) -> int:
    from retrainer.drift import drift_report, format_report
    from retrainer.settings import load_settings

    report = drift_report(a.reference, a.current, load_settings().drift)
    print(report.to_json(indent=2) if a.json else format_report(report))
    return 4 if (a.fail_on_drift and report.drift_detected) else 0


def cmd_labels_ingest(a) -> int:
    from retrainer.backends import get_backend
    from retrainer.deid import pseudonymizer_from_env
    from retrainer.settings import load_settings

    settings = load_settings()
    n = get_backend(settings).predictions.ingest_labels(a.file, pseudonymizer_from_env(settings.pseudonym_key_env))
    print(f"ingested {n} labels from {a.file} (keys pseudonymised)")
    return 0


def cmd_serve(a) -> int:
    from retrainer.serving import serve
    from retrainer.settings import load_settings

    settings = load_settings()
    if not settings.registry_dir.exists():
        from retrainer.errors import RegistryError

        raise RegistryError(f"no registry under {settings.home}; train a model first (retrainer retrain)")
    print(f"serving on http://{settings.serving.host}:{a.port or settings.serving.port} (Ctrl-C to stop)")
    serve(settings, port=a.port, capture=not a.no_capture)
    return 0


# ---- rollout ----------------------------------------------------------------------------------
def _user() -> str:
    return os.environ.get("USER") or "operator"


def cmd_canary_start(a) -> int:
    from flows.canary import canary

    result = canary(candidate=a.candidate, actor=a.actor or _user())
    _print_json(result) if a.json else print(
        f"canary {result['candidate']}: {result['action'].upper()} ({result['actor']}): {result['reason']}")
    return 0


def cmd_canary_status(a) -> int:
    from flows.canary import status

    st = status()
    if a.json:
        _print_json(st)
        return 0
    for key in ("production", "previous", "canary"):
        print(f"{key:<11} {st.get(key)}")
    print(f"endpoint    {json.dumps(st.get('endpoint'), default=str)}")
    for variant, stats in (st.get("variants") or {}).items():
        print(f"  {variant:<11} {json.dumps(stats, default=str)}")
    print(f"waiting     {st.get('runs')}")
    return 0


def cmd_canary_act(a) -> int:
    from flows.canary import act

    res = act(a.action, reason=a.reason, actor=a.actor or _user(), flow_run_id=a.run)
    print(f"{a.action}: {json.dumps(res, default=str)}")
    return 0


def cmd_rollback(a) -> int:
    """Plain Python (no Prefect import): a weight change on the endpoint plus the registry."""
    from retrainer import rollout
    from retrainer.backends import get_backend
    from retrainer.settings import load_settings

    b = get_backend(load_settings())
    res = rollout.rollback_production(b.registry, b.endpoint, a.to, actor=a.actor or _user(), reason=a.reason)
    print(f"production is now {res['version']} (was {res['replaced']}); traffic switched in "
          f"{res['switch_ms']:.0f} ms")
    return 0


# ---- parser -----------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="retrainer", description="Retrain, validate, version and roll out "
                                "a readmission risk model with Prefect.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    data = sub.add_parser("data", help="synthetic data").add_subparsers(dest="sub", required=True)
    g = data.add_parser("generate", help="write monthly Parquet files of synthetic admissions")
    g.add_argument("--out", required=True)
    g.add_argument("--months", type=int, default=12)
    g.add_argument("--rows-per-month", type=int, default=5000)
    g.add_argument("--seed", type=int, default=7)
    g.add_argument("--start", default="2024-01", help="first month, YYYY-MM (default 2024-01)")
    g.add_argument("--drift-from", type=int, default=None, metavar="MONTH",
                   help="1-based month from which features and the label relationship drift")
    g.set_defaults(func=cmd_data_generate)

    v = sub.add_parser("validate", help="run the Great Expectations gate on a Parquet file or folder")
    v.add_argument("data")
    v.add_argument("--json", action="store_true")
    v.set_defaults(func=cmd_validate)

    r = sub.add_parser("retrain", help="run the retrain flow (validate, train, evaluate, register)")
    r.add_argument("--data", default=None, help="Parquet file or folder (default: settings.training_data)")
    r.add_argument("--trigger", default="manual",
                   choices=["manual", "scheduled", "drift", "volume", "performance", "concept"])
    r.add_argument("--requested-by", default=None)
    r.add_argument("--manual", action="store_true", help="wait for an approver (Prefect UI form or "
                   "`retrainer approve`) before training")
    r.add_argument("--reason", default=None)
    r.add_argument("--approval-timeout", type=int, default=86400, metavar="SECONDS")
    r.add_argument("--json", action="store_true")
    r.set_defaults(func=cmd_retrain)

    ap = sub.add_parser("approve", help="answer a manual retrain waiting for approval")
    ap.add_argument("run_id")
    ap.add_argument("--approver", required=True)
    ap.add_argument("--reject", action="store_true")
    ap.add_argument("--reason", default="")
    ap.set_defaults(func=cmd_approve)

    mo = sub.add_parser("monitor", help="evaluate every retraining trigger now and emit events")
    mo.add_argument("--now", default=None, help="ISO time replacing the clock (back-testing)")
    mo.add_argument("--no-emit", action="store_true")
    mo.add_argument("--json", action="store_true")
    mo.set_defaults(func=cmd_monitor)

    tr = sub.add_parser("triggers", help="retraining trigger configuration").add_subparsers(dest="sub", required=True)
    tc = tr.add_parser("check", help="validate triggers.yaml")
    tc.add_argument("file", nargs="?")
    tc.set_defaults(func=cmd_triggers_check)

    d = sub.add_parser("demo", help="the whole lifecycle on generated data, time compressed")
    d.add_argument("--workdir", default=".retrainer/demo-data")
    d.add_argument("--rows-per-month", type=int, default=4000)
    d.set_defaults(func=cmd_demo)

    reg = sub.add_parser("registry", help="inspect the model registry").add_subparsers(dest="sub", required=True)
    rl = reg.add_parser("list")
    rl.add_argument("--json", action="store_true")
    rl.set_defaults(func=cmd_registry_list)
    rs = reg.add_parser("show")
    rs.add_argument("version")
    rs.add_argument("--json", action="store_true")
    rs.set_defaults(func=cmd_registry_show)
    ra = reg.add_parser("audit")
    ra.add_argument("--json", action="store_true")
    ra.set_defaults(func=cmd_registry_audit)
    dr = sub.add_parser("drift", help="PSI of every feature (and the score) between two datasets")
    dr.add_argument("--reference", required=True, help="Parquet file/folder or a saved profile .json")
    dr.add_argument("--current", required=True, help="Parquet file or folder")
    dr.add_argument("--json", action="store_true")
    dr.add_argument("--fail-on-drift", action="store_true", help="exit 4 when drift is detected")
    dr.set_defaults(func=cmd_drift)

    lab = sub.add_parser("labels", help="outcome labels").add_subparsers(dest="sub", required=True)
    li = lab.add_parser("ingest", help="ingest delayed outcome labels (CSV or Parquet with admission_id, "
                        "readmitted_30d); keys are pseudonymised before storage")
    li.add_argument("file")
    li.set_defaults(func=cmd_labels_ingest)

    sv = sub.add_parser("serve", help="run the local HTTP endpoint (SageMaker container contract)")
    sv.add_argument("--port", type=int, default=None)
    sv.add_argument("--no-capture", action="store_true", help="do not store predictions for monitoring")
    sv.set_defaults(func=cmd_serve)
    can = sub.add_parser("canary", help="the canary rollout").add_subparsers(dest="sub", required=True)
    cs = can.add_parser("start", help="run the canary flow for the newest candidate (local run)")
    cs.add_argument("--candidate", default=None)
    cs.add_argument("--actor", default=None)
    cs.add_argument("--json", action="store_true")
    cs.set_defaults(func=cmd_canary_start)
    cst = can.add_parser("status", help="registry, routing, per-variant stats and waiting runs")
    cst.add_argument("--json", action="store_true")
    cst.set_defaults(func=cmd_canary_status)
    for action in ("promote", "rollback"):
        ca = can.add_parser(action, help=f"{action} the canary now (a human decision, recorded)")
        ca.add_argument("--reason", required=True)
        ca.add_argument("--run", default=None, help="flow run id when several canaries wait")
        ca.add_argument("--actor", default=None)
        ca.set_defaults(func=cmd_canary_act, action=action)

    rb = sub.add_parser("rollback", help="return production to a kept previous version")
    rb.add_argument("--to", default=None, help="a kept previous version (default: the most recent)")
    rb.add_argument("--reason", default="manual rollback")
    rb.add_argument("--actor", default=None)
    rb.set_defaults(func=cmd_rollback)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from retrainer.errors import RetrainerError

    try:
        return args.func(args)
    except RetrainerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug: still one line unless asked for the traceback
        if os.environ.get("RETRAINER_DEBUG"):
            raise
        print(f"error: unexpected {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''} "
              "(set RETRAINER_DEBUG=1 for the traceback)", file=sys.stderr)
        return EXIT_BUG


if __name__ == "__main__":
    raise SystemExit(main())
