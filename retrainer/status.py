"""One read-only picture of the system for `retrainer status` and the endpoint's `GET /status`:
production, candidates, what the endpoint routes, running rollouts (stage, traffic, strategy,
next check), pending deferred verdicts (the rollout journal), the last monitor run and the last
retention run.

`GET /status` needs no token, so what this returns is public by construction: versions, statuses,
times, weights, trigger names and their numbers. Never a secret (no settings beyond the model name),
never an identifier or pseudonym (nothing is read from the prediction store), never a path, a
flow-run id, an actor or a free-text reason written by a person.

The monitor flow stores its last result here (`save_monitor_summary`, `<home>/monitor/last.json`):
the triggers' names, whether each fired or was too small to tell, its one-line reason and its
numeric figures (PSI, AUC, window sizes).
"""
from __future__ import annotations

import json
import math
from datetime import datetime
from pathlib import Path
from typing import Any, Iterable

from .clock import utcnow
from .registry import atomic_write_text
from .registry.model import Status

MONITOR_SUMMARY = Path("monitor") / "last.json"
CANDIDATE_STATUSES = (Status.CANDIDATE, Status.CANARY)


# --------------------------------------------------------------------------------------------------
# The monitor's last result

def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))


def monitor_summary(result: dict[str, Any]) -> dict[str, Any]:
    """The small public summary of a monitor flow result (`flows/monitor.py` returns it)."""
    triggers = []
    for e in result.get("evaluations", []):
        triggers.append({"name": e.get("name"), "type": e.get("type"), "fired": bool(e.get("fired")),
                         "too_small": bool(e.get("too_small")), "reason": str(e.get("reason", ""))[:300],
                         "numbers": {k: v for k, v in (e.get("numbers") or {}).items() if _number(v)}})
    return {"at": result.get("now"), "production_version": result.get("production_version"),
            "fired": list(result.get("fired") or []), "reported": result.get("reported"),
            "emitted": result.get("event") if result.get("emitted") else None, "triggers": triggers}


def save_monitor_summary(home: str | Path, result: dict[str, Any]) -> dict[str, Any]:
    """Write `monitor_summary(result)` atomically to `<home>/monitor/last.json`; returns it."""
    summary = monitor_summary(result)
    path = Path(home) / MONITOR_SUMMARY
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(summary, indent=1, sort_keys=True, default=str))
    return summary


