"""The model spec: one YAML file per model (`models/<name>.yaml`) that declares everything the
lifecycle needs to know about a model - its task, its columns and identifiers, its features, the
business rules on its predictions, its label delay, split, metrics, schedule, triggers, rollout
plan and training entry point. Validated by pydantic; every problem is one line naming the file
and the key (`load_spec`).
"""
from __future__ import annotations

import re
from datetime import timedelta
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator, model_validator

Task = Literal["binary_classification", "regression", "ranking"]

# Metrics each task can be judged on; the first of each list is the default primary metric.
TASK_METRICS: dict[str, tuple[str, ...]] = {
    "binary_classification": ("auc", "brier", "f1", "precision", "recall"),
    "regression": ("spearman", "mae", "rmse"),
    "ranking": ("spearman", "mae", "rmse"),
}
# Metrics where lower is better (the gate and the canary flip the sign of the difference).
LOWER_IS_BETTER: frozenset[str] = frozenset({"brier", "mae", "rmse"})

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")


class _Strict(BaseModel):
    model_config = {"extra": "forbid"}


class Columns(_Strict):
    """The columns that are not features: the label, the event time, the row id and (optional)
    the entity key rows of one subject share (a patient, an account)."""
    label: str
    timestamp: str
    id: str
    entity: str | None = None


class Identifier(_Strict):
    """A column that identifies a person or thing. It never reaches the model. `rule` says what
    de-identification does with it before anything is stored: drop it, pseudonymise it (keyed
    HMAC, so later labels can be joined), or coarsen it (the Safe Harbor rules: a ZIP code to its
    first three digits, a date to its year)."""
    type: Literal["string", "datetime", "int"] = "string"
    rule: Literal["drop", "pseudonymise", "coarsen"] = "drop"


class Feature(_Strict):
    type: Literal["int", "float", "bool", "category"]
    range: tuple[float, float] | None = None  # numeric: [min, max], inclusive
    values: list[str] | None = None  # category: the allowed set (also the encoder's categories)
    nullable: bool = False  # legitimately missing for part of the rows (a lower `mostly`)
    monitored: bool = True  # part of the drift check

    @model_validator(mode="after")
    def _shape(self):
        if self.type == "category" and not self.values:
            raise ValueError("a category feature needs 'values'")
        if self.type != "category" and self.values is not None:
            raise ValueError(f"'values' is for category features, not {self.type}")
        if self.type in ("int", "float") and self.range is None:
            raise ValueError(f"an {self.type} feature needs 'range: [min, max]'")
        if self.type in ("bool", "category") and self.range is not None:
            raise ValueError(f"'range' is for numeric features, not {self.type}")
        if self.range is not None and self.range[0] > self.range[1]:
            raise ValueError(f"range {list(self.range)} has min above max")
        return self


class Label(_Strict):
    """The label's type and domain: `values` (a closed set), or `range` (numeric bounds); `rate`
    bounds the mean of a binary label in a training batch."""
    type: Literal["int", "float"] = "int"
    values: list[int | float] | None = None
    range: tuple[float, float] | None = None
    rate: tuple[float, float] | None = None


class Predictions(_Strict):
    """Business rules on what the model returns: a score outside [min, max] (or NaN) is a breach
    in the canary's guardrails and in the serving contract."""
    min: float | None = None
    max: float | None = None


class Split(_Strict):
    """Time-based split in whole `unit`s: the last `test` units test, the `validation` units
    before them validate, and the `train` units before those train (null: everything older, with
    at least `min_train`)."""
    unit: Literal["days", "weeks", "months"] = "months"
    train: int | None = Field(None, ge=1)
    validation: int = Field(1, ge=1)
    test: int = Field(1, ge=1)
    min_train: int = Field(1, ge=1)


class Gate(_Strict):
    """Gate thresholds on the primary metric: the candidate's value must reach `min`; against
    production, the lower bound of the paired difference must stay above -`tolerance`."""
    min: float | None = None
    tolerance: float = Field(0.02, ge=0)


class Metrics(_Strict):
    primary: str
    secondary: list[str] = Field(default_factory=list)
    gate: Gate = Gate()
    max_latency_ms: float | None = Field(None, gt=0)  # a secondary: per-row latency budget


class Slice(_Strict):
    """A subgroup the gate's fairness floor judges: a column, optionally cut into labelled bins."""
    column: str
    bins: list[tuple[float, float, str]] | None = None


class Schedule(_Strict):
    cron: str | None = None
    timezone: str = "UTC"


