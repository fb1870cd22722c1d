"""`retrainer retrain|approve|monitor|drift|triggers check|demo`: the lifecycle.

`retrain`, `approve`, `monitor` and `demo` run Prefect flows (on Prefect's ephemeral API unless
PREFECT_API_URL points at a server); `drift` and `triggers check` only compute and never import
Prefect. Flows and domain modules are imported inside each command (`# noqa: PLC0415`): Prefect
alone costs seconds to import, pandas-based modules about one, and `retrainer --help` or another
command should not pay for them.
"""
from __future__ import annotations

import os
import uuid

from retrainer.errors import ConfigError

from .common import print_json
from .demo import run


def retrain_exit_code(summary: dict) -> int:
    """5 when an approver refused a manual retrain (outcome "not-approved"); 0 otherwise, also when
    the run registered a version the gate rejected (its status is "rejected", its outcome not)."""
    return 5 if summary.get("outcome") == "not-approved" else 0


def cmd_retrain(a) -> int:
    """Run the retrain flow (or the manual one, which waits for an approver); exit 5 when the
    approver refuses a manual retrain."""
    from retrainer.triggers import RETRAIN_TRIGGERS  # noqa: PLC0415 - heavy: sklearn

    if a.trigger not in RETRAIN_TRIGGERS:  # before any flow run is created
        raise ConfigError(f"unknown trigger {a.trigger!r} (one of {', '.join(RETRAIN_TRIGGERS)})")
    actor = a.requested_by or os.environ.get("USER", "cli")
    if a.manual:
        from flows.retrain import manual_retrain  # noqa: PLC0415 - heavy: prefect

        if not a.requested_by:
            raise ConfigError("--manual needs --requested-by NAME")
        summary = manual_retrain(requested_by=a.requested_by, reason=a.reason or "", data=a.data,
                                 approval_timeout_s=a.approval_timeout)
    else:
        from flows.retrain import retrain  # noqa: PLC0415 - heavy: prefect

        summary = retrain(data=a.data, trigger=a.trigger, actor=actor)
    if a.json:
        print_json(summary)
    elif summary.get("outcome") in ("skipped", "not-approved"):
        print(f"\n{summary['status']}: {summary.get('reason', '')}")
    else:
        metric = summary.get("metric", "auc")
        value, prod_value = summary.get(metric), summary.get(f"production_{metric}")
        prod = (f" vs production {summary['production_version']} {_fmt4(prod_value)}"
                if summary.get("production_version") else "")
        print(f"\n{summary['version']} registered as {summary['status']} ({summary['bump']}); "
              f"test {_metric_name(metric)} {_fmt4(value)}{prod}")
        print(f"gate: {summary.get('gate', '-')}")
        if summary.get("needs_approval"):
            print("needs approval before its rollout: retrainer canary start --approved-by NAME")
    return retrain_exit_code(summary)


def cmd_approve(a) -> int:
    """Answer a manual retrain that waits for approval."""
    from prefect.flow_runs import resume_flow_run  # noqa: PLC0415 - heavy: prefect

    try:
        run_id = uuid.UUID(a.run_id)
    except ValueError:
        raise ConfigError(f"{a.run_id!r} is not a flow run id") from None
    resume_flow_run(run_id, run_input={"approver": a.approver, "approve": not a.reject, "reason": a.reason})
    print(f"{'rejected' if a.reject else 'approved'} run {run_id} as {a.approver}")
    return 0


def cmd_monitor(a) -> int:
    """Run the monitor flow: evaluate every trigger, emit the chosen one's event."""
    from flows.monitor import monitor  # noqa: PLC0415 - heavy: prefect

    out = monitor(now=a.now, emit=not a.no_emit)
    if a.json:
        print_json(out)
    return 0


def cmd_drift(a) -> int:
    """PSI report between two datasets; exit 4 on drift with --fail-on-drift."""
    from retrainer.drift import drift_report, format_report  # noqa: PLC0415 - heavy: scipy
    from retrainer.settings import load_settings  # noqa: PLC0415 - heavy: pydantic

    report = drift_report(a.reference, a.current, load_settings().drift)
    print(report.to_json(indent=2) if a.json else format_report(report))
    return 4 if (a.fail_on_drift and report.drift_detected) else 0


