"""Retraining triggers: configuration (`triggers.yaml`), pure evaluation, priorities, duplicates.

Configuration follows Protocol 24's `retraining_triggers` shape, with priorities (1 = highest):

    retraining_triggers:
      - name: data-drift
        type: data_drift            # scheduled | data_drift | performance_degradation |
        priority: 1                 # concept_drift | new_data_volume | manual
        enabled: true
        psi_threshold: 0.20
        min_features: 1
        min_window: 500
        window: 24h
      ...
    policy:                         # optional
      event_cooldown: 24h           # the same trigger is not re-emitted within this time
      dedupe_window: 24h            # a retrain on data already registered this recently is skipped

Every evaluation function is pure: its inputs (numbers already read from the prediction store and
the registry) and the clock (`now`) are passed in, and it returns a `TriggerEvaluation`: fired or
not, a one-line reason, the numbers it decided on, and the noise floor where one applies. A window
smaller than the configured minimum is "too small to tell" and never fires. When several triggers
fire at once, `choose` reports the one with the highest priority (lowest number; ties: the order in
the file).

Plain Python: this module must never import prefect.
"""
from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import numpy as np
import pandas as pd
from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from .errors import ConfigError

# Trigger type -> (value of the retrain flow's `trigger` parameter, Prefect event it emits)
TYPE_TO_TRIGGER = {
    "scheduled": "scheduled", "data_drift": "drift", "performance_degradation": "performance",
    "concept_drift": "concept", "new_data_volume": "volume", "manual": "manual",
}
EVENTS = {
    "data_drift": "retrainer.drift.detected",
    "performance_degradation": "retrainer.performance.degraded",
    "concept_drift": "retrainer.concept.drift",
    "new_data_volume": "retrainer.volume.reached",
}
PROFILE_FILE = "reference_profile.json"
Z95 = 1.959964  # two-sided 95% normal quantile, for AUC noise floors


def resource_id(model_name: str) -> str:
    """The Prefect event resource every trigger event of `model_name` is about."""
    return f"retrainer.model.{model_name}"


# ---------------------------------------------------------------------------------------------
# Durations: "90m", "24h", "7d", "2w" or a number of hours

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400, "": 3600}


def parse_duration(value: Any) -> timedelta:
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool):
        raise ValueError("must be a duration like 90m, 24h or 7d")
    if isinstance(value, (int, float)):
        seconds = float(value) * 3600
    else:
        m = _DURATION.match(str(value))
        if not m:
            raise ValueError(f"{value!r} is not a duration like 90m, 24h or 7d")
        seconds = float(m.group(1)) * _UNIT_S[m.group(2)]
    if seconds <= 0:
        raise ValueError("must be a positive duration")
    return timedelta(seconds=seconds)


def format_duration(td: timedelta) -> str:
    s = int(td.total_seconds())
    for unit, n in (("w", 7 * 86400), ("d", 86400), ("h", 3600), ("m", 60)):
        if s % n == 0 and s >= n:
            return f"{s // n}{unit}"
    return f"{s}s"


Duration = Annotated[timedelta, Field()]


class _Trigger(BaseModel):
    model_config = {"extra": "forbid"}

    name: str = Field(min_length=1)
    priority: int = Field(ge=1)
    enabled: bool = True

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not re.fullmatch(r"[a-z0-9][a-z0-9-]*", v):
            raise ValueError("must be lowercase letters, digits and dashes (it is used in artifact keys)")
        return v

    @property
    def retrain_trigger(self) -> str:
        return TYPE_TO_TRIGGER[self.type]  # type: ignore[attr-defined]

    @property
    def event(self) -> str | None:
        return EVENTS.get(self.type)  # type: ignore[attr-defined]


def _duration_field(*names: str):
    return field_validator(*names, mode="before")(lambda cls, v: parse_duration(v))


class ScheduledTrigger(_Trigger):
    type: Literal["scheduled"]
    cron: str = "0 2 1 * *"
    timezone: str = "UTC"

    @field_validator("cron")
    @classmethod
    def _cron(cls, v: str) -> str:
        from cronsim import CronSim, CronSimError

        try:
            CronSim(v, datetime(2024, 1, 1))
        except CronSimError as exc:
            raise ValueError(f"bad cron {v!r}: {exc}") from None
        return v

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {v!r}") from None
        return v