class Training(_Strict):
    """`entry_point` ("package.module:function") returns a fitted scikit-learn-compatible
    estimator or pipeline given the training data and `params`."""
    entry_point: str
    params: dict[str, Any] = Field(default_factory=dict)

    @field_validator("entry_point")
    @classmethod
    def _form(cls, v: str) -> str:
        mod, sep, fn = v.partition(":")
        if not sep or not mod or not fn or not all(p.isidentifier() for p in [*mod.split("."), fn]):
            raise ValueError(f"{v!r} is not 'package.module:function'")
        return v


class Validation(_Strict):
    """Batch checks the generated expectation suite makes (its `$PARAMETER` defaults)."""
    min_rows: int = Field(500, ge=1)
    null_tolerance: float = Field(0.98, ge=0, le=1)  # `mostly` for always-present columns
    nullable_tolerance: float = Field(0.7, ge=0, le=1)  # `mostly` for nullable features


class Data(_Strict):
    """Where synthetic data for the demo and the tests comes from: a "module:function" taking
    (out_dir, periods, rows_per_period, seed, drift) and returning the files it wrote."""
    generator: str | None = None


class ModelSpec(_Strict):
    name: str
    task: Task
    description: str = ""
    columns: Columns
    identifiers: dict[str, Identifier] = Field(default_factory=dict)
    features: dict[str, Feature]
    label: Label = Label()
    predictions: Predictions = Predictions()
    label_delay: timedelta
    split: Split = Split()
    metrics: Metrics
    slices: dict[str, Slice] = Field(default_factory=dict)
    schedule: Schedule = Schedule()
    triggers: str | None = None  # file, relative to the repo root
    rollout_plan: str | None = None  # file, relative to the repo root
    training: Training
    validation: Validation = Validation()
    data: Data = Data()

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not NAME_RE.match(v):
            raise ValueError(f"{v!r}: use letters, digits, '-' or '_' (at most 63)")
        return v

    @field_validator("label_delay", mode="before")
    @classmethod
    def _delay(cls, v):
        if isinstance(v, timedelta):
            d = v
        else:
            m = _DURATION.match(str(v).strip())
            if not m or isinstance(v, bool):
                raise ValueError(f"{v!r} is not a duration like 30d, 48h or 90m")
            d = timedelta(seconds=float(m.group(1)) * _UNIT_S[m.group(2)])
        if d <= timedelta(0):
            raise ValueError("must be positive: an outcome cannot be known before its prediction")
        return d

    @field_validator("features")
    @classmethod
    def _some(cls, v: dict[str, Feature]) -> dict[str, Feature]:
        if not v:
            raise ValueError("a model needs at least one feature")
        return v

    @model_validator(mode="after")
    def _consistent(self):
        c = self.columns
        special = {"label": c.label, "timestamp": c.timestamp, "id": c.id}
        for role, col in special.items():
            if col in self.features:
                raise ValueError(f"columns.{role} {col!r} is also listed as a feature")
            if col in self.identifiers and role != "id":
                raise ValueError(f"columns.{role} {col!r} is also listed as an identifier")
        both = sorted(set(self.features) & set(self.identifiers))
        if both:
            raise ValueError(f"{', '.join(both)} listed as both a feature and an identifier: an identifier "
                             "never reaches the model")
        if c.entity is not None and c.entity not in self.identifiers:
            raise ValueError(f"columns.entity {c.entity!r} must be listed under identifiers (with its rule)")
        allowed = TASK_METRICS[self.task]
        for m in [self.metrics.primary, *self.metrics.secondary]:
            if m not in allowed:
                raise ValueError(f"metric {m!r} does not apply to a {self.task} model (use {', '.join(allowed)})")
        if self.task == "binary_classification":
            if self.label.values is not None and sorted(self.label.values) != [0, 1]:
                raise ValueError("a binary_classification label takes values [0, 1]")
        elif self.label.values is None and self.label.range is None:
            raise ValueError(f"a {self.task} label needs 'values' or 'range'")
        for name, s in self.slices.items():
            if s.column not in self.features:
                raise ValueError(f"slice {name!r}: column {s.column!r} is not a feature")
        p = self.predictions
        if p.min is not None and p.max is not None and p.min > p.max:
            raise ValueError(f"predictions: min {p.min} is above max {p.max}")
        return self

    @property
    def higher_is_better(self) -> bool:
        return self.metrics.primary not in LOWER_IS_BETTER

    @property
    def label_values(self) -> list[int | float] | None:
        if self.task == "binary_classification":
            return [0, 1]
        return self.label.values

    @property
    def prediction_range(self) -> tuple[float, float]:
        """The scores the model may return: the business rule, else [0, 1] for a classifier."""
        lo, hi = self.predictions.min, self.predictions.max
        if self.task == "binary_classification":
            lo, hi = (0.0 if lo is None else lo), (1.0 if hi is None else hi)
        return (float("-inf") if lo is None else lo, float("inf") if hi is None else hi)
