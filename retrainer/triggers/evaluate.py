"""Trigger evaluation, pure: every evaluator takes numbers already read from the prediction store
and the registry (and the clock, `now`, where it needs one) and returns a `TriggerEvaluation`:
fired or not, a one-line reason, the numbers it decided on, and the noise floor where one
applies. Nothing here reads files, the registry or the clock; `inputs.collect_inputs` does that
I/O and `inputs.evaluate_all` feeds its results to these functions.

A window smaller than the configured minimum is "too small to tell" and never fires. Every rule
decides on a bound, not a point estimate: data drift on PSI above a family-wise noise floor,
performance on the AUC's one-sided upper bound, concept drift on a drop beyond the combined
standard errors; each evaluation's `numbers` name n, positives, the estimate, the bound and
the `rule` that decided. When
several triggers fire at once, `choose` reports the one with the highest priority (lowest
number; ties: the order in the file).
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
from cronsim import CronSim

from ..evidence.auc import delong_auc_variance
from .config import (
    TYPE_TO_TRIGGER,
    ConceptDriftTrigger,
    DataDriftTrigger,
    ManualTrigger,
    PerformanceTrigger,
    ScheduledTrigger,
    Trigger,
    VolumeTrigger,
    format_duration,
)

Z95 = 1.959964  # two-sided 95% normal quantile, for AUC noise floors
Z_ONE_SIDED = 1.644854  # one-sided 95% normal quantile: the performance and concept-drift bounds


@dataclass
class TriggerEvaluation:
    """One trigger's verdict: fired or not, why, the numbers it decided on, its noise floor, and
    the event (and payload) the monitor emits when it is the one reported."""

    name: str
    type: str
    priority: int
    fired: bool
    reason: str
    numbers: dict[str, Any] = field(default_factory=dict)
    noise_floor: float | None = None
    too_small: bool = False
    event: str | None = None
    payload: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, trigger, fired: bool, reason: str, numbers: dict, noise: float | None = None,
           too_small: bool = False, payload: dict | None = None) -> "TriggerEvaluation":
        """The evaluation of the configured `trigger` (its name, type, priority and event)."""
        return cls(name=trigger.name, type=trigger.type, priority=trigger.priority, fired=fired,
                   reason=reason, numbers=numbers, noise_floor=noise, too_small=too_small,
                   event=trigger.event, payload=payload or {})

    @property
    def retrain_trigger(self) -> Trigger:
        return TYPE_TO_TRIGGER[self.type]

    def to_dict(self) -> dict[str, Any]:
        """Every field, as plain dicts and lists."""
        return asdict(self)

    def table(self) -> list[dict[str, Any]]:
        """Rows (quantity, value) for a Prefect table artifact."""
        rows = [{"quantity": "fired", "value": self.fired}, {"quantity": "reason", "value": self.reason},
                {"quantity": "priority", "value": self.priority}]
        rows += [{"quantity": k, "value": _show(v)} for k, v in self.numbers.items()]
        rows.append({"quantity": "noise_floor", "value": _show(self.noise_floor)})
        rows.append({"quantity": "too_small_to_tell", "value": self.too_small})
        return rows


def _show(v: Any) -> Any:
    if isinstance(v, float):
        return round(v, 6)
    if isinstance(v, (list, dict)):
        return json.dumps(v, default=str)
    return "-" if v is None else v


_ev = TriggerEvaluation.of


def _disabled(trigger) -> TriggerEvaluation:
    return _ev(trigger, False, "disabled in the trigger config", {})


def evaluate_data_drift(trigger: DataDriftTrigger, report, *, n_window: int | None = None,
                        production_version: str | None = None, top_k: int = 5) -> TriggerEvaluation:
    """`report` is a drift.DriftReport of the window against the production reference profile
    (None when there is nothing to compare: no production model or no stored profile).

    Rule: a feature drifts iff PSI > max(psi_threshold, its family-wise floor) (the floor noise
    over the F features compared exceeds with probability alpha, see `drift.psi`); the trigger
    fires iff at least `min_features` features drift on a window of at least `min_window` rows."""
    if not trigger.enabled:
        return _disabled(trigger)
    if report is None:
        n = n_window or 0
        return _ev(trigger, False, f"nothing to compare: no reference profile for production "
                   f"({production_version or 'none'}); window {n:,} rows", {"n_window": n},
                   too_small=n < trigger.min_window)
    n = report.n_cur
    features = [r for r in report.results if r.role == "feature"]
    score = [r for r in report.results if r.role == "score"]
    t = trigger.psi_threshold
    drifted = sorted((r for r in features if r.psi > r.bar(t)), key=lambda r: r.psi, reverse=True)
    top = sorted(features, key=lambda r: r.psi, reverse=True)[:top_k]
    max_psi = float(top[0].psi) if top else 0.0
    noise = float(top[0].family_floor) if top else None
    alpha = getattr(report, "alpha", 0.05)
    rule = (f"feature drifts iff PSI > max({t:g}, family-wise floor at alpha {alpha:g} over "
            f"{len(features)} features); fires iff >= {trigger.min_features} drift on >= {trigger.min_window:,} rows")
    numbers = {"n_window": n, "n_reference": report.n_ref, "features_compared": len(features),
               "alpha": alpha, "max_psi": round(max_psi, 6),
               "features_over_threshold": sum(r.psi > t for r in features),
               "features_above_family_floor": sum(r.above_family_floor for r in features),
               "features_drifted": len(drifted), "min_features": trigger.min_features,
               "psi_threshold": t, "min_window": trigger.min_window, "rule": rule,
               "top_features": [_feature_row(r, t) for r in top]}
    if score:
        numbers["score_psi"] = round(float(score[0].psi), 6)
        numbers["score_p_value"] = float(score[0].p_value)
    payload = {"trigger": "drift", "trigger_name": trigger.name, "max_psi": max_psi,
               "top_features": {r.feature: round(float(r.psi), 6) for r in (drifted or top)[:top_k]},
               "features_over_threshold": [r.feature for r in drifted],
               "psi_threshold": t, "n_window": n,
               "production_version": production_version}
    if "score_psi" in numbers:
        payload["score_psi"] = numbers["score_psi"]
    if n < trigger.min_window:
        return _ev(trigger, False, f"too small to tell: {n:,} rows in the window, minimum {trigger.min_window:,}",
                   numbers, noise, too_small=True, payload=payload)
    names = ", ".join(f"{r.feature} {r.psi:.3f} (p={r.p_value:.2g})" for r in drifted[:3])
    if len(drifted) >= trigger.min_features:
        return _ev(trigger, True, f"{len(drifted)} of {len(features)} features drift (PSI > max({t:g}, "
                   f"family-wise floor); need {trigger.min_features}) on {n:,} rows: {names}",
                   numbers, noise, payload=payload)
    lead = (f"; highest {top[0].feature} {max_psi:.3f} (p={top[0].p_value:.2g}, family-wise floor "
            f"{top[0].family_floor:.3f})") if top else ""
    return _ev(trigger, False, f"{len(drifted)} of {len(features)} features drift (PSI > max({t:g}, "
               f"family-wise floor)) on {n:,} rows, need {trigger.min_features}{lead}", numbers, noise,
               payload=payload)


def _feature_row(r, threshold: float) -> dict[str, Any]:
    return {"feature": r.feature, "psi": round(float(r.psi), 6), "p_value": float(r.p_value),
            "noise_floor": round(float(r.noise_floor), 6), "family_floor": round(float(r.family_floor), 6),
            "above_family_floor": bool(r.above_family_floor), "bins": r.bins,
            "drifts": bool(r.psi > r.bar(threshold))}


@dataclass(frozen=True)
class WindowAUC:
    """AUC of the production model on the labelled predictions of one time window, with its
    DeLong standard error `se` (None when unknown: then the Hanley-McNeil one is used)."""
    start: str
    end: str
    n: int
    n_pos: int
    n_neg: int
    auc: float | None
    se: float | None = None

    @property
    def standard_error(self) -> float | None:
        """`se` (DeLong) when known, else Hanley & McNeil's from auc, n_pos and n_neg."""
        return self.se if self.se is not None else auc_standard_error(self.auc, self.n_pos, self.n_neg)

    @property
    def noise_floor(self) -> float | None:
        se = self.standard_error
        return None if se is None else Z95 * se

    @property
    def upper_bound(self) -> float | None:
        """One-sided 95% upper confidence bound of the AUC: auc + z_0.95 * se."""
        se = self.standard_error
        return None if se is None or self.auc is None else self.auc + Z_ONE_SIDED * se


