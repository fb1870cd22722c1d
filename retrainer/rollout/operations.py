"""Rollout operations shared by the Prefect flows (flows/canary.py, flows/rollback.py) and the CLI:
registry status + endpoint weights, changed together. No Prefect here: the CLI calls these
directly for a rollback without Prefect's import and API overhead.

Endpoint layout (see `retrainer.serving`): "blue" production, "green" the canary candidate,
"previous-1"/"previous-2" the two kept previous versions as warm standbys at weight 0, so every
change below is a weight change on already loaded models.

Order of the two writes, chosen so that a failure half-way is recoverable by running the same
command again: taking traffic OFF a version (canary rollback, production rollback) changes the
endpoint first and the registry second; putting traffic ON the candidate (start, promote) changes
the registry first. Every function is idempotent: called again after a crash or on a resumed flow
it finds the work done and only re-applies the (idempotent) endpoint weights.
"""
from __future__ import annotations

import time
from datetime import datetime
from typing import Any

from ..clock import utcnow
from ..errors import RegistryError, RolloutError
from ..registry import rules
from ..registry.model import Status
from ..serving import CANDIDATE, PRODUCTION, STANDBY_PREFIX, default_variants
from .statistics import ci_from_labelled


def _specs(pairs: list[tuple[str, str, float]]) -> list[dict[str, Any]]:
    return [{"variant": n, "version": v, "weight": float(w)} for n, v, w in pairs]


def steady_variants(registry) -> list[dict[str, Any]]:
    """Production at 100% plus the kept previous versions at 0."""
    return [s.to_dict() for s in default_variants(registry)]


def canary_variants(registry, candidate: str, traffic: float) -> list[dict[str, Any]]:
    """Production ("blue") at 1 - traffic, the candidate ("green") at `traffic`, the kept previous
    versions as weight-0 standbys."""
    prod = registry.production()
    if prod is None:
        raise RolloutError("there is no production version: a canary needs one to compare against")
    pairs = [(PRODUCTION, prod.version, 1.0 - traffic), (CANDIDATE, candidate, traffic)]
    pairs += [(f"{STANDBY_PREFIX}{i}", r.version, 0.0) for i, r in enumerate(registry.previous()[:2], start=1)]
    if traffic >= 1.0:
        pairs = [p for p in pairs if p[0] != PRODUCTION] + [(PRODUCTION, prod.version, 0.0)]
    return _specs(pairs)


def shadow_variants(registry, candidate: str) -> list[dict[str, Any]]:
    """The shadow strategy's endpoint: production ("blue") at 1.0 answers every request, the
    candidate ("green") loaded at 0.0 answers none but scores every request in shadow (serving
    shadow mode "candidate"), the kept previous versions as weight-0 standbys. An endpoint with
    native shadow variants (SageMaker: `native_shadow`) gets the candidate as a shadow variant
    instead (`start_canary` with `shadow_sampling`)."""
    return canary_variants(registry, candidate, 0.0)


def pick_candidate(registry, candidate: str | None = None) -> str:
    """The version to canary: `candidate` if given, else the one already in canary, else the
    newest candidate. RolloutError (one line) when there is none or it cannot be canaried."""
    if candidate is None:
        canaries = [r.version for r in registry.list() if r.status == Status.CANARY]
        if canaries:
            return canaries[-1]
        cands = [r.version for r in registry.list() if r.status == Status.CANDIDATE]
        if not cands:
            raise RolloutError("no candidate version to canary (register one with `retrainer retrain`)")
        return cands[-1]
    try:
        rec = registry.get(candidate)
    except Exception as exc:  # RegistryError: unknown/invalid version
        raise RolloutError(str(exc)) from None
    if rec.status not in (Status.CANDIDATE, Status.CANARY):
        raise RolloutError(f"{candidate} is {rec.status}; only a candidate can go on canary")
    return candidate


