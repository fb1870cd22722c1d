"""The monitor state: when each trigger's event was last emitted and a log of recent runs, in a
small JSON file under the retrainer home, written atomically. It is what the emission cooldown
(`policy.emit_decision`) reads.
"""
from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

from ..registry import atomic_write_text
from .config import as_utc


def state_path(home: Path) -> Path:
    """The monitor's state file under the retrainer home."""
    return Path(home) / "monitor" / "state.json"


def load_state(home: Path) -> dict[str, Any]:
    """The monitor state (`last_emitted`: trigger name -> ISO time, `runs`: recent runs); an empty
    one when the file is missing, and a reset one (with a note) when it is unreadable."""
    path = state_path(home)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {"last_emitted": {}, "runs": []}
    except (OSError, ValueError):
        return {"last_emitted": {}, "runs": [], "note": f"unreadable state at {path} was reset"}


def save_state(home: Path, state: dict[str, Any]) -> None:
    """Write `state` atomically, keeping the last 200 runs."""
    path = state_path(home)
    path.parent.mkdir(parents=True, exist_ok=True)
    state["runs"] = state.get("runs", [])[-200:]
    atomic_write_text(path, json.dumps(state, indent=2, sort_keys=True, default=str))


def last_emitted(state: dict[str, Any], name: str) -> datetime | None:
    """When the trigger `name`'s event was last emitted (UTC), or None."""
    v = state.get("last_emitted", {}).get(name)
    return as_utc(v) if v else None