def auc_standard_error(auc: float | None, n_pos: int, n_neg: int) -> float | None:
    """Hanley & McNeil (1982) standard error of an AUC."""
    if auc is None or n_pos < 1 or n_neg < 1:
        return None
    q1 = auc / (2 - auc)
    q2 = 2 * auc * auc / (1 + auc)
    var = (auc * (1 - auc) + (n_pos - 1) * (q1 - auc * auc) + (n_neg - 1) * (q2 - auc * auc)) / (n_pos * n_neg)
    return math.sqrt(max(var, 0.0))


def auc_window(y, s, start, end) -> WindowAUC:
    """AUC and DeLong standard error of labels `y` (0/1) and scores `s` (non-finite scores
    dropped) for the window [start, end)."""
    y = np.asarray(y).astype(int)
    s = np.asarray(s, dtype=float)
    ok = np.isfinite(s)
    y, s = y[ok], s[ok]
    n_pos = int((y == 1).sum())
    n_neg = int((y == 0).sum())
    auc = se = None
    if n_pos and n_neg:
        auc, var = delong_auc_variance(y, s)
        se = math.sqrt(max(var, 0.0))
    return WindowAUC(str(pd.Timestamp(start)), str(pd.Timestamp(end)), int(len(s)), n_pos, n_neg, auc, se)