def check_approval(record, approved_by: str | None, approvers: list[str] | None, *,
                   required: str | None = None) -> None:
    """A version whose gate policy asked for a human review (`record.gate["needs_approval"]`, e.g.
    Task 12's improvement below 5%) starts only with the approval of one of `approvers`; so does
    any rollout whose plan requires one (`required`: why, e.g. "an immediate rollout")."""
    gate = getattr(record, "gate", None) or {}
    if required and not approved_by:
        raise RolloutError(f"{record.version}: {required} needs a named approver; pass --approved-by NAME "
                           f"(one of {', '.join(approvers or []) or 'settings.approvers'})")
    if not gate.get("needs_approval") and not required:
        return
    if not approved_by:
        raise RolloutError(f"{record.version} needs a human approval before its rollout (gate policy "
                           f"{gate.get('policy', '?')}: {gate.get('reason', '')}); pass --approved-by NAME")
    if approvers is not None and approved_by not in approvers:
        raise RolloutError(f"{approved_by} is not an approver ({', '.join(approvers) or 'none configured'})")


def start_canary(registry, endpoint, candidate: str, traffic: float, *, actor: str, reason: str,
                 approved_by: str | None = None, approvers: list[str] | None = None,
                 approval_required: str | None = None, route: bool = True,
                 shadow_sampling: float | None = None) -> dict[str, Any]:
    """candidate -> canary in the registry (skipped if already canary), then the canary weights
    (`traffic` 0: the shadow layout, candidate loaded at weight 0). A version whose gate asked for
    a review, or a plan that requires an approval (`approval_required`: why), needs `approved_by`
    among `approvers`. `route` False leaves the endpoint as it is (an immediate rollout switches
    at its promotion). `shadow_sampling` (a shadow plan's percentage of requests) on an endpoint
    with native shadow variants (SageMaker) puts the candidate in a shadow variant instead of the
    weight-0 layout; promotion and rejection (the steady layout) remove it again."""
    rec = registry.get(candidate)
    if rec.status == Status.CANDIDATE:
        check_approval(rec, approved_by, approvers, required=approval_required)
        if approved_by:
            reason = f"{reason}; approved by {approved_by}"
        registry.set_status(candidate, Status.CANARY, actor=actor, reason=reason)
    elif rec.status != Status.CANARY:
        raise RolloutError(f"{candidate} is {rec.status}; only a candidate can go on canary")
    prod = registry.production()
    if not route:
        if prod is None:
            raise RolloutError("there is no production version: a rollout needs one to compare against")
        return {"candidate": candidate, "production": prod.version, "traffic": 0.0, "endpoint": {}}
    if traffic == 0 and shadow_sampling is not None and getattr(endpoint, "native_shadow", False):
        state = endpoint.set_shadow(candidate, shadow_sampling, variant=CANDIDATE, production_variant=PRODUCTION,
                                    actor=actor, reason=f"shadow {candidate} on {shadow_sampling:g}% of requests: "
                                                        f"{reason}")
    else:
        state = endpoint.set_variants(canary_variants(registry, candidate, traffic), actor=actor,
                                      reason=f"canary {candidate} at {traffic:.0%}: {reason}")
    return {"candidate": candidate, "production": prod.version if prod else None, "traffic": traffic,
            "endpoint": _brief(state)}


def set_canary_traffic(registry, endpoint, candidate: str, traffic: float, *,
                       actor: str = "canary-policy") -> dict[str, Any]:
    return _brief(endpoint.set_variants(canary_variants(registry, candidate, traffic), actor=actor,
                                        reason=f"canary {candidate}: next stage at {traffic:.0%}"))


def promote_canary(registry, endpoint, candidate: str, *, actor: str, reason: str) -> dict[str, Any]:
    """canary -> production (old production -> previous, two kept), then candidate blue at 100%
    and the old production as previous-1 standby. Idempotent."""
    t0 = time.perf_counter()
    rec = registry.get(candidate)
    before = registry.production()
    if rec.status != Status.PRODUCTION:
        if rec.status != Status.CANARY:
            raise RolloutError(f"{candidate} is {rec.status}; only a canary version can be promoted here")
        registry.promote(candidate, actor=actor, reason=reason)
    state = endpoint.set_variants(steady_variants(registry), actor=actor, reason=f"promote {candidate}: {reason}")
    # the endpoint has confirmed the candidate at 100% when set_variants returns
    return {"action": "promote", "version": candidate,
            "replaced": before.version if before and before.version != candidate else None,
            "cutover_ms": round((time.perf_counter() - t0) * 1000, 2), "endpoint": _brief(state)}


