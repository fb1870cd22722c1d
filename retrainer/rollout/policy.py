"""The canary's decision rule: pure functions, no I/O, the clock is passed in.

A rollout flow wakes up every `check_interval`, gathers the live evidence (`live.gather`: per-arm
traffic statistics, guardrail tests, the label-free estimate, and the non-inferiority verdict on
matured labels) and calls `check(...)`, which returns a `Decision`:

* **rollback at once**, at any check, when a guardrail test fires (error rate's Clopper-Pearson
  lower bound above the limit at level 1 - alpha/K, p95 latency's lower bound above the limit on
  at least `min_requests` requests, any NaN or out-of-range score) or when the label-free (CBPE)
  estimate says the candidate is worse than production by more than `auc_tolerance`;
* **continue** before the end of the plan (at an intermediate stage boundary the decision's
  `traffic` is the next stage's share);
* at/after the end, the **non-inferiority verdict on matured labels** (`retrainer.evidence`):
  promote iff the lower bound of ΔAUC > -auc_tolerance, roll back iff the upper bound < -tolerance;
  its evidence is the registration comparison on the newest matured month pooled with whatever
  shadow-scored live rows have matured (a prediction's label exists only `label_delay` after it);
* an **inconclusive** verdict (interval across -tolerance, or too few positives/negatives) extends
  the last stage while the end stays within `max_duration_hours`, then follows `inconclusive`:
  "rollback", or "human" (a `hold`: the run waits `human_timeout_hours` for a person's decision and
  rolls back if none comes). An inconclusive verdict is never promoted automatically.

The plan's strategy (`plan.RolloutPlan.strategy`) adds to this, on the same checks:

* **stage criteria** (linear and any stage with `criteria`): evaluated on the candidate's rows since
  the stage began with the same one-sided tests (`live.stage_criteria`); one shown broken rolls back
  at once ("stage 2 criteria: p95 latency: 412 requests, ..."); an intermediate stage advances at its
  end only when its criteria held on at least `min_requests` requests, otherwise it is extended
  check by check up to `max_duration_hours`, then `inconclusive` decides;
* **shadow**: one stage at weight 0 (the candidate scored in shadow on every request); at its end
  the non-inferiority verdict, and a promotion is the blue/green cutover to 100%;
* **ab**: from `min_duration` on, the A/B test's winner (`ab.evaluate`) promotes (candidate) or
  rolls back (production); no winner by `max_duration`: rollback, production stays;
* **immediate**: promote at the first check (the approval was required at the start);
* a candidate the registry already has **rejected** (the 5-minute guardrails deployment, a person)
  ends the rollout with a rollback saying who rejected it.

Every decision carries its evidence (`Decision.evidence`): each guardrail's n, estimate and bound,
the label-free estimate with its interval, and the verdict with its n, positives, Δ and interval.
`manual(...)` records a human override as a Decision.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal, Mapping

from .plan import RolloutPlan, format_duration

ACTIONS = ("continue", "promote", "rollback", "extend", "hold")
Action = Literal["continue", "promote", "rollback", "extend", "hold"]
POLICY_ACTOR = "canary-policy"


@dataclass(frozen=True)
class ArmStats:
    """One routed arm's live traffic: predictions, failed requests, p95 latency, and the AUC on
    its labelled predictions (shown, never decided on: only matured labels decide)."""
    variant: str
    version: str | None
    n_predictions: int
    n_labels: int
    auc: float | None
    error_rate: float
    p95_latency_ms: float | None
    n_errors: int = 0

    @classmethod
    def from_variant_stats(cls, stats: Mapping[str, Mapping[str, Any]], variant: str,
                           version: str | None = None) -> "ArmStats":
        """From `PredictionStore.variant_stats()` output; an absent variant is an empty arm."""
        s = stats.get(variant) or {}
        n = int(s.get("n_predictions", 0))
        rate = float(s.get("error_rate") or 0.0)
        return cls(variant=variant, version=s.get("version", version), n_predictions=n,
                   n_labels=int(s.get("n_labels", 0)), auc=None if s.get("auc") is None else float(s["auc"]),
                   error_rate=rate,
                   p95_latency_ms=None if s.get("p95_latency_ms") is None else float(s["p95_latency_ms"]),
                   n_errors=int(s.get("n_errors", round(rate * n))))


def arms_from_stats(stats: Mapping[str, Mapping[str, Any]], candidate: str = "green",
                    production: str = "blue") -> tuple[ArmStats, ArmStats]:
    """(candidate, production) arms from `variant_stats()` output."""
    return ArmStats.from_variant_stats(stats, candidate), ArmStats.from_variant_stats(stats, production)


@dataclass(frozen=True)
class LiveEvidence:
    """Everything a check decides on. `guardrails`: test results with `.fired`, `.reason`,
    `.to_dict()`; `label_free`: the CBPE comparison (`.worse`, `.reason`, `.to_dict()`) or None
    when the model has no calibrated estimate; `verdict`: the non-inferiority `Evidence` on
    matured labels (None: nothing matured and no registration comparison)."""
    candidate: ArmStats
    production: ArmStats
    guardrails: tuple[Any, ...] = ()
    label_free: Any | None = None
    verdict: Any | None = None
    notes: tuple[str, ...] = ()
    criteria: tuple[Any, ...] = ()      # the current stage's criteria results (like guardrails)
    stage_requests: int | None = None   # the candidate's requests (shadow: scored rows) in the current stage
    ab: Any | None = None               # the A/B test's look (`ab.ABResult`), strategy ab only
    rejected: str | None = None         # the registry already has the candidate rejected: by whom, why

    def to_dict(self) -> dict[str, Any]:
        out = {"candidate": asdict(self.candidate), "production": asdict(self.production),
               "guardrails": [g.to_dict() for g in self.guardrails],
               "label_free": self.label_free.to_dict() if self.label_free is not None else None,
               "verdict": self.verdict.to_dict() if self.verdict is not None else None,
               "notes": list(self.notes)}
        if self.criteria or self.stage_requests is not None:
            out["criteria"] = [g.to_dict() for g in self.criteria]
            out["stage_requests"] = self.stage_requests
        if self.ab is not None:
            out["ab"] = self.ab.to_dict()
        if self.rejected is not None:
            out["rejected"] = self.rejected
        return out


@dataclass(frozen=True)
class Decision:
    """What a check (or a human) decided, with the evidence it decided on. `index` is the check's
    position in its rollout (0 for the first)."""
    action: Action
    reason: str                    # one line
    elapsed: timedelta
    progress: float                # 0..1 of the (possibly extended) rollout
    auc_diff: float | None = None  # ΔAUC = AUC(candidate) - AUC(production) of the verdict
    ci: dict[str, Any] | None = None  # the verdict's interval: low, high, level, method, se
    traffic: float | None = None   # candidate share that should be in force after this decision
    actor: str = POLICY_ACTOR
    manual: bool = False
    decided_at: datetime | None = None
    next_check_at: datetime | None = None
    details: dict[str, Any] = field(default_factory=dict)
    index: int = 0
    evidence: dict[str, Any] = field(default_factory=dict)

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


def checks_planned(plan: RolloutPlan, settings) -> int:
    """K, the number of checks a rollout may make up to its maximum duration: the guardrails'
    Bonferroni divisor (at least the plan's own checks)."""
    c = getattr(settings, "canary", settings)
    if not plan.stages:
        return 1
    end = max(plan.duration, timedelta(hours=c.max_duration_hours))
    k, t = 0, timedelta(0)
    while t < end:
        _, stage = plan.stage_at(t)
        t += stage.check_interval
        k += 1
    return max(k, 1) + 1


def max_extensions(plan: RolloutPlan, settings) -> int:
    """How many times the last stage may be extended before the end passes max_duration_hours."""
    c = getattr(settings, "canary", settings)
    if not plan.stages:
        return 0
    limit = timedelta(hours=c.max_duration_hours)
    n = 0
    while plan.end(n + 1) <= limit:
        n += 1
    return n


def check(plan: RolloutPlan, started_at: datetime, now: datetime, live: LiveEvidence, settings,
          extensions: int = 0, *, held: bool = False, stage: int | None = None,
          stage_started_at: datetime | None = None) -> Decision:
    """The policy decision at time `now` for a rollout started at `started_at` (see module doc).

    `settings`: `Settings` or `CanarySettings`. `extensions`: how often the last stage was already
    extended. `held`: the previous check was a `hold` for a human who did not answer in time.
    `stage`/`stage_started_at`: the stage in force and when it began (the flow tracks them: a stage
    whose criteria are not met yet runs past its duration); None: from the elapsed time.
    """
    c = getattr(settings, "canary", settings)
    elapsed = now - started_at
    if elapsed < timedelta(0):
        raise ValueError("now is before the rollout started")
    extensions = int(extensions)
    if plan.strategy == "immediate" or not plan.stages:
        return Decision("promote", "immediate rollout: 100% of traffic at once, approved before the start",
                        elapsed, 1.0, traffic=1.0, decided_at=now, details={"strategy": plan.strategy},
                        evidence=live.to_dict())
    if stage is None:
        index, cur = plan.stage_at(elapsed)
        stage_start = started_at + plan.stage_start(index)
    else:
        index, cur = int(stage), plan.stages[int(stage)]
        stage_start = stage_started_at or (started_at + plan.stage_start(index))
    last = index == len(plan.stages) - 1
    stage_end = stage_start + cur.duration * (1 + (extensions if last else 0))
    end = (stage_end - started_at) if last else (stage_start - started_at) + (plan.end(extensions)
                                                                            - plan.stage_start(index))
    if plan.strategy == "ab":
        end = timedelta(seconds=float(plan.ab_settings.get("max_duration_s", cur.duration.total_seconds())))
    progress = min(1.0, elapsed / end) if end > timedelta(0) else 1.0
    v = live.verdict
    ci = None
    if v is not None and v.low is not None:
        ci = {"low": v.low, "high": v.high, "level": v.level, "method": v.method, "se": v.se}
    details = {"candidate": asdict(live.candidate), "production": asdict(live.production),
               "extensions": extensions, "stage": index, "auc_tolerance": c.auc_tolerance,
               "strategy": plan.strategy, "stage_started_at": stage_start.isoformat()}
    evidence = live.to_dict()
    limit = timedelta(hours=c.max_duration_hours)

    def decide(action: Action, reason: str, traffic: float | None, wait: timedelta | None = None,
               **extra: Any) -> Decision:
        nxt = None
        if action in ("continue", "extend"):
            nxt = now + cur.check_interval
            if action == "continue" and not extra.get("advance_to"):
                nxt = min(nxt, max(now, started_at + end) if last or plan.strategy == "ab" else max(now, stage_end))
        elif action == "hold":
            nxt = now + (wait or timedelta(0))
        return Decision(action, reason, elapsed, progress, v.delta if v is not None else None, ci, traffic,
                        decided_at=now, next_check_at=nxt, details={**details, **extra}, evidence=evidence)

    # 0. Another process (the 5-minute guardrails, a person) already rejected the candidate.
    if live.rejected:
        return decide("rollback", f"already rolled back elsewhere: {live.rejected}", 0.0, already_rejected=True)
    # 1. Guardrails, the stage's criteria and the label-free estimate, at any check.
    fired = [g for g in live.guardrails if g.fired]
    if fired:
        return decide("rollback", f"guardrail: {fired[0].reason}", 0.0)
    broken = [g for g in live.criteria if g.fired]
    if broken:
        return decide("rollback", f"stage {index + 1} criteria: {broken[0].reason}", 0.0)
    if live.label_free is not None and getattr(live.label_free, "worse", False):
        return decide("rollback", f"label-free estimate: {live.label_free.reason}", 0.0)

    verdict_text = v.reason if v is not None else "no evidence on matured labels"
    if held:
        return decide("rollback", f"no human decision within {c.human_timeout_hours:g} h on an inconclusive "
                                  f"canary: rolling back ({verdict_text})", 0.0)

    if plan.strategy == "ab":
        return _ab_decision(plan, elapsed, end, live, decide, cur)

    need = int(cur.limits.get("min_requests", 0))
    have = live.stage_requests
    enough = need == 0 or (have is not None and have >= need)
    held_on = (f"criteria held on {have:,} requests" if have is not None else "no criteria")

    # 2. Before the stage's end: keep going at its traffic.
    if now < stage_end:
        left = (started_at + end - now) if last else (stage_end - now)
        what = "shadow (weight 0)" if cur.shadow else f"{cur.traffic:.0%} traffic"
        return decide("continue", f"stage {index + 1}/{len(plan.stages)} at {what}; {progress:.0%} done, "
                                  f"{format_duration(left)} left in {'the rollout' if last else 'the stage'}; "
                                  "no guardrail fired" + (f"; {held_on}" if cur.criteria else ""), cur.traffic)

    # 3. An intermediate stage at/after its end: advance when its criteria held on enough requests.
    if not last:
        nxt = plan.stages[index + 1]
        if enough:
            return decide("continue", f"stage {index + 1} -> {index + 2}: {held_on}"
                                      + (f" (>= {need:,} needed)" if need else "")
                                      + f"; candidate to {nxt.traffic:.0%} traffic", nxt.traffic, advance_to=index + 1)
        if elapsed + cur.check_interval <= limit:
            return decide("extend", f"stage {index + 1}: {have or 0:,} of the {need:,} requests its criteria need; "
                                    f"extending the stage (maximum {c.max_duration_hours:g} h in all)", cur.traffic)
        return _inconclusive(c, decide, cur, f"stage {index + 1} has {have or 0:,} of the {need:,} requests its "
                                             "criteria need at the maximum duration")

    # 4. At/after the end of the last stage: the non-inferiority verdict on matured labels.
    verdict = v.verdict if v is not None else "inconclusive"
    if verdict == "promote" and enough:
        est = f"; label-free: {live.label_free.reason}" if live.label_free is not None else ""
        crit = f"; stage {index + 1} {held_on}" if cur.criteria else ""
        cut = "; blue/green cutover to 100%" if plan.strategy == "shadow" else ""
        return decide("promote", f"non-inferior: {verdict_text}; no guardrail fired{crit}{est}{cut}", 1.0)
    if verdict == "rollback":
        return decide("rollback", f"inferior: {verdict_text}", 0.0)
    if not enough:
        verdict_text = f"{verdict_text}; stage {index + 1} has {have or 0:,} of the {need:,} requests its criteria need"
    if extensions < max_extensions(plan, settings):
        return decide("extend", f"{verdict_text}: extending by {format_duration(plan.stages[-1].duration)} "
                                f"(extension {extensions + 1} of {max_extensions(plan, settings)}, maximum "
                                f"{c.max_duration_hours:g} h)", plan.stages[-1].traffic)
    return _inconclusive(c, decide, cur, verdict_text)


def _inconclusive(c, decide, cur, text: str) -> Decision:
    if c.inconclusive == "human":
        return decide("hold", f"{text}; at the maximum duration: waiting up to {c.human_timeout_hours:g} h "
                              "for a human decision (`retrainer canary promote|rollback --reason ...`)",
                      cur.traffic, timedelta(hours=c.human_timeout_hours))
    return decide("rollback", f"{text}; still inconclusive at the maximum duration "
                              f"({c.max_duration_hours:g} h): policy rolls back", 0.0)


def _ab_decision(plan: RolloutPlan, elapsed: timedelta, end: timedelta, live: LiveEvidence, decide, cur) -> Decision:
    """Strategy ab: from `min_duration` on, the A/B test's winner decides; no winner by
    `max_duration`: production stays."""
    ab = plan.ab_settings
    min_d = timedelta(seconds=float(ab.get("min_duration_s", 0)))
    r = live.ab
    if elapsed < min_d:
        return decide("continue", f"A/B at {cur.traffic:.0%} / {1 - cur.traffic:.0%}: "
                                  f"{format_duration(min_d - elapsed)} before the first decision; no guardrail fired",
                      cur.traffic)
    if r is not None and getattr(r, "decided", False) and r.winner == "candidate":
        return decide("promote", f"A/B winner candidate: {r.reason}", 1.0)
    if r is not None and getattr(r, "decided", False) and r.winner == "production":
        return decide("rollback", f"A/B winner production: {r.reason}", 0.0)
    why = r.reason if r is not None else "no A/B result (retrainer.rollout.ab not available)"
    if elapsed >= end:
        return decide("rollback", f"no winner: production stays ({why})", 0.0)
    return decide("continue", f"A/B undecided ({why}); {format_duration(end - elapsed)} left", cur.traffic)


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