def spearman_window(y, s, start, end) -> WindowAUC:
    """Spearman of labels `y` and scores `s` (non-finite dropped) for [start, end), in a
    `WindowAUC` (its `auc` holds the Spearman value, `se` its standard error by the delta method
    on Fisher's z with the Bonett-Wright variance; positives and negatives both count the rows, so
    the triggers' per-class minimums apply to labelled rows)."""
    from ..evidence.correlation import fisher_se, spearman  # noqa: PLC0415 - heavy: scipy

    y = np.asarray(y, dtype=float)
    s = np.asarray(s, dtype=float)
    ok = np.isfinite(s) & np.isfinite(y)
    y, s = y[ok], s[ok]
    n = int(len(s))
    r = spearman(y, s) if n >= 4 else None
    se = None if r is None else (1 - r * r) * fisher_se(r, n)
    return WindowAUC(str(pd.Timestamp(start)), str(pd.Timestamp(end)), n, n, n, r, se)


def window_auc(labelled: pd.DataFrame, start, end, label: str = "readmitted_30d",
               score: str = "score", metric: str = "auc") -> WindowAUC:
    """AUC (and DeLong SE) - or Spearman, `metric` "spearman" - over the rows of `labelled`
    (predictions joined with labels) with a finite score."""
    make = spearman_window if metric == "spearman" else auc_window
    if not len(labelled):
        return make(np.empty(0), np.empty(0), start, end)
    return make(labelled[label].to_numpy(), labelled[score].to_numpy(dtype=float), start, end)


