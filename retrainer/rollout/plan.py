"""Rollout plans: which share of traffic the candidate gets, for how long, checked how often, what
each stage must show before the next one, and by which strategy.

A `RolloutPlan` is a `strategy` and a sequence of `Stage`s. Plans are written as YAML files under
`rollout-plans/` (`RolloutPlan.from_file`) and cross process boundaries (flow parameters, persisted
task results, the rollout journal) as plain dicts: `to_dict()` and `from_dict()` are the one
conversion, and `from_dict` still reads the older `{"stages": [{"traffic", "duration_s",
"check_interval_s"}]}` shape.

Strategies (all run by the same canary flow and decided by `policy.check`):

* `canary`: one stage at a small share (the default: 10% for 72 h, checked every 6 h);
* `linear`: several stages of rising traffic, each with its own `criteria`; the last should reach
  100% (or the plan says `allow_partial: true`);
* `shadow`: the candidate answers nothing (weight 0) but scores every request in shadow for the
  shadow duration, then a blue/green cutover to 100% on the non-inferiority verdict; on SageMaker
  the candidate is a shadow variant fed `sampling_percentage` % of the requests (default 100);
* `ab`: two versions at a fixed split with a winner decided by `retrainer.rollout.ab`;
* `immediate`: 100% at once, only with a named approver.

The YAML form (durations like "30s", "5m", "2h", "3d"):

    strategy: linear
    check_interval: 5m            # default of every stage
    criteria: {latency_spike: 0.5, min_requests: 200}   # default of every stage, per metric
    stages:
      - {traffic: 0.05, duration: 2h, criteria: {error_rate: 0.02, p95_latency_ms: 150}}
      - {traffic: 1.0, duration: 24h}

Validation comes first: every problem is a `ConfigError` of one line naming the file (when there is
one), the stage and the key.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Mapping

import yaml

from ..errors import ConfigError
from ..triggers.config import parse_duration

STRATEGIES = ("canary", "linear", "shadow", "ab", "immediate")
# criteria: metric -> what its limit means
CRITERIA = {
    "error_rate": "maximum share of failed requests (Clopper-Pearson lower bound above it: fail)",
    "p95_latency_ms": "maximum p95 latency in ms (order-statistic lower bound above it: fail)",
    "latency_spike": "maximum relative increase of the candidate's p95 over production's (0.5: +50%)",
    "min_requests": "requests the stage needs before it may advance (and before latency is judged)",
    "max_disagreement": "shadow: maximum share of rows the two models put on different sides of 0.5",
}
SHADOW_ONLY = {"max_disagreement"}
AB_METRICS = ("auc", "error_rate", "latency_ms", "outcome", "score")

_TOP_KEYS = {"strategy", "description", "stages", "check_interval", "criteria", "resume_grace", "resume_grace_s",
             "allow_partial", "shadow", "ab", "approval", "cutover"}
_STAGE_KEYS = {"traffic", "duration", "check_interval", "duration_s", "check_interval_s", "criteria", "shadow",
               "sampling_percentage"}
_SHADOW_KEYS = {"duration", "check_interval", "criteria", "sampling_percentage"}
_AB_KEYS = {"split", "metric", "alpha", "min_duration", "max_duration", "check_interval", "criteria",
            "min_per_arm", "min_positives"}
PLAN_SHAPE = '{"strategy": ..., "stages": [{"traffic", "duration_s", "check_interval_s", "criteria"}, ...]}'


def _criteria(value: Any, where: str, strategy: str) -> tuple[tuple[str, float], ...]:
    if value is None:
        return ()
    if not isinstance(value, Mapping):
        raise ValueError(f"{where}: criteria must be a mapping metric -> limit, got {type(value).__name__}")
    out = []
    for metric, limit in value.items():
        if metric not in CRITERIA:
            raise ValueError(f"{where}: unknown criterion {metric!r} (known: {', '.join(CRITERIA)})")
        if metric in SHADOW_ONLY and strategy != "shadow":
            raise ValueError(f"{where}: criterion {metric!r} is for the shadow strategy only")
        if isinstance(limit, bool) or not isinstance(limit, (int, float)) or not math.isfinite(limit):
            raise ValueError(f"{where}: criterion {metric} must be a number, got {limit!r}")
        if metric in ("error_rate", "max_disagreement") and not 0 < limit < 1:
            raise ValueError(f"{where}: criterion {metric} must be a share in (0, 1), got {limit}")
        if metric == "min_requests" and (limit < 1 or int(limit) != limit):
            raise ValueError(f"{where}: criterion min_requests must be a whole number >= 1, got {limit}")
        if metric in ("p95_latency_ms", "latency_spike") and not limit > 0:
            raise ValueError(f"{where}: criterion {metric} must be > 0, got {limit}")
        out.append((str(metric), float(limit)))
    return tuple(sorted(out))


@dataclass(frozen=True)
class Stage:
    """`traffic`: candidate's share of requests (0 < traffic <= 1; 0 only for a shadow stage) for
    `duration`, checked every `check_interval`; `criteria`: (metric, limit) pairs the stage must
    hold (see `CRITERIA`); `shadow`: the candidate answers nothing and is scored in shadow;
    `sampling_percentage`: a shadow stage's share of requests SageMaker replicates to the shadow
    variant (a whole number 1-100; the local endpoint scores every request in shadow)."""
    traffic: float
    duration: timedelta
    check_interval: timedelta
    criteria: tuple[tuple[str, float], ...] = ()
    shadow: bool = False
    sampling_percentage: int = 100

    def __post_init__(self):
        if isinstance(self.criteria, Mapping):
            object.__setattr__(self, "criteria", tuple(sorted((str(k), float(v)) for k, v in self.criteria.items())))
        else:
            object.__setattr__(self, "criteria", tuple(tuple(c) for c in self.criteria))
        pct = self.sampling_percentage
        if isinstance(pct, bool) or not isinstance(pct, int) or not 1 <= pct <= 100:
            raise ValueError(f"sampling_percentage must be a whole number from 1 to 100, got {pct!r}")
        if pct != 100 and not self.shadow:
            raise ValueError("sampling_percentage belongs to a shadow stage")
        if self.shadow:
            if self.traffic != 0:
                raise ValueError(f"a shadow stage has traffic 0, got {self.traffic}")
        elif not 0 < self.traffic <= 1:
            raise ValueError(f"traffic must be in (0, 1], got {self.traffic}")
        if self.duration <= timedelta(0) or self.check_interval <= timedelta(0):
            raise ValueError("stage duration and check interval must be positive")

    @property
    def limits(self) -> dict[str, float]:
        return dict(self.criteria)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"traffic": self.traffic, "duration_s": self.duration.total_seconds(),
                             "check_interval_s": self.check_interval.total_seconds()}
        if self.criteria:
            d["criteria"] = self.limits
        if self.shadow:
            d["shadow"] = True
        if self.sampling_percentage != 100:
            d["sampling_percentage"] = self.sampling_percentage
        return d


@dataclass(frozen=True)
class RolloutPlan:
    """Stages in order under `strategy`; `resume_grace` is how long past a due check a waiting
    run may stay suspended before Prefect fails it (None: the flow's default). `ab`: the A/B test's
    settings (split, metric, alpha, min_duration_s, max_duration_s, ...); `approval`: the plan
    needs a named approver (always for `immediate`); `source`: the file it was read from."""
    stages: tuple[Stage, ...]
    resume_grace: timedelta | None = None
    strategy: str = "canary"
    ab: tuple[tuple[str, Any], ...] = ()
    approval: bool = False
    allow_partial: bool = False
    description: str | None = None
    source: str | None = field(default=None, compare=False)

    def __post_init__(self):
        object.__setattr__(self, "stages", tuple(self.stages))
        if isinstance(self.ab, Mapping):
            object.__setattr__(self, "ab", tuple(sorted(self.ab.items())))
        if self.strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {self.strategy!r} (one of {', '.join(STRATEGIES)})")
        if self.strategy == "immediate":
            object.__setattr__(self, "approval", True)
            if self.stages:
                raise ValueError("an immediate rollout has no stages (100% at once)")
            return
        if not self.stages:
            raise ValueError("a rollout plan needs at least one stage")
        for i in range(1, len(self.stages)):
            if self.stages[i].traffic < self.stages[i - 1].traffic:
                raise ValueError(f"stages out of order: stage {i + 1} traffic {self.stages[i].traffic:g} < stage {i} "
                                 f"traffic {self.stages[i - 1].traffic:g} (traffic must not decrease)")
        if self.strategy == "linear" and self.stages[-1].traffic < 1.0 and not self.allow_partial:
            raise ValueError(f"the last stage of a linear plan should reach traffic 1.0 (it has "
                             f"{self.stages[-1].traffic:g}); say `allow_partial: true` if that is meant")
        if self.strategy == "shadow" and not (len(self.stages) == 1 and self.stages[0].shadow):
            raise ValueError("a shadow plan has one shadow stage (the `shadow:` section)")
        if self.strategy != "shadow" and any(s.shadow for s in self.stages):
            raise ValueError("only the shadow strategy has a shadow stage")
        if self.strategy == "ab" and len(self.stages) != 1:
            raise ValueError("an ab plan has one stage (the `ab:` section)")

    # -- construction ------------------------------------------------------------------------

    @classmethod
    def default(cls, settings) -> "RolloutPlan":
        """One stage from `CanarySettings`: `traffic` (10%) for `duration_hours` (72 h), checked
        every `check_interval_hours` (6 h). Accepts `Settings` or `CanarySettings`."""
        c = getattr(settings, "canary", settings)
        return cls((Stage(c.traffic, timedelta(hours=c.duration_hours),
                          timedelta(hours=c.check_interval_hours)),))

    @classmethod
    def compressed(cls, settings, duration_seconds: float, check_interval_seconds: float) -> "RolloutPlan":
        """The default plan's traffic with a short clock, for tests and demos."""
        c = getattr(settings, "canary", settings)
        return cls((Stage(c.traffic, timedelta(seconds=duration_seconds),
                          timedelta(seconds=check_interval_seconds)),))

    @classmethod
    def from_file(cls, path: str | Path) -> "RolloutPlan":
        """A plan from a YAML file; ConfigError (one line naming the file) when it cannot be read
        or is not a valid plan."""
        p = Path(path)
        try:
            text = p.read_text()
        except OSError as exc:
            raise ConfigError(f"rollout plan {p}: cannot read it ({exc.strerror or exc})") from None
        return cls.from_yaml(text, source=str(p))

    @classmethod
    def from_yaml(cls, text: str, source: str | None = None) -> "RolloutPlan":
        where = f"rollout plan {source}" if source else "rollout plan"
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            at = f" at line {mark.line + 1}" if mark is not None else ""
            raise ConfigError(f"{where}: not valid YAML{at}: {getattr(exc, 'problem', None) or exc}") from None
        plan = cls.from_dict(data, source=source)
        return plan

    @classmethod
    def load(cls, value: "RolloutPlan | Mapping[str, Any] | str | Path | None", settings=None) -> "RolloutPlan":
        """A plan from whatever a flow parameter or a command line holds: a plan, its dict form, a
        YAML file's path, or None (the default plan of `settings`)."""
        if isinstance(value, RolloutPlan):
            return value
        if isinstance(value, (str, Path)):
            return cls.from_file(value)
        return cls.from_dict(value, settings)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None, settings=None, *, source: str | None = None) -> "RolloutPlan":
        """A plan from its dict form (`to_dict()`, or a parsed YAML file); `None` gives
        `default(settings)`. ConfigError (one line naming the problem) for anything else."""
        where = f"rollout plan {source}" if source else "bad rollout plan"
        if data is None and source is None:
            if settings is None:
                raise ConfigError("no rollout plan and no settings to take the default plan from")
            return cls.default(settings)
        try:
            return cls._parse(data)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"{where}: {exc}") from None

    @classmethod
    def _parse(cls, data: Any) -> "RolloutPlan":
        if not isinstance(data, Mapping):
            raise ValueError(f"a rollout plan must be a mapping like {PLAN_SHAPE}")
        unknown = set(map(str, data)) - _TOP_KEYS
        if unknown:
            raise ValueError(f"unknown key(s) {', '.join(sorted(unknown))} (known: {', '.join(sorted(_TOP_KEYS))})")
        strategy = data.get("strategy", "canary")
        if strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {strategy!r} (one of {', '.join(STRATEGIES)})")
        default_interval = _duration(data.get("check_interval"), "check_interval") if "check_interval" in data else None
        default_criteria = dict(_criteria(data.get("criteria"), "criteria", strategy))
        grace = data.get("resume_grace", data.get("resume_grace_s"))
        if grace is not None:
            grace = (timedelta(seconds=_seconds(grace, "resume_grace_s")) if "resume_grace_s" in data
                     else _duration(grace, "resume_grace"))
        approval = data.get("approval", False)
        if approval not in (True, False, "required", "none"):
            raise ValueError(f"approval must be `required` or `none`, got {approval!r}")
        approval = approval in (True, "required")
        allow_partial = data.get("allow_partial", False)
        if not isinstance(allow_partial, bool):
            raise ValueError(f"allow_partial must be true or false, got {allow_partial!r}")
        cutover = data.get("cutover")
        if cutover is not None and (strategy != "shadow" or cutover != "blue-green"):
            raise ValueError(f"cutover: only `blue-green` of a shadow plan, got {cutover!r} for {strategy}")
        for section in ("shadow", "ab"):
            if section in data and strategy != section:
                raise ValueError(f"a `{section}:` section belongs to a {section} plan, not a {strategy} plan")
        ab: dict[str, Any] = {}
        if strategy == "immediate":
            if data.get("stages"):
                raise ValueError("an immediate rollout has no stages: it puts 100% on the candidate at once")
            if data.get("approval") in (False, "none"):
                raise ValueError("an immediate rollout always needs an approval (approval: required)")
            stages: list[Stage] = []
        elif strategy == "shadow" and "stages" not in data:
            if "shadow" not in data:
                raise ValueError("a shadow plan needs a `shadow:` section (duration, check_interval, criteria)")
            sec = _section(data["shadow"], "shadow", _SHADOW_KEYS)
            crit = default_criteria | dict(_criteria(sec.get("criteria"), "shadow", strategy))
            stages = [Stage(0.0, _duration(sec.get("duration"), "shadow duration"),
                            _interval(sec, default_interval, "shadow"), crit, shadow=True,
                            sampling_percentage=sec.get("sampling_percentage", 100))]
        elif strategy == "ab" and "stages" not in data:
            if "ab" not in data:
                raise ValueError("an ab plan needs an `ab:` section (split, metric, min_duration, max_duration)")
            sec = _section(data["ab"], "ab", _AB_KEYS)
            mx = _duration(sec.get("max_duration"), "ab max_duration")
            mn = timedelta(0) if sec.get("min_duration") is None else _duration(sec["min_duration"], "ab min_duration")
            ab = _ab(sec, mn, mx)
            crit = default_criteria | dict(_criteria(sec.get("criteria"), "ab", strategy))
            stages = [Stage(ab["split"], mx, _interval(sec, default_interval, "ab"), crit)]
        else:
            raw = data.get("stages")
            if not raw or not isinstance(raw, list):
                raise ValueError(f"`stages` must be a non-empty list like {PLAN_SHAPE}")
            stages = [_stage(s, i, default_interval, default_criteria, strategy) for i, s in enumerate(raw, start=1)]
            if strategy == "ab":  # the dict form written by to_dict
                sec = _section(data.get("ab") or {}, "ab", _AB_KEYS | {"min_duration_s", "max_duration_s"})
                ab = _ab(sec, timedelta(seconds=float(sec.get("min_duration_s", 0))),
                         timedelta(seconds=_seconds(sec.get("max_duration_s"), "ab max_duration_s")))
        plan = cls(tuple(stages), grace, strategy, ab, approval, allow_partial,
                   None if data.get("description") is None else str(data["description"]))
        return plan

    def to_dict(self) -> dict[str, Any]:
        """The plain dict form (`from_dict` reads it back; stage durations in seconds)."""
        out: dict[str, Any] = {"strategy": self.strategy, "stages": [s.to_dict() for s in self.stages]}
        if self.resume_grace is not None:
            out["resume_grace_s"] = self.resume_grace.total_seconds()
        if self.ab:
            out["ab"] = dict(self.ab)
        if self.approval:
            out["approval"] = "required"
        if self.allow_partial:
            out["allow_partial"] = True
        if self.description:
            out["description"] = self.description
        return out

    # -- reading -------------------------------------------------------------------------------

    @property
    def ab_settings(self) -> dict[str, Any]:
        return dict(self.ab)

    @property
    def duration(self) -> timedelta:
        return sum((s.duration for s in self.stages), timedelta(0))

    @property
    def shadow_sampling(self) -> int | None:
        """A shadow plan's sampling percentage (SageMaker's shadow variant); None for other plans."""
        return self.stages[0].sampling_percentage if self.strategy == "shadow" and self.stages else None

    def end(self, extensions: int = 0) -> timedelta:
        """Elapsed time at which the final decision is due: the plan's duration plus one more
        last-stage duration per extension (`True` counts as one)."""
        if not self.stages:
            return timedelta(0)
        return self.duration + self.stages[-1].duration * int(extensions)

    def stage_start(self, index: int) -> timedelta:
        """Elapsed time at which stage `index` begins."""
        return sum((s.duration for s in self.stages[:index]), timedelta(0))

    def stage_at(self, elapsed: timedelta) -> tuple[int, Stage]:
        """Index and stage in force after `elapsed` (the last stage after the end)."""
        t = timedelta(0)
        for i, stage in enumerate(self.stages):
            t += stage.duration
            if elapsed < t:
                return i, stage
        return len(self.stages) - 1, self.stages[-1]

    def summary(self) -> str:
        """One paragraph: the strategy, each stage, its criteria, and what ends it."""
        name = f"{self.strategy} plan" + (f" ({self.description})" if self.description else "")
        if self.strategy == "immediate":
            return (f"{name}: the candidate gets 100% of traffic at once, only with a named approver "
                    "(--approved-by, one of settings.approvers); production is kept warm as previous-1 and the "
                    "deferred verdict re-checks the promotion when its labels mature.")
        parts = []
        for i, s in enumerate(self.stages, start=1):
            what = (("shadow (weight 0, every request scored)" if s.sampling_percentage == 100 else
                     f"shadow (weight 0, {s.sampling_percentage}% of requests scored on SageMaker)")
                    if s.shadow else f"{s.traffic:.0%}")
            crit = ", ".join(f"{k} {v:g}" for k, v in s.criteria)
            parts.append(f"stage {i}: {what} for {_fmt(s.duration)}, checked every {_fmt(s.check_interval)}"
                         + (f" [{crit}]" if crit else ""))
        tail = {"shadow": "then the non-inferiority verdict and a blue/green cutover to 100% (production kept "
                          "warm as previous-1)",
                "ab": (f"A/B test on {dict(self.ab).get('metric')} at alpha {dict(self.ab).get('alpha')}, "
                       f"decided from {_fmt(timedelta(seconds=dict(self.ab).get('min_duration_s', 0)))} on; "
                       "no winner by the end: production stays"),
                }.get(self.strategy, "then the non-inferiority verdict on matured labels (promote, roll back or "
                                     "extend)")
        approval = "; needs a named approver" if self.approval else ""
        return f"{name}, {_fmt(self.duration)} in all: " + "; ".join(parts) + f"; {tail}{approval}."


