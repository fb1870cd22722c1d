"""The rollout journal: what is rolling out right now, by which plan, at which stage.

One JSON file per rollout under `<home>/rollouts/<version>.json`, written atomically (temp file +
rename) so a reader never sees half a record. The rollout flow writes it (start, each stage, each
decision); everything that must know about a running rollout without asking Prefect reads it:
the 5-minute guardrails, `retrainer status` and `GET /status`, the evidence package, retention
(which must never delete what a running rollout or a pending verdict still needs).

No Prefect and no network here: plain files, so the CLI and the endpoint read it in
milliseconds.
"""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from ..clock import utcnow
from ..errors import RolloutError

RolloutStatus = Literal["waiting-approval", "running", "promoted", "rolled_back", "failed"]
ACTIVE = ("waiting-approval", "running")


@dataclass(frozen=True)
class RolloutRecord:
    """One rollout of `version` against `production`.

    `plan`: the plan's dict form (`RolloutPlan.to_dict()`), `strategy` its strategy name;
    `stage`/`traffic`: where it is now; `next_check_at`: when the next decision check is due;
    `verdict_due_at`: when a scheduled deferred verdict will re-check a promotion (None: none
    pending); `history`: one entry per event (`at`, `event`, and what the event carried)."""
    version: str
    production: str | None
    strategy: str
    plan: dict[str, Any]
    started_at: str
    status: RolloutStatus = "running"
    stage: int = 0
    traffic: float = 0.0
    next_check_at: str | None = None
    decided_at: str | None = None
    decision: str | None = None
    reason: str | None = None
    flow_run_id: str | None = None
    verdict_due_at: str | None = None
    history: tuple[dict[str, Any], ...] = field(default_factory=tuple)

    @property
    def active(self) -> bool:
        return self.status in ACTIVE

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["history"] = list(self.history)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RolloutRecord":
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        known["history"] = tuple(known.get("history") or ())
        return cls(**known)


class RolloutJournal:
    """`<home>/rollouts/*.json`. `start` creates (or, for the same version and start time,
    returns) a record; `update` changes fields and appends a history event; `active()` lists the
    rollouts still running or waiting for an approval."""

    def __init__(self, home: str | os.PathLike):
        self.root = Path(home) / "rollouts"

    def _path(self, version: str) -> Path:
        if not version or "/" in version or version.startswith("."):
            raise RolloutError(f"bad version for the rollout journal: {version!r}")
        return self.root / f"{version}.json"

    def _write(self, rec: RolloutRecord) -> RolloutRecord:
        self.root.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".tmp-", suffix=".json")
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(rec.to_dict(), f, indent=1, default=str)
            os.replace(tmp, self._path(rec.version))
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return rec

    def get(self, version: str) -> RolloutRecord | None:
        p = self._path(version)
        if not p.exists():
            return None
        return RolloutRecord.from_dict(json.loads(p.read_text()))

    def all(self) -> list[RolloutRecord]:
        if not self.root.exists():
            return []
        recs = [RolloutRecord.from_dict(json.loads(p.read_text())) for p in sorted(self.root.glob("*.json"))]
        return sorted(recs, key=lambda r: r.started_at)

    def active(self) -> list[RolloutRecord]:
        return [r for r in self.all() if r.active]

    def pending_verdicts(self, now: datetime | None = None) -> list[RolloutRecord]:
        """Promotions whose deferred verdict has not run yet (their canary rows are still needed)."""
        return [r for r in self.all() if r.status == "promoted" and r.verdict_due_at]

    def start(self, version: str, production: str | None, strategy: str, plan: dict[str, Any],
              started_at: datetime | str, *, traffic: float, status: RolloutStatus = "running",
              flow_run_id: str | None = None) -> RolloutRecord:
        started = started_at if isinstance(started_at, str) else started_at.isoformat()
        old = self.get(version)
        if old is not None and old.started_at == started:
            return old  # a resumed flow re-running its start step
        rec = RolloutRecord(version=version, production=production, strategy=strategy, plan=dict(plan),
                            started_at=started, status=status, traffic=float(traffic), flow_run_id=flow_run_id,
                            history=({"at": utcnow().isoformat(), "event": "started", "strategy": strategy,
                                      "traffic": float(traffic), "status": status},))
        return self._write(rec)

    def update(self, version: str, event: str, **changes: Any) -> RolloutRecord:
        """Set `changes` (fields of RolloutRecord) and append `{"at", "event", **changes}`."""
        rec = self.get(version)
        if rec is None:
            raise RolloutError(f"no rollout of {version} in the journal ({self.root})")
        bad = set(changes) - set(RolloutRecord.__dataclass_fields__) - {"details"}
        if bad:
            raise RolloutError(f"unknown rollout journal field(s): {', '.join(sorted(bad))}")
        details = changes.pop("details", None)
        entry = {"at": utcnow().isoformat(), "event": event, **{k: v for k, v in changes.items()}}
        if details:
            entry["details"] = details
        return self._write(replace(rec, **changes, history=rec.history + (entry,)))