def window_bounds(now: datetime, length: timedelta, k: int) -> list[tuple[datetime, datetime]]:
    """k consecutive, non-overlapping windows ending at `now`, oldest first."""
    return [(now - (k - i) * length, now - (k - i - 1) * length) for i in range(k)]


def _window_row(w: WindowAUC) -> dict[str, Any]:
    se = w.standard_error
    ub = w.upper_bound
    return {"start": w.start, "end": w.end, "n": w.n, "positives": w.n_pos, "negatives": w.n_neg,
            "auc": None if w.auc is None else round(w.auc, 4), "se": None if se is None else round(se, 4),
            "upper_bound": None if ub is None else round(ub, 4)}


def evaluate_performance(trigger: PerformanceTrigger, windows: list[WindowAUC]) -> TriggerEvaluation:
    """Fires iff in each of the last `consecutive_windows` non-overlapping windows (oldest first)
    the one-sided 95% upper bound of the AUC is below `threshold`: AUC_w + z_0.95 * SE_w <
    threshold (SE_w DeLong). A window with fewer than `min_labels` labelled rows, `min_positives`
    positives or `min_negatives` negatives is too small to tell, and then the trigger does not fire."""
    if not trigger.enabled:
        return _disabled(trigger)
    k = trigger.consecutive_windows
    recent = list(windows)[-k:]
    aucs = [w.auc for w in recent]
    ubs = [w.upper_bound for w in recent]
    latest = recent[-1] if recent else None
    noise = latest.noise_floor if latest else None
    name = "AUC" if trigger.metric == "auc" else "Spearman"
    rule = (f"fires iff {name} + {Z_ONE_SIDED:.4f}*SE < {trigger.threshold:g} in each of {k} "
            f"{format_duration(trigger.window)} windows, each with >= {trigger.min_positives} positives, "
            f">= {trigger.min_negatives} negatives and >= {trigger.min_labels} labels")
    numbers = {"threshold": trigger.threshold, "consecutive_windows": k,
               "window": format_duration(trigger.window), "min_labels": trigger.min_labels,
               "min_positives": trigger.min_positives, "min_negatives": trigger.min_negatives,
               "window_auc": [None if a is None else round(a, 4) for a in aucs],
               "window_upper_bound": [None if u is None else round(u, 4) for u in ubs],
               "window_labels": [w.n for w in recent], "window_positives": [w.n_pos for w in recent],
               "windows": [_window_row(w) for w in recent], "rule": rule}
    payload = {"trigger": "performance", "trigger_name": trigger.name, "metric": trigger.metric,
               "threshold": trigger.threshold, "window_auc": numbers["window_auc"],
               "window_upper_bound": numbers["window_upper_bound"],
               "window_labels": numbers["window_labels"], "window_positives": numbers["window_positives"]}
    small = [w for w in recent if w.n < trigger.min_labels or w.auc is None or w.n_pos < trigger.min_positives
             or w.n_neg < trigger.min_negatives]
    if len(recent) < k or small:
        shown = "; ".join(f"n={w.n} pos={w.n_pos} neg={w.n_neg}" for w in recent) or "no windows"
        return _ev(trigger, False, f"too small to tell: {len(small) + k - len(recent)} of the last {k} windows "
                   f"have fewer than {trigger.min_labels} labels, {trigger.min_positives} positives or "
                   f"{trigger.min_negatives} negatives ({shown})", numbers, noise, too_small=True, payload=payload)
    below = [u < trigger.threshold for u in ubs]
    shown = ", ".join(f"{a:.3f} (upper {u:.3f}, n={w.n}, pos={w.n_pos})" for a, u, w in zip(aucs, ubs, recent))
    if all(below):
        return _ev(trigger, True, f"{name} upper bound below {trigger.threshold:g} in {k} consecutive "
                   f"{format_duration(trigger.window)} windows: {shown}", numbers, noise, payload=payload)
    streak = 0
    for b in reversed(below):
        if not b:
            break
        streak += 1
    return _ev(trigger, False, f"{name} upper bound below {trigger.threshold:g} in the last {streak} of {k} windows "
               f"needed: {shown}", numbers, noise, payload=payload)


