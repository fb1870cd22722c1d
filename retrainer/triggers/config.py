"""Trigger configuration: the pydantic models of `triggers.yaml`, durations, and the names every
other part agrees on (retrain trigger names, event names, the event resource).

Configuration follows Protocol 24's `retraining_triggers` shape, with priorities (1 = highest):

    retraining_triggers:
      - name: data-drift
        type: data_drift            # scheduled | data_drift | performance_degradation |
        priority: 1                 # concept_drift | new_data_volume | manual
        enabled: true
        psi_threshold: 0.20
        min_features: 3           # Protocol 24
        min_window: 500
        window: 24h
      ...
    policy:                         # optional
      event_cooldown: 24h           # the same trigger is not re-emitted within this time
      dedupe_window: 24h            # a retrain on data already registered this recently is skipped
"""
from __future__ import annotations

import re
import typing
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal, Union
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import pandas as pd
import yaml
from cronsim import CronSim, CronSimError
from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from ..errors import ConfigError

# Why a retrain runs: the value of the retrain flow's `trigger` parameter (and the CLI's choices).
Trigger = Literal["manual", "scheduled", "drift", "volume", "performance", "concept"]
RETRAIN_TRIGGERS: tuple[str, ...] = typing.get_args(Trigger)

# Trigger type (in triggers.yaml) -> the retrain trigger it starts
TYPE_TO_TRIGGER: dict[str, Trigger] = {
    "scheduled": "scheduled", "data_drift": "drift", "performance_degradation": "performance",
    "concept_drift": "concept", "new_data_volume": "volume", "manual": "manual",
}
# Trigger type -> the Prefect event the monitor emits when it fires
EVENTS = {
    "data_drift": "retrainer.drift.detected",
    "performance_degradation": "retrainer.performance.degraded",
    "concept_drift": "retrainer.concept.drift",
    "new_data_volume": "retrainer.volume.reached",
}
PROFILE_FILE = "reference_profile.json"  # a version's reference profile, in its artifact directory


def resource_id(model_name: str) -> str:
    """The Prefect event resource every trigger event of `model_name` is about."""
    return f"retrainer.model.{model_name}"


def as_utc(value: str | datetime) -> datetime:
    """A timezone-aware UTC datetime from an ISO string or datetime (naive means UTC)."""
    ts = pd.Timestamp(value)
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    return ts.to_pydatetime()


# ---------------------------------------------------------------------------------------------
# Durations: "90m", "24h", "7d", "2w" or a number of hours

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400, "": 3600}


def parse_duration(value: Any) -> timedelta:
    """A positive timedelta from "90m", "24h", "7d", "2w", a number of hours or a timedelta;
    ValueError otherwise."""
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
    """The shortest whole-unit spelling of `td` ("2w", "36h", "90m", "45s")."""
    s = int(td.total_seconds())
    for unit, n in (("w", 7 * 86400), ("d", 86400), ("h", 3600), ("m", 60)):
        if s % n == 0 and s >= n:
            return f"{s // n}{unit}"
    return f"{s}s"


Duration = Annotated[timedelta, Field()]


# ---------------------------------------------------------------------------------------------
# Trigger models


class _TriggerBase(BaseModel):
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
    def retrain_trigger(self) -> Trigger:
        return TYPE_TO_TRIGGER[self.type]  # type: ignore[attr-defined]

    @property
    def event(self) -> str | None:
        return EVENTS.get(self.type)  # type: ignore[attr-defined]


def _duration_field(*names: str):
    return field_validator(*names, mode="before")(lambda cls, v: parse_duration(v))


class ScheduledTrigger(_TriggerBase):
    type: Literal["scheduled"]
    cron: str = "0 2 1 * *"
    timezone: str = "UTC"

    @field_validator("cron")
    @classmethod
    def _cron(cls, v: str) -> str:
        try:
            CronSim(v, datetime(2024, 1, 1))
        except CronSimError as exc:
            raise ValueError(f"bad cron {v!r}: {exc}") from None
        return v

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {v!r}") from None
        return v


