"""Which rollout a newly registered version gets, decided without a person (`flows/rollout.py`).

Pure: a registry record and the settings in, a `Selection` out; reading the plan file is the only
I/O. The rules, in order:

1. only a `candidate` is rolled out: a rejected (or already moved on) version gets
   `action="skip"` with the reason;
2. the plan: `settings.rollout.emergency_plan` for a version whose trigger is in
   `settings.rollout.emergency_triggers` (drift, performance, concept: production is known to be
   degrading), else `settings.rollout.plan`. A plan file that does not exist means the canary's
   default plan (`plan=None`, from `settings.canary`);
3. a human: the gate's `needs_approval` (e.g. the task12 policy's improvement below 5%), or a plan
   with `approval: required` (rollout-plans/immediate.yaml), makes `needs_approval=True`: the
   rollout waits for an approver before the canary starts.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from ..errors import ConfigError
from ..settings import REPO_ROOT

CANDIDATE = "candidate"


@dataclass(frozen=True)
class Selection:
    """`action`: "rollout" or "skip"; `plan`: the plan's dict form (None: the canary's default
    plan); `plan_source`: the file it came from, or why the default; `emergency`: the emergency
    plan was chosen; `needs_approval`: wait for an approver first; `reason`: one line."""

    action: Literal["rollout", "skip"]
    version: str
    reason: str
    plan: dict[str, Any] | None = None
    plan_source: str | None = None
    emergency: bool = False
    needs_approval: bool = False
    trigger: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def resolve(path: str | Path) -> Path:
    """A plan path as given, relative paths from the repository root."""
    p = Path(path)
    return p if p.is_absolute() else REPO_ROOT / p


def load_plan_file(path: str | Path) -> dict[str, Any] | None:
    """The plan file's mapping, None when the file does not exist. ConfigError (one line) for a
    file that is not a YAML mapping."""
    p = resolve(path)
    if not p.is_file():
        return None
    try:
        data = yaml.safe_load(p.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read rollout plan {p}: {type(exc).__name__}: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"rollout plan {p} must be a mapping with stages")
    return data


def plan_setting(trigger: str | None, settings) -> tuple[str, bool]:
    """(the plan path the settings name for `trigger`, whether it is the emergency plan)."""
    r = settings.rollout
    emergency = bool(trigger) and trigger in r.emergency_triggers and bool(r.emergency_plan)
    return (r.emergency_plan if emergency else r.plan), emergency


def choose(record, settings) -> Selection:
    """The rollout for registry record `record` (see the module doc)."""
    trigger = getattr(record, "trigger", None)
    if record.status != CANDIDATE:
        return Selection("skip", record.version, f"{record.version} is {record.status}, not a candidate: "
                         "nothing to roll out", trigger=trigger)
    path, emergency = plan_setting(trigger, settings)
    plan = load_plan_file(path)
    source = str(path) if plan is not None else f"canary defaults ({path} not found)"
    gate = getattr(record, "gate", None) or {}
    plan_asks = (plan or {}).get("approval") in (True, "required")  # e.g. rollout-plans/immediate.yaml
    needs = bool(gate.get("needs_approval")) or plan_asks
    kind = f"emergency plan for a {trigger}-triggered candidate" if emergency else "plan"
    reason = f"{record.version}: {kind} {source}" + (
        f"; the gate asked for a human ({gate.get('reason', '')})" if gate.get("needs_approval") else "") + (
        "; the plan needs an approver" if plan_asks else "")
    return Selection("rollout", record.version, reason, plan=plan, plan_source=source, emergency=emergency,
                     needs_approval=needs, trigger=trigger)