def concept_z(trigger: ConceptDriftTrigger) -> float:
    """The one-sided normal quantile at alpha / looks (1.6449 for one look at 0.05, 2.9352 for 30)."""
    from scipy.stats import norm  # noqa: PLC0415 - heavy: scipy

    return float(norm.ppf(1 - trigger.alpha / trigger.looks))


def evaluate_concept_drift(trigger: ConceptDriftTrigger, current: WindowAUC | None,
                           reference_auc: float | None, production_version: str | None = None,
                           reference_se: float | None = None) -> TriggerEvaluation:
    """Fires iff the production model's AUC on recent labelled predictions is at least `min_drop`
    below the test AUC it was registered with AND the drop is beyond noise:
    drop > z * sqrt(SE_ref^2 + SE_cur^2), z the one-sided quantile at alpha / looks (`concept_z`;
    SE_ref the registered test AUC's standard error, SE_cur the window's DeLong one). Without
    SE_ref it cannot tell and does not fire."""
    if not trigger.enabled:
        return _disabled(trigger)
    n = current.n if current else 0
    auc = current.auc if current else None
    se_cur = current.standard_error if current else None
    noise = current.noise_floor if current else None
    z = concept_z(trigger)
    rule = (f"fires iff drop >= {trigger.min_drop:g} and drop > {z:.4f}*sqrt(SE_ref^2 + SE_cur^2) "
            f"(one-sided, alpha {trigger.alpha:g} over {trigger.looks} looks), on >= {trigger.min_labels} labels")
    numbers = {"reference_auc": reference_auc, "reference_se": reference_se, "current_auc": auc,
               "current_se": se_cur, "n_labels": n, "positives": current.n_pos if current else 0,
               "negatives": current.n_neg if current else 0,
               "min_drop": trigger.min_drop, "min_labels": trigger.min_labels,
               "window": format_duration(trigger.window), "rule": rule}
    name = "AUC" if trigger.metric == "auc" else "Spearman"
    if reference_auc is None:
        return _ev(trigger, False, f"no registered test {name} for production ({production_version or 'none'})",
                   numbers, noise)
    if n < trigger.min_labels or auc is None or se_cur is None:
        return _ev(trigger, False, f"too small to tell: {n} labelled rows in the window "
                   f"({numbers['positives']} positives), minimum {trigger.min_labels} and both classes",
                   numbers, noise, too_small=True)
    drop = reference_auc - auc
    numbers["drop"] = round(drop, 6)
    if reference_se is None:
        return _ev(trigger, False, f"cannot tell: no standard error for the registered test AUC of "
                   f"{production_version or 'production'} (drop {drop:.3f})", numbers, noise, too_small=True)
    bound = z * math.sqrt(reference_se ** 2 + se_cur ** 2)
    numbers["noise_bound"] = round(bound, 6)
    payload = {"trigger": "concept", "trigger_name": trigger.name, "reference_auc": reference_auc,
               "reference_se": reference_se, "current_auc": auc, "current_se": se_cur, "drop": drop,
               "noise_bound": bound, "n_labels": n, "positives": numbers["positives"],
               "production_version": production_version}
    head = (f"{name} {auc:.3f} (SE {se_cur:.3f}, n={n}, pos={numbers['positives']}) vs registered "
            f"{reference_auc:.3f} (SE {reference_se:.3f}): drop {drop:.3f}")
    big = drop >= trigger.min_drop - 1e-12
    beyond = drop > bound
    if big and beyond:
        return _ev(trigger, True, f"{head} >= {trigger.min_drop:g} and beyond the noise bound {bound:.3f}",
                   numbers, bound, payload=payload)
    why = (f"< min drop {trigger.min_drop:g}" if not big else "") + ("; " if not big and not beyond else "") + \
        (f"within the noise bound {bound:.3f}" if not beyond else "")
    return _ev(trigger, False, f"{head}: {why}", numbers, bound, payload=payload)