def reject_canary(registry, endpoint, candidate: str, *, actor: str, reason: str) -> dict[str, Any]:
    """Endpoint back to production at 100% first, then canary -> rejected. Idempotent."""
    rec = registry.get(candidate)
    if rec.status not in (Status.CANARY, Status.REJECTED, Status.CANDIDATE):
        raise RolloutError(f"{candidate} is {rec.status}; it is not on canary")
    state = endpoint.set_variants(steady_variants(registry), actor=actor, reason=f"reject {candidate}: {reason}")
    if rec.status != Status.REJECTED:
        registry.set_status(candidate, Status.REJECTED, actor=actor, reason=reason)
    return {"action": "rollback", "version": candidate, "endpoint": _brief(state)}


def rollback_target(registry, to: str | None) -> tuple[str, str | None, list[str]]:
    """(target, current production, kept previous versions): the registry's one rule
    (`retrainer.registry.rules.rollback_target`), refusals raised as RolloutError."""
    try:
        return rules.rollback_target(registry, to)
    except RegistryError as exc:
        raise RolloutError(str(exc)) from None


def rollback_production(registry, endpoint, to: str | None = None, *, actor: str, reason: str) -> dict[str, Any]:
    """Return production to a kept previous version (default: the most recent one).

    The endpoint switches first (target "blue" at 100%, old production "previous-1", the other
    kept version "previous-2", all already loaded), then the registry records it. `switch_ms` is
    the time from this call to the endpoint confirming 100% on the target; `total_ms` includes
    the registry write."""
    t0 = time.perf_counter()
    target, current, kept = rollback_target(registry, to)
    standbys = ([current] if current else []) + [v for v in kept if v != target]
    pairs = [(PRODUCTION, target, 1.0)] + [(f"{STANDBY_PREFIX}{i}", v, 0.0)
                                           for i, v in enumerate(standbys[:2], start=1)]
    state = endpoint.set_variants(_specs(pairs), actor=actor, reason=f"rollback to {target}: {reason}")
    t_switch = time.perf_counter()
    registry.rollback(target, actor=actor, reason=reason)
    t_done = time.perf_counter()
    return {"action": "rollback", "version": target, "replaced": current,
            "switch_ms": round((t_switch - t0) * 1000, 2), "total_ms": round((t_done - t0) * 1000, 2),
            "endpoint": _brief(state)}


def _brief(state: dict[str, Any]) -> dict[str, Any]:
    return {"variants": state.get("variants"), "applied": state.get("applied"),
            "generation": state.get("generation")}


# ---------------------------------------------------------------------------------------------
# Statistics of a running canary

def window_stats(store, started_at: datetime, now: datetime, candidate: str = CANDIDATE,
                 production: str = PRODUCTION) -> tuple[dict[str, dict], dict | None]:
    """Per-variant statistics over [started_at, now] (AUC on labelled predictions joined by
    pseudonym, label count, error rate, p95 latency) and the DeLong CI of the AUC difference."""
    stats = store.variant_stats(started_at, now)
    ci = None
    try:
        frame = store.labelled(started_at, now)
        if len(frame):
            ci = ci_from_labelled(frame, candidate, production)
    except Exception:  # the CI is reported, never decides; a missing scipy must not stop a check
        ci = None
    return stats, ci


def status(registry, endpoint, store=None, since: datetime | None = None) -> dict[str, Any]:
    """What `retrainer canary status` shows without Prefect: versions, routing, live stats."""
    recs = registry.list()
    canary = [r for r in recs if r.status == Status.CANARY]
    prod = registry.production()
    out: dict[str, Any] = {
        "production": prod.version if prod else None,
        "previous": [r.version for r in registry.previous()],
        "canary": canary[-1].version if canary else None,
        "canary_since": canary[-1].status_changed_at if canary else None,
    }
    try:
        out["endpoint"] = endpoint.state()
    except Exception as exc:
        out["endpoint"] = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"}
    if store is not None and canary:
        start = since or datetime.fromisoformat(canary[-1].status_changed_at)
        out["stats"] = store.variant_stats(start, utcnow())
    return out
