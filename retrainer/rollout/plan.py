"""Rollout plans: which share of traffic the candidate gets, for how long, checked how often.

A `RolloutPlan` is a sequence of `Stage`s. The default plan is one stage, 10% of traffic for
72 hours checked every 6 hours (`CanarySettings`); a multi-stage plan raises the candidate's share
at each stage boundary. Plans cross process boundaries (flow parameters, persisted task results,
deployment files) as plain dicts: `to_dict()` and `from_dict()` are the one conversion.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Mapping

from ..errors import ConfigError

_STAGE_KEYS = {"traffic", "duration_s", "check_interval_s"}
_PLAN_KEYS = {"stages", "resume_grace_s"}
PLAN_SHAPE = '{"stages": [{"traffic", "duration_s", "check_interval_s"}, ...]}'


@dataclass(frozen=True)
class Stage:
    """`traffic`: candidate's share of requests (0 < traffic <= 1) for `duration`, checked every
    `check_interval`."""
    traffic: float
    duration: timedelta
    check_interval: timedelta

    def __post_init__(self):
        if not 0 < self.traffic <= 1:
            raise ValueError(f"stage traffic must be in (0, 1], got {self.traffic}")
        if self.duration <= timedelta(0) or self.check_interval <= timedelta(0):
            raise ValueError("stage duration and check interval must be positive")


@dataclass(frozen=True)
class RolloutPlan:
    """Stages in order; `resume_grace` is how long past a due check a waiting run may stay
    suspended before Prefect fails it (None: the flow's default)."""
    stages: tuple[Stage, ...]
    resume_grace: timedelta | None = None

    def __post_init__(self):
        object.__setattr__(self, "stages", tuple(self.stages))
        if not self.stages:
            raise ValueError("a rollout plan needs at least one stage")

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
    def from_dict(cls, data: Mapping[str, Any] | None, settings=None) -> "RolloutPlan":
        """A plan from its dict form (`to_dict()`); `None` gives `default(settings)`.

        Raises ConfigError (one line naming the problem) for anything else: not a mapping, no
        stages, unknown keys, a stage without traffic/duration/interval, traffic outside (0, 1].
        """
        if data is None:
            if settings is None:
                raise ConfigError("no rollout plan and no settings to take the default plan from")
            return cls.default(settings)
        if not isinstance(data, Mapping) or not data.get("stages"):
            raise ConfigError(f"a rollout plan must be {PLAN_SHAPE}")
        unknown = set(data) - _PLAN_KEYS
        if unknown:
            raise ConfigError(f"bad rollout plan: unknown key(s) {', '.join(sorted(map(str, unknown)))}")
        stages = []
        for i, s in enumerate(data["stages"], start=1):
            if not isinstance(s, Mapping) or set(s) != _STAGE_KEYS:
                raise ConfigError(f"bad rollout plan: stage {i} must have exactly traffic, duration_s and "
                                  "check_interval_s")
            try:
                stages.append(Stage(float(s["traffic"]), timedelta(seconds=float(s["duration_s"])),
                                    timedelta(seconds=float(s["check_interval_s"]))))
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"bad rollout plan: stage {i}: {exc}") from None
        grace = data.get("resume_grace_s")
        try:
            grace_td = None if grace is None else timedelta(seconds=float(grace))
        except (TypeError, ValueError):
            raise ConfigError(f"bad rollout plan: resume_grace_s must be a number of seconds, got {grace!r}") from None
        return cls(tuple(stages), grace_td)

    def to_dict(self) -> dict[str, Any]:
        """The plain dict form (`from_dict` reads it back)."""
        out: dict[str, Any] = {"stages": [{"traffic": s.traffic, "duration_s": s.duration.total_seconds(),
                                           "check_interval_s": s.check_interval.total_seconds()}
                                          for s in self.stages]}
        if self.resume_grace is not None:
            out["resume_grace_s"] = self.resume_grace.total_seconds()
        return out

    @property
    def duration(self) -> timedelta:
        return sum((s.duration for s in self.stages), timedelta(0))

    def end(self, extensions: int = 0) -> timedelta:
        """Elapsed time at which the final decision is due: the plan's duration plus one more
        last-stage duration per extension (`True` counts as one)."""
        return self.duration + self.stages[-1].duration * int(extensions)

    def stage_at(self, elapsed: timedelta) -> tuple[int, Stage]:
        """Index and stage in force after `elapsed` (the last stage after the end)."""
        t = timedelta(0)
        for i, stage in enumerate(self.stages):
            t += stage.duration
            if elapsed < t:
                return i, stage
        return len(self.stages) - 1, self.stages[-1]


def format_duration(td: timedelta) -> str:
    """`1.5 h` from an hour up, `40 s` below."""
    s = td.total_seconds()
    return f"{s / 3600:.1f} h" if s >= 3600 else f"{s:.0f} s"