class DataDriftTrigger(_Trigger):
    type: Literal["data_drift"]
    psi_threshold: float = Field(0.20, gt=0)
    min_features: int = Field(1, ge=1)  # Protocol 24 uses 3; see triggers.yaml
    min_window: int = Field(500, ge=1)
    window: timedelta = timedelta(hours=24)
    parse_durations = _duration_field("window")


class _LabelledAucTrigger(_Trigger):
    """A trigger judged on AUC over labelled predictions in a window."""
    metric: Literal["auc"] = "auc"
    window: timedelta
    min_labels: int = Field(200, ge=1)
    parse_durations = _duration_field("window")


class PerformanceTrigger(_LabelledAucTrigger):
    type: Literal["performance_degradation"]
    threshold: float = Field(0.70, gt=0, le=1)
    consecutive_windows: int = Field(3, ge=1, le=100)
    window: timedelta = timedelta(days=7)


class ConceptDriftTrigger(_LabelledAucTrigger):
    type: Literal["concept_drift"]
    min_drop: float = Field(0.05, gt=0, le=1)
    window: timedelta = timedelta(days=30)


class VolumeTrigger(_Trigger):
    type: Literal["new_data_volume"]
    min_new_labelled_rows: int = Field(10_000, ge=1)


class ManualTrigger(_Trigger):
    type: Literal["manual"]
    requires_approval: bool = True
    # When set, an approver must be listed here AND in settings.approvers (it can only narrow).
    approvers: list[str] | None = None


Trigger = Annotated[Union[ScheduledTrigger, DataDriftTrigger, PerformanceTrigger, ConceptDriftTrigger,
                          VolumeTrigger, ManualTrigger], Field(discriminator="type")]


class Policy(BaseModel):
    model_config = {"extra": "forbid"}

    event_cooldown: timedelta = timedelta(hours=24)
    dedupe_window: timedelta = timedelta(hours=24)
    parse_durations = _duration_field("event_cooldown", "dedupe_window")


class TriggersConfig(BaseModel):
    model_config = {"extra": "forbid"}

    retraining_triggers: list[Trigger] = Field(min_length=1)
    policy: Policy = Policy()

    @model_validator(mode="after")
    def _unique(self) -> "TriggersConfig":
        names = [t.name for t in self.retraining_triggers]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"trigger names must be unique; repeated: {', '.join(dup)}")
        return self

    @property
    def enabled(self) -> list:
        return [t for t in self.retraining_triggers if t.enabled]

    def by_type(self, type_: str) -> list:
        return [t for t in self.enabled if t.type == type_]

    def get(self, name: str):
        for t in self.retraining_triggers:
            if t.name == name:
                return t
        raise KeyError(name)