def _ab(sec: Mapping[str, Any], mn: timedelta, mx: timedelta) -> dict[str, Any]:
    split = sec.get("split", 0.5)
    if isinstance(split, bool) or not isinstance(split, (int, float)) or not 0 < split < 1:
        raise ValueError(f"ab split must be the candidate's share in (0, 1), got {split!r}")
    metric = sec.get("metric", "auc")
    if metric not in AB_METRICS:
        raise ValueError(f"ab metric {metric!r} is not one of {', '.join(AB_METRICS)}")
    alpha = sec.get("alpha", 0.05)
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 < alpha < 1:
        raise ValueError(f"ab alpha must be in (0, 1), got {alpha!r}")
    if mn > mx:
        raise ValueError(f"ab min_duration {_fmt(mn)} is longer than max_duration {_fmt(mx)}")
    ab = {"split": float(split), "metric": metric, "alpha": float(alpha), "min_duration_s": mn.total_seconds(),
          "max_duration_s": mx.total_seconds()}
    for k in ("min_per_arm", "min_positives"):
        if k in sec:
            v = sec[k]
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"ab {k} must be a whole number >= 1, got {v!r}")
            ab[k] = v
    return ab


def _section(value: Any, name: str, keys: set[str]) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ValueError(f"`{name}:` must be a mapping")
    unknown = set(map(str, value)) - keys
    if unknown:
        raise ValueError(f"{name}: unknown key(s) {', '.join(sorted(unknown))} (known: {', '.join(sorted(keys))})")
    return value