def cmd_triggers_check(a) -> int:
    """Validate a triggers file (default: settings.triggers_file)."""
    from retrainer.settings import load_settings  # noqa: PLC0415 - heavy: pydantic
    from retrainer.triggers import load_triggers  # noqa: PLC0415 - heavy: sklearn

    path = a.file or load_settings().triggers_file
    cfg = load_triggers(path)
    print(f"ok: {path}: {len(cfg.retraining_triggers)} triggers")
    return 0


def cmd_demo(a) -> int:
    """The whole lifecycle on generated data (`cli/demo.py`)."""
    return run(rows_per_period=a.rows_per_period)


def add_retrain(sub) -> None:
    """`retrainer retrain [--manual --requested-by NAME]`."""
    r = sub.add_parser("retrain", help="run the retrain flow (validate, train, evaluate, register)")
    r.add_argument("--data", default=None, help="Parquet file or folder (default: settings.training_data)")
    r.add_argument("--trigger", default="manual", help="why it runs: one of retrainer.triggers.RETRAIN_TRIGGERS "
                   "(manual, scheduled, drift, ...); the flow refuses others")
    r.add_argument("--requested-by", default=None)
    r.add_argument("--manual", action="store_true", help="wait for an approver (Prefect UI form or "
                   "`retrainer approve`) before training")
    r.add_argument("--reason", default=None)
    r.add_argument("--approval-timeout", type=int, default=86400, metavar="SECONDS")
    r.add_argument("--json", action="store_true")
    r.set_defaults(func=cmd_retrain)


def add_approve(sub) -> None:
    """`retrainer approve RUN_ID --approver NAME [--reject]`."""
    ap = sub.add_parser("approve", help="answer a manual retrain waiting for approval")
    ap.add_argument("run_id")
    ap.add_argument("--approver", required=True)
    ap.add_argument("--reject", action="store_true")
    ap.add_argument("--reason", default="")
    ap.set_defaults(func=cmd_approve)


def add_monitor(sub) -> None:
    """`retrainer monitor [--now ISO] [--no-emit]`."""
    mo = sub.add_parser("monitor", help="evaluate every retraining trigger now and emit events")
    mo.add_argument("--now", default=None, help="ISO time replacing the clock (back-testing)")
    mo.add_argument("--no-emit", action="store_true")
    mo.add_argument("--json", action="store_true")
    mo.set_defaults(func=cmd_monitor)


def add_triggers(sub) -> None:
    """`retrainer triggers check [FILE]`."""
    tr = sub.add_parser("triggers", help="retraining trigger configuration").add_subparsers(dest="sub",
                                                                                           required=True)
    tc = tr.add_parser("check", help="validate triggers.yaml")
    tc.add_argument("file", nargs="?")
    tc.set_defaults(func=cmd_triggers_check)


def add_demo(sub) -> None:
    """`retrainer demo`."""
    d = sub.add_parser("demo", help="the whole lifecycle on generated data, on a clock the demo moves "
                       "(everything it writes is under RETRAINER_HOME)")
    d.add_argument("--rows-per-period", "--rows-per-month", type=int, default=None, dest="rows_per_period",
                   help="rows per generated month (readmission: 4000) or day (lead-scoring: 2000)")
    d.set_defaults(func=cmd_demo)


def add_drift(sub) -> None:
    """`retrainer drift --reference R --current C [--fail-on-drift]`."""
    dr = sub.add_parser("drift", help="PSI of every feature (and the score) between two datasets")
    dr.add_argument("--reference", required=True, help="Parquet file/folder or a saved profile .json")
    dr.add_argument("--current", required=True, help="Parquet file or folder")
    dr.add_argument("--json", action="store_true")
    dr.add_argument("--fail-on-drift", action="store_true", help="exit 4 when drift is detected")
    dr.set_defaults(func=cmd_drift)


def _metric_name(metric: str) -> str:
    return metric.upper() if metric in ("auc", "mae", "rmse") else metric.capitalize()


def _fmt4(value) -> str:
    return "n/a" if value is None else f"{value:.4f}"