def parse_triggers(data: Any, source: str = "triggers") -> TriggersConfig:
    """Validate an already-loaded mapping; any problem is one ConfigError line."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping with a `retraining_triggers:` list")
    try:
        return TriggersConfig.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = list(err["loc"])
        # readable location: retraining_triggers[2].psi_threshold (drop the union tag pydantic adds)
        where = ""
        for part in loc:
            if isinstance(part, int):
                where += f"[{part}]"
            elif part in EVENTS or part in TYPE_TO_TRIGGER:
                continue
            else:
                where += ("." if where else "") + str(part)
        if len(loc) >= 2 and loc[0] == "retraining_triggers" and isinstance(loc[1], int):
            entries = data.get("retraining_triggers") or []
            if isinstance(entries, list) and loc[1] < len(entries) and isinstance(entries[loc[1]], dict):
                name = entries[loc[1]].get("name")
                if name:
                    where += f" ({name})"
        msg = err["msg"].removeprefix("Value error, ")
        more = f" (and {len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else ""
        raise ConfigError(f"bad trigger config {source}: {where or 'file'}: {msg}{more}") from None


def load_triggers(path: str | Path) -> TriggersConfig:
    import yaml

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"trigger config {path} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"cannot read trigger config {path}: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        first = str(exc).strip().splitlines()
        raise ConfigError(f"trigger config {path} is not valid YAML: {' '.join(first[:1])}") from None
    return parse_triggers(data, str(path))


# ---------------------------------------------------------------------------------------------
# Evaluations


@dataclass
class TriggerEvaluation:
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

    @property
    def retrain_trigger(self) -> str:
        return TYPE_TO_TRIGGER[self.type]

    def to_dict(self) -> dict[str, Any]:
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
        import json

        return json.dumps(v, default=str)
    return "-" if v is None else v


def _ev(trigger, fired: bool, reason: str, numbers: dict, noise: float | None = None,
        too_small: bool = False, payload: dict | None = None) -> TriggerEvaluation:
    return TriggerEvaluation(name=trigger.name, type=trigger.type, priority=trigger.priority, fired=fired,
                             reason=reason, numbers=numbers, noise_floor=noise, too_small=too_small,
                             event=trigger.event, payload=payload or {})


def _disabled(trigger) -> TriggerEvaluation:
    return _ev(trigger, False, "disabled in the trigger config", {})


def evaluate_data_drift(trigger: DataDriftTrigger, report, *, n_window: int | None = None,
                        production_version: str | None = None, top_k: int = 5) -> TriggerEvaluation:
    """`report` is a drift.DriftReport of the window against the production reference profile
    (None when there is nothing to compare: no production model or no stored profile)."""
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
    drifted = sorted((r for r in features if r.psi > trigger.psi_threshold), key=lambda r: r.psi, reverse=True)
    top = sorted(features, key=lambda r: r.psi, reverse=True)[:top_k]
    max_psi = float(top[0].psi) if top else 0.0
    noise = float(top[0].noise_floor) if top else None
    numbers = {"n_window": n, "n_reference": report.n_ref, "max_psi": round(max_psi, 6),
               "features_over_threshold": len(drifted), "min_features": trigger.min_features,
               "psi_threshold": trigger.psi_threshold, "min_window": trigger.min_window,
               "top_features": [{"feature": r.feature, "psi": round(float(r.psi), 6),
                                 "noise_floor": round(float(r.noise_floor), 6)} for r in top]}
    if score:
        numbers["score_psi"] = round(float(score[0].psi), 6)
    payload = {"trigger": "drift", "trigger_name": trigger.name, "max_psi": max_psi,
               "top_features": {r.feature: round(float(r.psi), 6) for r in (drifted or top)[:top_k]},
               "features_over_threshold": [r.feature for r in drifted],
               "psi_threshold": trigger.psi_threshold, "n_window": n,
               "production_version": production_version}
    if "score_psi" in numbers:
        payload["score_psi"] = numbers["score_psi"]
    if n < trigger.min_window:
        return _ev(trigger, False, f"too small to tell: {n:,} rows in the window, minimum {trigger.min_window:,}",
                   numbers, noise, too_small=True, payload=payload)
    names = ", ".join(f"{r.feature} {r.psi:.3f}" for r in drifted[:3])
    if len(drifted) >= trigger.min_features:
        return _ev(trigger, True, f"{len(drifted)} feature(s) with PSI > {trigger.psi_threshold:g} "
                   f"(need {trigger.min_features}): {names}", numbers, noise, payload=payload)
    lead = f"; highest {top[0].feature} {max_psi:.3f}" if top else ""
    return _ev(trigger, False, f"{len(drifted)} feature(s) with PSI > {trigger.psi_threshold:g}, need "
               f"{trigger.min_features}{lead} (noise floor {noise or 0:.3f})", numbers, noise, payload=payload)


@dataclass(frozen=True)
class WindowAUC:
    """AUC of the production model on the labelled predictions of one time window."""
    start: str
    end: str
    n: int
    n_pos: int
    n_neg: int
    auc: float | None

    @property
    def noise_floor(self) -> float | None:
        se = auc_standard_error(self.auc, self.n_pos, self.n_neg)
        return None if se is None else Z95 * se


def auc_standard_error(auc: float | None, n_pos: int, n_neg: int) -> float | None:
    """Hanley & McNeil (1982) standard error of an AUC."""
    if auc is None or n_pos < 1 or n_neg < 1:
        return None
    q1 = auc / (2 - auc)
    q2 = 2 * auc * auc / (1 + auc)
    var = (auc * (1 - auc) + (n_pos - 1) * (q1 - auc * auc) + (n_neg - 1) * (q2 - auc * auc)) / (n_pos * n_neg)
    return math.sqrt(max(var, 0.0))


def window_auc(labelled: pd.DataFrame, start, end, label: str = "readmitted_30d",
               score: str = "score") -> WindowAUC:
    """AUC over the rows of `labelled` (predictions joined with labels) with a finite score."""
    s = labelled[score].to_numpy(dtype=float) if len(labelled) else np.empty(0)
    ok = np.isfinite(s)
    y = labelled[label].to_numpy()[ok] if len(labelled) else np.empty(0)
    s = s[ok]
    n_pos = int((y == 1).sum())
    n_neg = int((y == 0).sum())
    auc = None
    if n_pos and n_neg:
        from sklearn.metrics import roc_auc_score

        auc = float(roc_auc_score(y, s))
    return WindowAUC(str(pd.Timestamp(start)), str(pd.Timestamp(end)), int(len(s)), n_pos, n_neg, auc)


def window_bounds(now: datetime, length: timedelta, k: int) -> list[tuple[datetime, datetime]]:
    """k consecutive, non-overlapping windows ending at `now`, oldest first."""
    return [(now - (k - i) * length, now - (k - i - 1) * length) for i in range(k)]


def evaluate_performance(trigger: PerformanceTrigger, windows: list[WindowAUC]) -> TriggerEvaluation:
    """Fires when each of the last `consecutive_windows` windows (oldest first) has AUC below
    `threshold`. A window with fewer than `min_labels` labelled rows (or a single class) is too
    small to tell, and then the trigger does not fire."""
    if not trigger.enabled:
        return _disabled(trigger)
    k = trigger.consecutive_windows
    recent = list(windows)[-k:]
    aucs = [w.auc for w in recent]
    latest = recent[-1] if recent else None
    noise = latest.noise_floor if latest else None
    numbers = {"threshold": trigger.threshold, "consecutive_windows": k,
               "window": format_duration(trigger.window), "min_labels": trigger.min_labels,
               "window_auc": [None if a is None else round(a, 4) for a in aucs],
               "window_labels": [w.n for w in recent]}
    payload = {"trigger": "performance", "trigger_name": trigger.name, "metric": trigger.metric,
               "threshold": trigger.threshold, "window_auc": numbers["window_auc"],
               "window_labels": numbers["window_labels"]}
    small = [w for w in recent if w.n < trigger.min_labels or w.auc is None]
    if len(recent) < k or small:
        return _ev(trigger, False, f"too small to tell: {len(small) + k - len(recent)} of the last {k} windows "
                   f"have fewer than {trigger.min_labels} labelled rows or one class", numbers, noise,
                   too_small=True, payload=payload)
    below = [a < trigger.threshold for a in aucs]
    shown = ", ".join(f"{a:.3f}" for a in aucs)
    if all(below):
        return _ev(trigger, True, f"AUC below {trigger.threshold:g} in {k} consecutive "
                   f"{format_duration(trigger.window)} windows ({shown})", numbers, noise, payload=payload)
    streak = 0
    for b in reversed(below):
        if not b:
            break
        streak += 1
    return _ev(trigger, False, f"AUC below {trigger.threshold:g} in the last {streak} of {k} windows needed "
               f"({shown})", numbers, noise, payload=payload)


def evaluate_concept_drift(trigger: ConceptDriftTrigger, current: WindowAUC | None,
                           reference_auc: float | None, production_version: str | None = None) -> TriggerEvaluation:
    """Fires when the production model's AUC on recent labelled predictions is at least
    `min_drop` below the test AUC it was registered with."""
    if not trigger.enabled:
        return _disabled(trigger)
    n = current.n if current else 0
    auc = current.auc if current else None
    noise = current.noise_floor if current else None
    numbers = {"reference_auc": reference_auc, "current_auc": auc, "n_labels": n,
               "min_drop": trigger.min_drop, "min_labels": trigger.min_labels,
               "window": format_duration(trigger.window)}
    if reference_auc is None:
        return _ev(trigger, False, f"no registered test AUC for production ({production_version or 'none'})",
                   numbers, noise)
    if n < trigger.min_labels or auc is None:
        return _ev(trigger, False, f"too small to tell: {n} labelled rows in the window, minimum "
                   f"{trigger.min_labels}", numbers, noise, too_small=True)
    drop = reference_auc - auc
    numbers["drop"] = round(drop, 6)
    payload = {"trigger": "concept", "trigger_name": trigger.name, "reference_auc": reference_auc,
               "current_auc": auc, "drop": drop, "n_labels": n, "production_version": production_version}
    beyond = "" if noise is None else (" (beyond" if drop > noise else " (within") + f" the noise floor {noise:.3f})"
    if drop >= trigger.min_drop - 1e-12:
        return _ev(trigger, True, f"AUC {auc:.3f} is {drop:.3f} below the registered {reference_auc:.3f} "
                   f"(min drop {trigger.min_drop:g}){beyond}", numbers, noise, payload=payload)
    return _ev(trigger, False, f"AUC {auc:.3f} vs registered {reference_auc:.3f}: drop {drop:.3f} < "
               f"{trigger.min_drop:g}{beyond}", numbers, noise, payload=payload)


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
    from zoneinfo import ZoneInfo

    from cronsim import CronSim

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
    if not trigger.enabled:
        return _disabled(trigger)
    return _ev(trigger, False, "on request only: `retrainer retrain --manual --requested-by NAME`, approved by "
               f"{', '.join(approvers) or 'nobody (no approvers configured)'}",
               {"requires_approval": trigger.requires_approval, "approvers": approvers})


def choose(evaluations: list[TriggerEvaluation]) -> TriggerEvaluation | None:
    """The fired evaluation with the highest priority (lowest number; ties: earliest listed)."""
    fired = [(e.priority, i, e) for i, e in enumerate(evaluations) if e.fired]
    return min(fired, key=lambda t: (t[0], t[1]))[2] if fired else None


# ---------------------------------------------------------------------------------------------
# Emission policy, approvals, duplicates


@dataclass(frozen=True)
class EmitDecision:
    emit: bool
    reason: str


def emit_decision(evaluation: TriggerEvaluation | None, last_emitted: datetime | None, now: datetime,
                  cooldown: timedelta) -> EmitDecision:
    """Emit the chosen trigger's event unless the same trigger was emitted within `cooldown`
    (persistent drift must not start a retrain every hour)."""
    if evaluation is None:
        return EmitDecision(False, "no trigger fired")
    if evaluation.event is None:
        return EmitDecision(False, f"{evaluation.name} has no event")
    if last_emitted is not None and now - last_emitted < cooldown:
        return EmitDecision(False, f"{evaluation.name} already emitted at {last_emitted.isoformat()} "
                                   f"(cooldown {format_duration(cooldown)})")
    return EmitDecision(True, f"{evaluation.name} fired: {evaluation.event}")


def effective_approvers(settings_approvers: list[str], manual: ManualTrigger | None) -> list[str]:
    """settings.approvers, narrowed by the manual trigger's own list when it has one."""
    if manual is not None and manual.approvers is not None:
        return [a for a in settings_approvers if a in manual.approvers]
    return list(settings_approvers)


