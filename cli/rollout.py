"""`retrainer canary start|status|promote|rollback|verdict`, `retrainer rollout validate` and
`retrainer rollback`.

`retrainer rollback` is plain Python: a weight change on the endpoint plus the registry record
(`retrainer.rollout.rollback_production`), in milliseconds, so it never imports Prefect. The canary
commands talk to the canary flow's runs through Prefect (`tasks/waiting.py`). Prefect, the flows
and the backends are imported inside the functions (`# noqa: PLC0415`): Prefect alone costs
seconds to import, and `retrainer rollback` or `retrainer --help` should not pay for it.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from retrainer.errors import RolloutError
from retrainer.registry.model import Status

from .common import print_json, user


def _backend(home: str | None = None):
    from retrainer.backends import get_backend  # noqa: PLC0415 - heavy: pandas
    from retrainer.settings import load_settings  # noqa: PLC0415 - heavy: pydantic

    return get_backend(load_settings(**({"home": home} if home else {})))


def waiting_canaries(home: str | None = None) -> list[dict[str, Any]]:
    """Canary runs (for state directory `home`; any, if None) waiting for a check or a decision:
    flow run id, name, state, next check time and pause key of each."""
    from prefect.client.orchestration import get_client  # noqa: PLC0415 - heavy: prefect

    from tasks.waiting import LABEL_NEXT, waiting_runs  # noqa: PLC0415 - heavy: prefect

    out = []
    with get_client(sync_client=True) as client:
        for fr in waiting_runs(client):
            if home is not None and str((fr.parameters or {}).get("home")) != str(home):
                continue
            out.append({"flow_run_id": str(fr.id), "name": fr.name, "state": fr.state.name,
                        "next_check_at": (fr.labels or {}).get(LABEL_NEXT),
                        "pause_key": fr.state.state_details.pause_key})
    return out


def status(home: str | None = None) -> dict[str, Any]:
    """Registry, routing and live per-variant stats of the canary, plus the waiting Prefect runs
    (`runs`: a list, or a one-line note when the Prefect API cannot be reached)."""
    from retrainer import rollout  # noqa: PLC0415 - heavy: pandas

    backend = _backend(home)
    out = rollout.status(backend.registry, backend.endpoint, backend.predictions)
    try:
        out["runs"] = waiting_canaries(home)
    except Exception as exc:  # any failure to reach the API: the rest of the status still shows
        out["runs"] = f"Prefect API unavailable: {type(exc).__name__}"
    return out


def act(action: str, reason: str, actor: str, home: str | None = None, flow_run_id: str | None = None,
        wait_s: float = 30.0) -> dict[str, Any]:
    """A human's promote/rollback/continue for the waiting canary: resumes its run with the
    decision as input (the run applies and records it). With no canary run waiting, a rollback
    is applied directly (so a canary whose run failed can still be stopped); promote refuses.

    Returns {"applied": "flow", "flow_run_id", "action"} or {"applied": "direct", ...} (the
    rollback's result); RolloutError (one line) for a bad action, no reason, several waiting runs
    without `flow_run_id`, or nothing to act on.
    """
    from prefect.exceptions import NotPausedError  # noqa: PLC0415 - heavy: prefect

    from retrainer import rollout  # noqa: PLC0415 - heavy: pandas
    from tasks.waiting import canary_running, resume  # noqa: PLC0415 - heavy: prefect

    if action not in ("promote", "rollback", "continue"):
        raise RolloutError(f"unknown action {action!r} (promote, rollback or continue)")
    if not reason or not reason.strip():
        raise RolloutError("a reason is required (--reason)")
    deadline = time.monotonic() + wait_s
    while True:
        runs = waiting_canaries(home)
        if flow_run_id:
            runs = [r for r in runs if r["flow_run_id"] == flow_run_id]
        if len(runs) > 1:
            raise RolloutError("several canary runs are waiting: pass the flow run id ("
                               + ", ".join(r["flow_run_id"] for r in runs) + ")")
        if runs:
            run = runs[0]
            try:
                resume(run["flow_run_id"], action=action, reason=reason, actor=actor)
                return {"applied": "flow", "flow_run_id": run["flow_run_id"], "action": action}
            except (NotPausedError, RuntimeError):  # it was resumed (checking) in between: try again
                pass
        if not canary_running(home) or time.monotonic() > deadline:
            break
        time.sleep(0.5)  # a check is running: its run waits again in a moment
    if action != "rollback":
        raise RolloutError(f"no canary run is waiting for a decision; cannot {action}")
    backend = _backend(home)
    canaries = [r.version for r in backend.registry.list() if r.status == Status.CANARY]
    if not canaries:
        raise RolloutError("no version is on canary")
    res = rollout.reject_canary(backend.registry, backend.endpoint, canaries[-1], actor=actor,
                                reason=f"canary: manual rollback by {actor}: {reason}")
    return {"applied": "direct", **res}


def cmd_canary_start(a) -> int:
    """Run the canary flow for the newest (or the named) candidate in this process."""
    plan = None
    if a.plan:
        from retrainer.rollout.plan import RolloutPlan  # noqa: PLC0415 - heavy: pandas via retrainer.rollout

        RolloutPlan.from_file(a.plan)  # a bad plan: one error line, before Prefect starts or anything changes
        plan = str(Path(a.plan).resolve())
    from flows.canary import canary  # noqa: PLC0415 - heavy: prefect

    result = canary(candidate=a.candidate, plan=plan, actor=a.actor or user(), approved_by=a.approved_by)
    if a.json:
        print_json(result)
    else:
        print(f"canary {result['candidate']}: {result['action'].upper()} ({result['actor']}): {result['reason']}")
    return 0


def cmd_rollout_validate(a) -> int:
    """Read and check a plan file: one paragraph describing it, or one error line (exit 2)."""
    from retrainer.rollout.plan import RolloutPlan  # noqa: PLC0415 - heavy: pandas via retrainer.rollout

    plan = RolloutPlan.from_file(a.file)
    if a.json:
        print_json(plan.to_dict())
    else:
        print(f"{a.file}: ok. {plan.summary()}")
    return 0


def add_rollout(sub) -> None:
    """`retrainer rollout validate FILE`."""
    ro = sub.add_parser("rollout", help="rollout plans").add_subparsers(dest="sub", required=True)
    rv = ro.add_parser("validate", help="check a rollout plan file and describe it (exit 2 on a bad plan)")
    rv.add_argument("file", help="a YAML plan, e.g. rollout-plans/protocol24-linear.yaml")
    rv.add_argument("--json", action="store_true", help="print the plan's dict form")
    rv.set_defaults(func=cmd_rollout_validate)


def cmd_canary_status(a) -> int:
    """Versions, routing, per-variant stats and the waiting runs."""
    st = status()
    if a.json:
        print_json(st)
        return 0
    for key in ("production", "previous", "canary"):
        print(f"{key:<11} {st.get(key)}")
    print(f"endpoint    {json.dumps(st.get('endpoint'), default=str)}")
    for variant, stats in (st.get("variants") or {}).items():
        print(f"  {variant:<11} {json.dumps(stats, default=str)}")
    print(f"waiting     {st.get('runs')}")
    return 0


def cmd_canary_act(a) -> int:
    """`canary promote|rollback --reason ...`: a human decision for the waiting canary."""
    res = act(a.action, reason=a.reason, actor=a.actor or user(), flow_run_id=a.run)
    print(f"{a.action}: {json.dumps(res, default=str)}")
    return 0


def cmd_canary_verdict(a) -> int:
    """The deferred verdict on a promoted canary, now (the scheduled deployment run does the same)."""
    from datetime import datetime  # noqa: PLC0415 - only here

    from flows.verdict import deferred_verdict  # noqa: PLC0415 - heavy: prefect

    for name, value in (("--start", a.start), ("--end", a.end)):
        try:
            datetime.fromisoformat(value)
        except ValueError:
            raise RolloutError(f"{name} {value!r} is not an ISO time (e.g. 2026-12-01T10:00:00+00:00)") from None
    out = deferred_verdict(version=a.version, previous=a.previous, window_start=a.start, window_end=a.end)
    if a.json:
        print_json(out)
    else:
        print(f"deferred verdict on {out['version']}: {out['outcome'].upper()} - {out['reason']}")
    return 0


def cmd_rollback(a) -> int:
    """Production back to a kept previous version: endpoint first, then the registry. No Prefect."""
    from retrainer.rollout import rollback_production  # noqa: PLC0415 - heavy: pandas

    b = _backend()
    res = rollback_production(b.registry, b.endpoint, a.to, actor=a.actor or user(), reason=a.reason)
    print(f"production is now {res['version']} (was {res['replaced']}); traffic switched in "
          f"{res['switch_ms']:.0f} ms")
    return 0


def add_canary(sub) -> None:
    """`retrainer canary start|status|promote|rollback`."""
    can = sub.add_parser("canary", help="the canary rollout").add_subparsers(dest="sub", required=True)
    cs = can.add_parser("start", help="run the canary flow for the newest candidate (local run)")
    cs.add_argument("--candidate", default=None)
    cs.add_argument("--plan", default=None, metavar="FILE",
                    help="a rollout plan file (rollout-plans/*.yaml; default: settings.canary's one stage)")
    cs.add_argument("--actor", default=None)
    cs.add_argument("--approved-by", default=None,
                    help="an approver's name, for a version whose gate policy asked for a review")
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
    cv = can.add_parser("verdict", help="re-check a promoted canary on its matured labels (the deferred verdict)")
    cv.add_argument("version", help="the promoted version")
    cv.add_argument("--previous", required=True, help="the production version it replaced")
    cv.add_argument("--start", required=True, help="the canary period's start (ISO time)")
    cv.add_argument("--end", required=True, help="the canary period's end (ISO time)")
    cv.add_argument("--json", action="store_true")
    cv.set_defaults(func=cmd_canary_verdict)


def add_rollback(sub) -> None:
    """`retrainer rollback [--to VERSION]`."""
    rb = sub.add_parser("rollback", help="return production to a kept previous version")
    rb.add_argument("--to", default=None, help="a kept previous version (default: the most recent)")
    rb.add_argument("--reason", default="manual rollback")
    rb.add_argument("--actor", default=None)
    rb.set_defaults(func=cmd_rollback)
