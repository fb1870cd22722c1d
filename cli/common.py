"""Small helpers every command module uses: JSON output and the acting user's name."""
from __future__ import annotations

import json
import os


def print_json(obj) -> None:
    """Print `obj` as indented, key-sorted JSON (anything not JSON-native as its string)."""
    print(json.dumps(obj, indent=2, sort_keys=True, default=str))


def user() -> str:
    """The operator recorded as actor when `--actor` is not given: $USER, else "operator"."""
    return os.environ.get("USER") or "operator"