def _fmt(td: timedelta) -> str:
    s = td.total_seconds()
    for unit, n in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= n and s % n == 0 and (unit != "d" or s > 3 * 86400):
            return f"{s / n:g}{unit}"
    return f"{s:g}s"


def _seconds(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{what} must be a positive number of seconds, got {value!r}")
    return float(value)


def _duration(value: Any, what: str) -> timedelta:
    if value is None:
        raise ValueError(f"{what} is missing (a duration like 30s, 5m, 2h or 3d)")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        raise ValueError(f"{what}: {value!r} needs a unit (30s, 5m, 2h, 3d)")
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise ValueError(f"{what}: {exc}") from None


def _interval(sec: Mapping[str, Any], default: timedelta | None, where: str) -> timedelta:
    if "check_interval" in sec:
        return _duration(sec["check_interval"], f"{where} check_interval")
    if default is None:
        raise ValueError(f"{where}: check_interval is missing (per stage or at the top)")
    return default


def _stage(s: Any, i: int, default_interval: timedelta | None, default_criteria: dict[str, float],
           strategy: str) -> Stage:
    where = f"stage {i}"
    if not isinstance(s, Mapping):
        raise ValueError(f"{where} must be a mapping with traffic, duration and check_interval")
    unknown = set(map(str, s)) - _STAGE_KEYS
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {', '.join(sorted(unknown))} "
                         "(known: traffic, duration, check_interval, criteria)")
    traffic = s.get("traffic")
    if isinstance(traffic, bool) or not isinstance(traffic, (int, float)):
        raise ValueError(f"{where}: traffic must be a number in (0, 1], got {traffic!r}")
    shadow = bool(s.get("shadow", False))
    if not shadow and not 0 < traffic <= 1:
        raise ValueError(f"{where}: traffic must be in (0, 1], got {traffic:g}")
    if "duration_s" in s and "duration" in s:
        raise ValueError(f"{where}: give duration or duration_s, not both")
    duration = (timedelta(seconds=_seconds(s["duration_s"], f"{where} duration_s")) if "duration_s" in s
                else _duration(s.get("duration"), f"{where} duration"))
    if "check_interval_s" in s:
        interval = timedelta(seconds=_seconds(s["check_interval_s"], f"{where} check_interval_s"))
    else:
        interval = _interval(s, default_interval, where)
    crit = default_criteria | dict(_criteria(s.get("criteria"), where, strategy))
    try:
        return Stage(float(traffic), duration, interval, crit, shadow=shadow,
                     sampling_percentage=s.get("sampling_percentage", 100))
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None


def format_duration(td: timedelta) -> str:
    """`1.5 h` from an hour up, `40 s` below."""
    s = td.total_seconds()
    return f"{s / 3600:.1f} h" if s >= 3600 else f"{s:.0f} s"