@dataclass(frozen=True)
class ApprovalDecision:
    approved: bool
    reason: str


def approval_decision(approver: str, approve: bool, reason: str, approvers: list[str]) -> ApprovalDecision:
    who = (approver or "").strip()
    if who not in approvers:
        return ApprovalDecision(False, f"rejected: {who or '(nobody)'} is not an approver "
                                       f"(approvers: {', '.join(approvers) or 'none'})")
    if not approve:
        return ApprovalDecision(False, f"rejected by {who}: {reason or 'no reason given'}")
    return ApprovalDecision(True, f"approved by {who}: {reason or 'no reason given'}")


@dataclass(frozen=True)
class DuplicateDecision:
    duplicate: bool
    reason: str
    version: str | None = None


def _as_utc(value: str | datetime) -> datetime:
    ts = pd.Timestamp(value)
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    return ts.to_pydatetime()


def duplicate_decision(*, schema_hash: str, data_hash: str, params_hash: str, records: list,
                       run_created_at: str | datetime | None, now: datetime, window: timedelta,
                       trigger: str) -> DuplicateDecision:
    """Skip a retrain as duplicate work when a version with the same fingerprint (schema, training
    data and parameters) was registered after this run was created (another run did the same work
    meanwhile), or - for automatic triggers - within `window` before now (debounce). A manual
    retrain is only skipped by the first rule: someone asked for it explicitly."""
    same = [r for r in records if (r.schema_hash, r.data_hash, r.params_hash) == (schema_hash, data_hash, params_hash)]
    if not same:
        return DuplicateDecision(False, "no registered version has this training data and settings")
    newest = max(same, key=lambda r: _as_utc(r.created_at))
    created = _as_utc(newest.created_at)
    if run_created_at is not None and created >= _as_utc(run_created_at):
        return DuplicateDecision(True, f"duplicate: {newest.version} was registered from the same data and "
                                       f"settings after this run was created", newest.version)
    age = now - created
    if trigger != "manual" and age < window:
        return DuplicateDecision(True, f"duplicate: {newest.version} was registered from the same data and "
                                       f"settings {format_duration(timedelta(seconds=int(age.total_seconds())) or timedelta(seconds=1))} "
                                       f"ago (debounce {format_duration(window)})", newest.version)
    return DuplicateDecision(False, f"{newest.version} has the same data but was registered "
                                    f"{'before this run' if trigger == 'manual' else 'outside the debounce window'}")