def evaluate_volume(trigger: VolumeTrigger, new_labelled_rows: int, since: str | None) -> TriggerEvaluation:
    """Fires when at least `min_new_labelled_rows` labels arrived since the last registered version."""
    if not trigger.enabled:
        return _disabled(trigger)
    numbers = {"new_labelled_rows": int(new_labelled_rows), "min_new_labelled_rows": trigger.min_new_labelled_rows,
               "since": since or "-"}
    payload = {"trigger": "volume", "trigger_name": trigger.name, "new_labelled_rows": int(new_labelled_rows),
               "since": since}
    if new_labelled_rows >= trigger.min_new_labelled_rows:
        return _ev(trigger, True, f"{new_labelled_rows:,} new labelled rows since {since or 'the start'} "
                   f"(>= {trigger.min_new_labelled_rows:,})", numbers, payload=payload)
    return _ev(trigger, False, f"{new_labelled_rows:,} new labelled rows since {since or 'the start'}, "
               f"need {trigger.min_new_labelled_rows:,}", numbers, payload=payload)


def evaluate_scheduled(trigger: ScheduledTrigger, now: datetime, last_retrain: datetime | None) -> TriggerEvaluation:
    """Scheduled retrains run on their Prefect deployment schedule: the monitor never fires this
    trigger; it reports the last and next cron times and whether a scheduled run looks missed."""
    if not trigger.enabled:
        return _disabled(trigger)
    last_tick, next_tick = cron_ticks(trigger.cron, trigger.timezone, now)
    missed = last_retrain is None or (last_tick is not None and last_retrain < last_tick)
    numbers = {"cron": trigger.cron, "timezone": trigger.timezone,
               "last_tick": last_tick.isoformat() if last_tick else "-", "next_tick": next_tick.isoformat(),
               "last_retrain": last_retrain.isoformat() if last_retrain else "-", "missed": missed}
    note = "; no retrain since the last tick" if missed else ""
    return _ev(trigger, False, f"runs on the deployment schedule ({trigger.cron} {trigger.timezone}); "
               f"next {next_tick:%Y-%m-%d %H:%M %Z}{note}", numbers)


def cron_ticks(cron: str, tz: str, now: datetime) -> tuple[datetime | None, datetime]:
    """(most recent tick at or before now within ~1 year, next tick after now), in UTC."""
    local_now = now.astimezone(ZoneInfo(tz))
    nxt = next(CronSim(cron, local_now.replace(second=0, microsecond=0)))
    last = None
    for tick in CronSim(cron, local_now - timedelta(days=370)):
        if tick > local_now:
            break
        last = tick
    to_utc = lambda d: d.astimezone(timezone.utc)  # noqa: E731
    return (to_utc(last) if last else None), to_utc(nxt)


def evaluate_manual(trigger: ManualTrigger, approvers: list[str]) -> TriggerEvaluation:
    """The manual trigger never fires from the monitor: it reports how to request a retrain and
    who approves it."""
    if not trigger.enabled:
        return _disabled(trigger)
    return _ev(trigger, False, "on request only: `retrainer retrain --manual --requested-by NAME`, approved by "
               f"{', '.join(approvers) or 'nobody (no approvers configured)'}",
               {"requires_approval": trigger.requires_approval, "approvers": approvers})


def choose(evaluations: list[TriggerEvaluation]) -> TriggerEvaluation | None:
    """The fired evaluation with the highest priority (lowest number; ties: earliest listed)."""
    fired = [(e.priority, i, e) for i, e in enumerate(evaluations) if e.fired]
    return min(fired, key=lambda t: (t[0], t[1]))[2] if fired else None
