"""`retrainer registry list|show|audit`: read the model registry. No Prefect.

The backend is imported inside each command (`# noqa: PLC0415`): it pulls in pandas and, for the
SageMaker backend, boto3, which cost seconds that `retrainer --help` should not pay.
"""
from __future__ import annotations

import sys

from .common import print_json


def _registry():
    from retrainer.backends import get_backend  # noqa: PLC0415 - heavy: pandas
    from retrainer.settings import load_settings  # noqa: PLC0415 - heavy: pydantic

    return get_backend(load_settings()).registry


def cmd_registry_list(a) -> int:
    """One line per registered version (or JSON)."""
    from retrainer.spec import active  # noqa: PLC0415 - the model chosen by --model

    metric = active().spec.metrics.primary  # the model's primary metric: auc, spearman, ...
    records = _registry().list()
    if a.json:
        print_json([{"version": r.version, "status": r.status, "created_at": r.created_at,
                     "trigger": r.trigger, metric: r.metrics.get("candidate", {}).get(metric),
                     "parent": r.parent, "bump": r.bump} for r in records])
        return 0
    if not records:
        print("no versions registered")
        return 0
    print(f"{'VERSION':<10} {'STATUS':<11} {metric.upper()[:8]:>8}  {'TRIGGER':<11} {'BUMP':<6} CREATED")
    for r in records:
        value = r.metrics.get("candidate", {}).get(metric)
        print(f"{r.version:<10} {r.status:<11} {value if value is None else format(value, '.4f'):>8}  "
              f"{r.trigger:<11} {r.bump:<6} {r.created_at}")
    return 0


def cmd_registry_show(a) -> int:
    """The version card of one version (or its record as JSON)."""
    from retrainer.lifecycle import version_card  # noqa: PLC0415 - heavy: pandas

    rec = _registry().get(a.version)
    if a.json:
        print_json(rec.to_dict())
    else:
        print(version_card(rec))
    return 0


def cmd_registry_audit(a) -> int:
    """Every status change with its actor and reason. Unreadable lines (a line torn by a crash,
    a hand edit) are skipped: the readable ones are printed, then one warning on stderr."""
    log = _registry().audit_log()
    if a.json:
        print_json(log.events)
    for e in ([] if a.json else log.events):
        print(f"{e.get('time')}  {str(e.get('version')):<8} {str(e.get('from')):>10} -> {str(e.get('to')):<10} "
              f"by {e.get('actor')}: {e.get('reason')}")
    if log.skipped:
        print(f"warning: skipped {log.skipped} unreadable audit line{'s' if log.skipped != 1 else ''}",
              file=sys.stderr)
    return 0


def add_registry(sub) -> None:
    """`retrainer registry list|show VERSION|audit`."""
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