def concurrency_limit_name(model_name: str) -> str:
    return f"retrain-{model_name}"


# ---------------------------------------------------------------------------------------------
# Reference profile of a new version (fitted in the retrain flow, stored with the artifacts)


def fit_reference_profile(model, train: pd.DataFrame, validation: pd.DataFrame, settings,
                          meta: dict | None = None):
    """Profile of the training and validation data with the model's predicted score as the
    `score` column, binned with settings.drift.n_bins. Monitoring reads it from the version's
    artifact directory and only has to count the current window."""
    from . import schema as S
    from .drift import ReferenceProfile

    frame = pd.concat([train, validation], ignore_index=True)
    cols = {c: frame[c] for c in S.FEATURES}
    cols["score"] = model.predict(frame)
    data = pd.DataFrame(cols)
    return ReferenceProfile.fit(data, features=list(S.FEATURES), n_bins=settings.drift.n_bins,
                                score_column="score", meta=dict(meta or {}))


# ---------------------------------------------------------------------------------------------
# Monitoring: gather the numbers, evaluate every trigger


@dataclass
class MonitorInputs:
    now: datetime
    production_version: str | None = None
    production_auc: float | None = None
    last_retrain_at: datetime | None = None
    drift_report: Any = None  # drift.DriftReport or None
    drift_window_rows: int = 0
    drift_error: str | None = None
    performance_windows: dict[str, list[WindowAUC]] = field(default_factory=dict)  # trigger name ->
    concept_windows: dict[str, WindowAUC] = field(default_factory=dict)
    new_labelled_rows: int = 0
    approvers: list[str] = field(default_factory=list)