def last_monitor(home: str | Path) -> dict[str, Any] | None:
    """The last monitor summary; else the last run the monitor's state file remembers (names
    only); None when the monitor never ran."""
    try:
        return json.loads((Path(home) / MONITOR_SUMMARY).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        pass
    from .triggers.state import load_state  # noqa: PLC0415 - the fallback only

    runs = load_state(Path(home)).get("runs") or []
    if not runs:
        return None
    r = runs[-1]
    return {"at": r.get("at"), "fired": r.get("fired", []), "reported": r.get("reported"),
            "emitted": r.get("emitted"), "triggers": None}


# --------------------------------------------------------------------------------------------------
# The picture

def _variants(specs: Iterable[Any]) -> list[dict[str, Any]]:
    out = []
    for s in specs:
        d = s if isinstance(s, dict) else s.to_dict()
        out.append({"variant": str(d["variant"]), "version": str(d["version"]), "weight": float(d["weight"])})
    return out


def endpoint_section(variants: Iterable[Any], *, running: bool | None, source: str,
                     generation: int | None = None, updated_at: str | None = None) -> dict[str, Any]:
    """What the endpoint routes: [{variant, version, weight}] and where that was read."""
    return {"running": running, "source": source, "variants": _variants(variants), "generation": generation,
            "updated_at": updated_at}


def offline_endpoint(settings, registry) -> dict[str, Any]:
    """The local endpoint's routing from its persisted file (or the default routing), not running."""
    from .serving.routing import default_variants, read_routing, routing_path  # noqa: PLC0415 - imports FastAPI

    try:
        specs = read_routing(routing_path(settings))
        source = "routing file"
    except (ValueError, OSError):
        specs, source = None, "routing file unreadable"
    if specs is None:
        specs, source = default_variants(registry), "default routing (no routing file)"
    return endpoint_section(specs, running=False, source=source)


def _rollout(r, now: datetime) -> dict[str, Any]:
    stages = (r.plan or {}).get("stages") or []
    due_in = None
    if r.next_check_at:
        try:
            due_in = round((datetime.fromisoformat(r.next_check_at) - now).total_seconds())
        except (TypeError, ValueError):
            due_in = None
    return {"version": r.version, "production": r.production, "status": r.status, "strategy": r.strategy,
            "stage": r.stage, "stages": len(stages), "traffic": r.traffic, "started_at": r.started_at,
            "next_check_at": r.next_check_at, "next_check_in_s": due_in}


def gather(settings, registry, journal, *, endpoint: dict[str, Any] | None = None,
           now: datetime | None = None) -> dict[str, Any]:
    """The status: model, production, previous, candidates, endpoint, rollouts, pending verdicts,
    last monitor run, last retention run. `endpoint`: an `endpoint_section` (None: left out)."""
    now = now or utcnow()
    records = registry.list()
    prod = next((r for r in records if r.status == Status.PRODUCTION), None)
    out: dict[str, Any] = {
        "model_name": settings.model_name,
        "now": now.isoformat(timespec="seconds"),
        "production": ({"version": prod.version, "since": prod.status_changed_at or prod.created_at,
                        "trigger": prod.trigger} if prod else None),
        "previous": [r.version for r in registry.previous()],
        "candidates": [{"version": r.version, "status": str(r.status), "created_at": r.created_at,
                        "trigger": r.trigger, "gate_eligible": (r.gate or {}).get("eligible")}
                       for r in records if r.status in CANDIDATE_STATUSES],
        "endpoint": endpoint,
        "rollouts": [_rollout(r, now) for r in journal.active()],
        "pending_verdicts": [{"version": r.version, "previous": r.production, "started_at": r.started_at,
                              "decided_at": r.decided_at, "verdict_due_at": r.verdict_due_at}
                             for r in journal.pending_verdicts()],
        "monitor": last_monitor(settings.home),
        "retention": _last_retention(settings.home),
    }
    return out


def _last_retention(home: str | Path) -> dict[str, Any] | None:
    """When the last store retention deleted something, and how much (from its audit log)."""
    path = Path(home) / "retention-audit.jsonl"
    try:
        lines = [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    except OSError:
        return None
    for line in reversed(lines):
        try:
            e = json.loads(line)
        except ValueError:
            continue
        return {"at": e.get("time"), "partitions": len(e.get("partitions") or []), "rows": e.get("rows"),
                "label_files": len(e.get("label_files") or [])}
    return None


def text(status: dict[str, Any]) -> str:
    """The status as a few readable lines (`retrainer status`)."""
    lines = [f"model {status['model_name']} at {status['now']}"]
    prod = status["production"]
    lines.append(f"production: {prod['version']} since {prod['since']}" if prod else "production: none")
    lines.append(f"previous (kept for rollback): {', '.join(status['previous']) or 'none'}")
    cands = status["candidates"]
    lines.append("candidates: " + (", ".join(f"{c['version']} ({c['status']})" for c in cands) or "none"))
    ep = status.get("endpoint")
    if ep:
        state = {True: "running", False: "not running", None: "unknown"}[ep.get("running")]
        lines.append(f"endpoint ({state}; {ep['source']}): "
                     + (" ".join(f"{v['variant']}={v['version']}:{v['weight']:g}" for v in ep["variants"]) or "empty"))
    if not status["rollouts"]:
        lines.append("rollouts: none running")
    for r in status["rollouts"]:
        stage = f"stage {r['stage'] + 1}/{r['stages']}" if r["stages"] else f"stage {r['stage']}"
        lines.append(f"rollout {r['version']} vs {r['production']}: {r['status']}, {r['strategy']}, {stage}, "
                     f"{r['traffic']:.0%} traffic, next check {r['next_check_at'] or '-'}")
    for v in status["pending_verdicts"]:
        lines.append(f"deferred verdict on {v['version']} (over {v['previous']}): due {v['verdict_due_at']}")
    mon = status.get("monitor")
    if mon:
        lines.append(f"last monitor run {mon.get('at')}: fired {', '.join(mon.get('fired') or []) or 'nothing'}"
                     + (f"; emitted {mon['emitted']}" if mon.get("emitted") else ""))
        for t in mon.get("triggers") or []:
            lines.append(f"  {t['name']:<24} {'FIRED' if t['fired'] else 'ok':<6} {t['reason']}")
    else:
        lines.append("last monitor run: never")
    ret = status.get("retention")
    if ret:
        lines.append(f"last retention deletion {ret['at']}: {ret['partitions']} partition(s), {ret['rows']} rows")
    return "\n".join(lines)


__all__ = ["endpoint_section", "gather", "last_monitor", "monitor_summary", "offline_endpoint",
           "save_monitor_summary", "text"]
