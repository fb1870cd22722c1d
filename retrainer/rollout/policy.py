"""The canary's decision rule: pure functions, no I/O, the clock is passed in.

A rollout flow wakes up every `check_interval`, reads per-variant statistics from the prediction
store, and calls `check(...)`, which returns a `Decision`:

* **rollback at once** on a guardrail breach, at any check: candidate error rate above
  `max_error_rate` or candidate p95 latency above `max_p95_latency_ms`;
* **continue** before the end of the plan (at an intermediate stage boundary the decision's
  `traffic` is the next stage's share);
* at/after the end: if either arm has fewer than `min_labels` labelled predictions (or its AUC is
  undefined because the labels hold one class), the `too_few_labels` policy applies:
  "extend_once" (default) extends the last stage once by its duration, and rolls back if the
  labels are still too few then; "rollback"; "promote";
* otherwise **promote** iff AUC(candidate) >= AUC(production) - auc_tolerance, else **rollback**.
  The comparison allows `AUC_EPSILON` (1e-9) of float noise, so a candidate exactly
  `auc_tolerance` below production (0.78 vs 0.80, whose float difference is 0.020000000000000018)
  promotes, while 0.021 below rolls back.

The DeLong interval of the AUC difference (`statistics.auc_difference_ci`) is carried into the
decision and its report; the rule above decides on the point estimates. `manual(...)` records a
human override as a Decision.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal, Mapping

from .plan import RolloutPlan, format_duration

ACTIONS = ("continue", "promote", "rollback", "extend")
Action = Literal["continue", "promote", "rollback", "extend"]
AUC_EPSILON = 1e-9
POLICY_ACTOR = "canary-policy"



@dataclass(frozen=True)
class ArmStats:
    variant: str
    version: str | None
    n_predictions: int
    n_labels: int
    auc: float | None
    error_rate: float
    p95_latency_ms: float | None

    @classmethod
    def from_variant_stats(cls, stats: Mapping[str, Mapping[str, Any]], variant: str,
                           version: str | None = None) -> "ArmStats":
        """From `PredictionStore.variant_stats()` output; an absent variant is an empty arm."""
        s = stats.get(variant) or {}
        return cls(variant=variant, version=s.get("version", version),
                   n_predictions=int(s.get("n_predictions", 0)), n_labels=int(s.get("n_labels", 0)),
                   auc=None if s.get("auc") is None else float(s["auc"]),
                   error_rate=float(s.get("error_rate") or 0.0),
                   p95_latency_ms=None if s.get("p95_latency_ms") is None else float(s["p95_latency_ms"]))


def arms_from_stats(stats: Mapping[str, Mapping[str, Any]], candidate: str = "green",
                    production: str = "blue") -> tuple[ArmStats, ArmStats]:
    """(candidate, production) arms from `variant_stats()` output."""
    return ArmStats.from_variant_stats(stats, candidate), ArmStats.from_variant_stats(stats, production)



@dataclass(frozen=True)
class Decision:
    """What a check (or a human) decided, with the evidence it decided on. `index` is the check's
    position in its rollout (0 for the first)."""
    action: Action
    reason: str                    # one line
    elapsed: timedelta
    progress: float                # 0..1 of the (possibly extended) rollout
    auc_diff: float | None = None  # AUC(candidate) - AUC(production)
    ci: dict[str, float] | None = None
    traffic: float | None = None   # candidate share that should be in force after this decision
    actor: str = POLICY_ACTOR
    manual: bool = False
    decided_at: datetime | None = None
    next_check_at: datetime | None = None
    details: dict[str, Any] = field(default_factory=dict)
    index: int = 0

    @property
    def final(self) -> bool:
        return self.action in ("promote", "rollback")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["elapsed_s"] = self.elapsed.total_seconds()
        del d["elapsed"]
        for k in ("decided_at", "next_check_at"):
            d[k] = d[k].isoformat() if d[k] is not None else None
        return d


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.4f}"


def check(plan: RolloutPlan, started_at: datetime, now: datetime, candidate: ArmStats,
          production: ArmStats, settings, extended: bool = False, *,
          ci: dict[str, float] | None = None) -> Decision:
    """The policy decision at time `now` for a rollout started at `started_at` (see module doc).

    `settings`: `Settings` or `CanarySettings`. `extended`: the rollout was already extended once.
    `ci`: an optional `auc_difference_ci` result, carried into the decision.
    """
    c = getattr(settings, "canary", settings)
    elapsed = now - started_at
    if elapsed < timedelta(0):
        raise ValueError("now is before the rollout started")
    end = plan.end(extended)
    progress = min(1.0, elapsed / end) if end > timedelta(0) else 1.0
    index, stage = plan.stage_at(elapsed)
    auc_diff = (candidate.auc - production.auc
                if candidate.auc is not None and production.auc is not None else None)
    details = {"candidate": asdict(candidate), "production": asdict(production), "extended": extended,
               "stage": index, "auc_tolerance": c.auc_tolerance, "min_labels": c.min_labels}

    def decide(action: Action, reason: str, traffic: float | None) -> Decision:
        nxt = now + stage.check_interval if action in ("continue", "extend") else None
        if nxt is not None and action == "continue":
            nxt = min(nxt, started_at + end)  # never sleep past the end
        return Decision(action, reason, elapsed, progress, auc_diff, ci, traffic,
                        decided_at=now, next_check_at=nxt, details=details)

    # 1. Guardrails, at any check.
    if candidate.n_predictions > 0 and candidate.error_rate > c.max_error_rate:
        return decide("rollback", f"guardrail: candidate error rate {candidate.error_rate:.2%} > "
                                  f"{c.max_error_rate:.2%}", 0.0)
    if candidate.p95_latency_ms is not None and candidate.p95_latency_ms > c.max_p95_latency_ms:
        return decide("rollback", f"guardrail: candidate p95 latency {candidate.p95_latency_ms:.1f} ms > "
                                  f"{c.max_p95_latency_ms:.1f} ms", 0.0)

    # 2. Before the end: keep going (at the current stage's traffic).
    if elapsed < end:
        left = end - elapsed
        return decide("continue", f"stage {index + 1}/{len(plan.stages)} at {stage.traffic:.0%} traffic; "
                                  f"{progress:.0%} done, {format_duration(left)} left", stage.traffic)

    # 3. At/after the end: enough labels?
    short = [a for a in (candidate, production) if a.n_labels < c.min_labels or a.auc is None]
    if short:
        what = "; ".join(f"{a.variant} has {a.n_labels} labels" + (" (AUC undefined)" if a.auc is None
                                                                    and a.n_labels >= c.min_labels else "")
                         for a in short)
        why = f"too few labels ({what}; need {c.min_labels} per arm)"
        policy = c.too_few_labels
        if policy == "extend_once" and not extended:
            return decide("extend", f"{why}: extending by {format_duration(plan.stages[-1].duration)} once",
                          plan.stages[-1].traffic)
        if policy == "promote":
            return decide("promote", f"{why}: policy promotes", 1.0)
        suffix = "still, after the extension" if policy == "extend_once" else "policy rolls back"
        return decide("rollback", f"{why}: {suffix}", 0.0)

    # 4. The AUC rule.
    assert auc_diff is not None
    ci_txt = f", {ci['level']:.0%} CI [{ci['low']:+.4f}, {ci['high']:+.4f}]" if ci else ""
    if candidate.auc >= production.auc - c.auc_tolerance - AUC_EPSILON:
        return decide("promote", f"candidate AUC {_fmt(candidate.auc)} vs production {_fmt(production.auc)} "
                                 f"(diff {auc_diff:+.4f}{ci_txt}) within tolerance {c.auc_tolerance}", 1.0)
    return decide("rollback", f"candidate AUC {_fmt(candidate.auc)} is more than {c.auc_tolerance} below "
                              f"production {_fmt(production.auc)} (diff {auc_diff:+.4f}{ci_txt})", 0.0)


def manual(action: Action, actor: str, reason: str, *, now: datetime | None = None,
           started_at: datetime | None = None, plan: RolloutPlan | None = None) -> Decision:
    """A human's decision (override), e.g. `manual("rollback", "ml-lead", "pager: bad scores")`."""
    if action not in ACTIONS:
        raise ValueError(f"unknown action {action!r} (one of {', '.join(ACTIONS)})")
    if not actor or not str(actor).strip():
        raise ValueError("a manual decision needs the actor's name")
    if not reason or not str(reason).strip():
        raise ValueError("a manual decision needs a reason")
    elapsed = (now - started_at) if now is not None and started_at is not None else timedelta(0)
    progress = 0.0
    if plan is not None and now is not None and started_at is not None:
        progress = min(1.0, elapsed / plan.end())
    traffic = {"promote": 1.0, "rollback": 0.0}.get(action)
    line = " ".join(str(reason).split())
    return Decision(action, f"manual {action} by {actor}: {line}", elapsed, progress, traffic=traffic,
                    actor=str(actor), manual=True, decided_at=now)