def collect_inputs(config: TriggersConfig, registry, predictions, settings, now: datetime) -> MonitorInputs:
    """Read what the triggers need: the recent window of de-identified predictions of the
    production version, its stored reference profile, labelled windows and label counts."""
    from . import drift
    from .errors import RetrainerError

    now = _as_utc(now)
    inputs = MonitorInputs(now=now)
    prod = registry.production()
    versions = registry.list()
    if versions:
        inputs.last_retrain_at = max(_as_utc(r.created_at) for r in versions)
    manual = next(iter(config.by_type("manual")), None)
    inputs.approvers = effective_approvers(settings.approvers, manual)
    if prod is not None:
        inputs.production_version = prod.version
        inputs.production_auc = (prod.metrics.get("candidate") or {}).get("auc")

    def prod_rows(frame: pd.DataFrame) -> pd.DataFrame:
        if prod is None or not len(frame):
            return frame
        return frame[frame["version"].astype(str) == prod.version]

    for trig in config.by_type("data_drift")[:1]:  # one window/profile per run: the first drift trigger
        window = prod_rows(predictions.read(now - trig.window, now))
        inputs.drift_window_rows = int(len(window))
        if prod is None:
            inputs.drift_error = "no production version"
            continue
        try:
            profile = drift.ReferenceProfile.load(Path(registry.verify(prod.version)) / PROFILE_FILE)
        except RetrainerError as exc:
            inputs.drift_error = str(exc)
            continue
        if len(window) == 0:
            continue
        ds = settings.drift.model_copy(update={"psi_threshold": trig.psi_threshold,
                                               "min_window": trig.min_window,
                                               "features_required": trig.min_features})
        inputs.drift_report = profile.score(window, ds)

    for trig in config.by_type("performance_degradation"):
        bounds = window_bounds(now, trig.window, trig.consecutive_windows)
        lab = prod_rows(predictions.labelled(bounds[0][0], now))
        inputs.performance_windows[trig.name] = [
            window_auc(lab[(lab["ts"] >= pd.Timestamp(a)) & (lab["ts"] < pd.Timestamp(b))], a, b) for a, b in bounds]
    for trig in config.by_type("concept_drift"):
        lab = prod_rows(predictions.labelled(now - trig.window, now))
        inputs.concept_windows[trig.name] = window_auc(lab, now - trig.window, now)
    if config.by_type("new_data_volume"):
        inputs.new_labelled_rows = predictions.count_labels_since(inputs.last_retrain_at)
    return inputs


