"""The deferred verdict: a promotion re-checked on the canary period's own rows once their labels
have matured (`label_delay` after the period ends). This is also the post-promotion watch that
Protocol 24's last stage and the lead-scoring design ask for.

During the canary, production ("blue", the previous version) and the candidate ("green", now
production) both scored every request (shadow scoring), so the realised comparison is paired:
same admissions, same outcomes. It applies the canary's non-inferiority rule:

* **promote** (non-inferior): the promotion stands (`confirmed`);
* **rollback** (worse by more than the tolerance): production goes back to the previous version
  when it is still production's predecessor and kept warm (`rolled_back`); otherwise, say
  production has moved on since, a person must decide (`needs_human`);
* **inconclusive**: nothing changes (`inconclusive`), and the report says what evidence is missing.

`due_at(...)` is when the verdict can be computed; a scheduled deployment run waits for it
without holding a worker.
"""
from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from .. import schema as S
from ..deid import PATIENT_PSEUDONYM
from ..evidence import compare_paired, decide
from .operations import rollback_production

ACTOR = "deferred-verdict"
OUTCOMES = ("confirmed", "rolled_back", "needs_human", "inconclusive", "not_due")


def due_at(window_end: datetime, label_delay: timedelta) -> datetime:
    """When every prediction of the canary period can have its label."""
    return window_end + label_delay


def evaluate(store, settings, *, version: str, previous: str | None, window_start: datetime,
             window_end: datetime, now: datetime, candidate: str = "green", production: str = "blue"):
    """The paired non-inferiority evidence on the canary period's matured rows (both versions)."""
    c = settings.canary
    rows = store.paired(window_start, window_end, production=production, candidate=candidate,
                        matured_before=now - settings.label_delay, labelled=True)
    if len(rows):
        rows = rows[rows["version_candidate"].astype(str) == version]
        if previous is not None:
            rows = rows[rows["version_production"].astype(str) == previous]
    source = f"canary period {window_start:%Y-%m-%d %H:%M} .. {window_end:%Y-%m-%d %H:%M}, matured labels"
    if S.TASK != "binary_classification":  # Spearman, the spec's margin, min_positives + min_negatives rows
        from ..evidence.correlation import compare_spearman_paired, decide_spearman  # noqa: PLC0415 - heavy: scipy

        tol, need = S.contract().spec.metrics.gate.tolerance, c.min_positives + c.min_negatives
        if not len(rows):
            return decide_spearman(None, tol, source=source, paired=True, n_candidate=0, n_production=0,
                                   min_rows=need)
        return compare_spearman_paired(rows[S.LABEL].to_numpy(float), rows["score_production"].to_numpy(float),
                                       rows["score_candidate"].to_numpy(float), tolerance=tol, source=source,
                                       level=c.level, clusters=rows[PATIENT_PSEUDONYM].to_numpy(object),
                                       min_rows=need)
    if not len(rows):
        return decide(None, c.auc_tolerance, source=source, paired=True, min_positives=c.min_positives,
                      min_negatives=c.min_negatives)
    return compare_paired(rows[S.LABEL].to_numpy(), rows["score_production"].to_numpy(float),
                          rows["score_candidate"].to_numpy(float), tolerance=c.auc_tolerance, source=source,
                          level=c.level, clusters=rows[PATIENT_PSEUDONYM].to_numpy(object),
                          min_positives=c.min_positives, min_negatives=c.min_negatives)


def run(store, registry, endpoint, settings, *, version: str, previous: str | None, window_start: datetime,
        window_end: datetime, now: datetime, actor: str = ACTOR) -> dict[str, Any]:
    """Compute the verdict and act on it (see the module doc). Returns the outcome, the evidence
    and, on a rollback, what the endpoint did."""
    due = due_at(window_end, settings.label_delay)
    base = {"version": version, "previous": previous, "window_start": window_start.isoformat(),
            "window_end": window_end.isoformat(), "due_at": due.isoformat()}
    if now < due:
        return {**base, "outcome": "not_due", "evidence": None,
                "reason": f"the canary period's labels mature at {due.isoformat()}; now is {now.isoformat()}"}
    ev = evaluate(store, settings, version=version, previous=previous, window_start=window_start,
                  window_end=window_end, now=now)
    out = {**base, "evidence": ev.to_dict(), "verdict": ev.verdict}
    if ev.verdict == "promote":
        return {**out, "outcome": "confirmed", "reason": f"promotion of {version} confirmed: {ev.reason}"}
    if ev.verdict == "inconclusive":
        return {**out, "outcome": "inconclusive", "reason": f"promotion of {version} stands, unconfirmed: {ev.reason}"}
    prod = registry.production()
    kept = [r.version for r in registry.previous()]
    if prod is not None and prod.version == version and previous in kept:
        done = rollback_production(registry, endpoint, previous, actor=actor,
                                   reason=f"deferred verdict: {ev.reason}")
        return {**out, "outcome": "rolled_back", "rollback": done,
                "reason": f"{version} failed non-inferiority on its canary period's matured labels; production "
                          f"rolled back to {previous}: {ev.reason}"}
    where = (f"production is now {prod.version}" if prod is not None and prod.version != version
             else f"{previous} is not kept ({', '.join(kept) or 'none kept'})")
    status = registry.get(version).status if version else None
    return {**out, "outcome": "needs_human", "status": str(status) if status else None,
            "reason": f"{version} failed non-inferiority on its canary period's matured labels, but {where}: "
                      f"a person must decide (`retrainer rollback --to VERSION --reason ...`): {ev.reason}"}