class DataDriftTrigger(_TriggerBase):
    type: Literal["data_drift"]
    psi_threshold: float = Field(0.20, gt=0)
    min_features: int = Field(3, ge=1)  # Protocol 24: at least 3 features drift
    min_window: int = Field(500, ge=1)
    window: timedelta = timedelta(hours=24)
    parse_durations = _duration_field("window")


class _LabelledAucTrigger(_TriggerBase):
    """A trigger judged on the production model's primary metric over labelled predictions in a
    window: `auc` (a classifier) or `spearman` (a regression or ranking model; then
    `min_positives`/`min_negatives` apply to labelled rows)."""
    metric: Literal["auc", "spearman"] = "auc"
    window: timedelta
    min_labels: int = Field(200, ge=1)
    parse_durations = _duration_field("window")


class PerformanceTrigger(_LabelledAucTrigger):
    type: Literal["performance_degradation"]
    threshold: float = Field(0.70, gt=0, le=1)
    consecutive_windows: int = Field(3, ge=1, le=100)
    window: timedelta = timedelta(days=7)
    min_positives: int = Field(50, ge=1)  # per window; fewer = too small to tell
    min_negatives: int = Field(50, ge=1)


class ConceptDriftTrigger(_LabelledAucTrigger):
    """`looks`: how many monitor runs judge overlapping windows of the same data (30 daily runs of
    a 30-day window); the noise bound uses z at `alpha / looks` (Bonferroni), so a model that has
    not changed fires with probability below `alpha` over that many runs, not on each of them."""
    type: Literal["concept_drift"]
    min_drop: float = Field(0.05, gt=0, le=1)
    window: timedelta = timedelta(days=30)
    alpha: float = Field(0.05, gt=0, lt=1)
    looks: int = Field(30, ge=1)


class VolumeTrigger(_TriggerBase):
    type: Literal["new_data_volume"]
    min_new_labelled_rows: int = Field(10_000, ge=1)


class ManualTrigger(_TriggerBase):
    type: Literal["manual"]
    requires_approval: bool = True
    # When set, an approver must be listed here AND in settings.approvers (it can only narrow).
    approvers: list[str] | None = None


# One configured trigger of any type (pydantic picks the model by `type`).
TriggerSpec = Annotated[Union[ScheduledTrigger, DataDriftTrigger, PerformanceTrigger, ConceptDriftTrigger,
                              VolumeTrigger, ManualTrigger], Field(discriminator="type")]


class Policy(BaseModel):
    model_config = {"extra": "forbid"}

    event_cooldown: timedelta = timedelta(hours=24)
    dedupe_window: timedelta = timedelta(hours=24)
    parse_durations = _duration_field("event_cooldown", "dedupe_window")


class TriggersConfig(BaseModel):
    model_config = {"extra": "forbid"}

    retraining_triggers: list[TriggerSpec] = Field(min_length=1)
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
        """The enabled triggers of `type_`, in file order."""
        return [t for t in self.enabled if t.type == type_]

    def get(self, name: str):
        """The trigger called `name` (enabled or not); KeyError when there is none."""
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
    """The validated trigger config in the YAML file `path`; ConfigError (one line) otherwise."""
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
    config = parse_triggers(data, str(path))
    _check_metrics(config, path)
    return config


def _check_metrics(config: "TriggersConfig", path: Path) -> None:
    """A labelled trigger's metric must be the active model's primary metric kind: auc for a
    classifier, spearman for a regression or ranking model."""
    from .. import schema as S  # noqa: PLC0415 - cycle: schema -> spec -> settings

    want = "auc" if S.TASK == "binary_classification" else "spearman"
    for t in config.retraining_triggers:
        metric = getattr(t, "metric", None)
        if metric is not None and metric != want:
            raise ConfigError(f"trigger config {path}: {t.name}: metric {metric!r} does not fit {S.MODEL} "
                              f"(a {S.TASK} model): use metric: {want}")