def evaluate_all(config: TriggersConfig, inputs: MonitorInputs) -> list[TriggerEvaluation]:
    """Every configured trigger's evaluation, in file order."""
    out = []
    for t in config.retraining_triggers:
        if t.type == "data_drift":
            if inputs.drift_report is None and inputs.drift_error and t.enabled:
                e = evaluate_data_drift(t, None, n_window=inputs.drift_window_rows,
                                        production_version=inputs.production_version)
                e.reason = f"nothing to compare: {inputs.drift_error}"
            elif inputs.drift_report is None and t.enabled:
                e = _ev(t, False, f"too small to tell: {inputs.drift_window_rows:,} rows in the window, "
                        f"minimum {t.min_window:,}", {"n_window": inputs.drift_window_rows,
                                                      "min_window": t.min_window}, too_small=True)
            else:
                e = evaluate_data_drift(t, inputs.drift_report, production_version=inputs.production_version)
        elif t.type == "performance_degradation":
            e = evaluate_performance(t, inputs.performance_windows.get(t.name, []))
        elif t.type == "concept_drift":
            e = evaluate_concept_drift(t, inputs.concept_windows.get(t.name), inputs.production_auc,
                                       inputs.production_version)
        elif t.type == "new_data_volume":
            e = evaluate_volume(t, inputs.new_labelled_rows,
                                inputs.last_retrain_at.isoformat() if inputs.last_retrain_at else None)
        elif t.type == "scheduled":
            e = evaluate_scheduled(t, inputs.now, inputs.last_retrain_at)
        else:
            e = evaluate_manual(t, inputs.approvers)
        if e.payload:
            e.payload.setdefault("production_version", inputs.production_version)
            e.payload["evaluated_at"] = inputs.now.isoformat()
        out.append(e)
    return out


# ---------------------------------------------------------------------------------------------
# Monitor state: when each trigger's event was last emitted (small JSON, written atomically)


def state_path(home: Path) -> Path:
    return Path(home) / "monitor" / "state.json"


def load_state(home: Path) -> dict[str, Any]:
    import json

    path = state_path(home)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {"last_emitted": {}, "runs": []}
    except (OSError, ValueError):
        return {"last_emitted": {}, "runs": [], "note": f"unreadable state at {path} was reset"}


def save_state(home: Path, state: dict[str, Any]) -> None:
    import json

    from .registry import atomic_write_text

    path = state_path(home)
    path.parent.mkdir(parents=True, exist_ok=True)
    state["runs"] = state.get("runs", [])[-200:]
    atomic_write_text(path, json.dumps(state, indent=2, sort_keys=True, default=str))


def last_emitted(state: dict[str, Any], name: str) -> datetime | None:
    v = state.get("last_emitted", {}).get(name)
    return _as_utc(v) if v else None
