"""The registry in one local directory (normally $RETRAINER_HOME/registry):

    registry/
      index.json          # every version's record (written atomically: temp file + os.replace)
      audit.jsonl         # one line per status change: time, actor, version, from, to, reason
      versions/<ver>/     # model artifacts, moved into place before the index names them
      .lock               # fcntl lock: writers are serialised across processes

A crash at any point leaves the old index or the new one, never a torn file; artifacts left by a
crash before the index named them are replaced on the next registration of that version.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator

from ..errors import CorruptRegistry
from . import rules
from .core import StoredRegistry
from .model import ModelRecord
from .storage import Transaction, artifacts_gone, atomic_write_text


class LocalStorage:
    """`Storage` on the files under `root`. `fault_hook(point)` is called at the crash points of
    the index write ("mid-write", "before-replace"): tests inject crashes there."""

    def __init__(self, root: Path | str, model_name: str = "readmission-30d",
                 *, fault_hook: Callable[[str], None] | None = None):
        self.root = Path(root)
        self.model_name = model_name
        self.index_path = self.root / "index.json"
        self.audit_path = self.root / "audit.jsonl"
        self.versions_dir = self.root / "versions"
        self._fault = fault_hook

    def read_index(self) -> dict[str, Any]:
        """The index from index.json (empty before the first version); CorruptRegistry if unreadable."""
        if not self.index_path.exists():
            return rules.new_index(self.model_name)
        try:
            return json.loads(self.index_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise CorruptRegistry(f"registry index {self.index_path} is corrupt ({exc.__class__.__name__});"
                                  " restore it from backup") from None

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """Under an exclusive fcntl lock: read, yield, write index.json atomically, append the audit."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                tx = Transaction(self.read_index())
                yield tx
                atomic_write_text(self.index_path, json.dumps(tx.index, indent=2, sort_keys=True),
                                  _fault=self._fault)
                if tx.events:
                    self.append_audit(tx.events)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def append_audit(self, events: list[dict[str, Any]]) -> None:
        """Append events to audit.jsonl and fsync it."""
        with open(self.audit_path, "a", encoding="utf-8") as fh:
            for ev in events:
                fh.write(json.dumps(ev, sort_keys=True) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def read_audit(self) -> list[dict[str, Any]]:
        """The events in audit.jsonl, oldest first."""
        if not self.audit_path.exists():
            return []
        return [json.loads(line) for line in self.audit_path.read_text(encoding="utf-8").splitlines() if line]

    def put_artifact(self, version: str, source: Path) -> str:
        """Copy `source` to a staging directory, then rename it to versions/<version>; returns its path."""
        self.versions_dir.mkdir(parents=True, exist_ok=True)
        final = self.versions_dir / version
        if final.exists():  # left over by a crash before the index named it
            shutil.rmtree(final)
        staging = self.versions_dir / f".{version}.{uuid.uuid4().hex}.partial"
        shutil.copytree(source, staging)
        os.replace(staging, final)
        return str(final.resolve())

    def get_artifact(self, record: ModelRecord) -> Path:
        """versions/<version>, if it is still there."""
        path = self.versions_dir / record.version
        if not path.is_dir():
            raise artifacts_gone(record.version)
        return path

    def remove_artifact(self, record: ModelRecord) -> bool:
        """Delete versions/<version>; False if it was not there."""
        path = self.versions_dir / record.version
        if not path.exists():
            return False
        shutil.rmtree(path)
        return True


class LocalRegistry(StoredRegistry):
    """On-disk registry under `root` (normally $RETRAINER_HOME/registry)."""

    def __init__(self, root: Path | str, model_name: str = "readmission-30d",
                 *, fault_hook: Callable[[str], None] | None = None):
        super().__init__(LocalStorage(root, model_name, fault_hook=fault_hook))

    @property
    def root(self) -> Path:
        """The registry directory."""
        return self.storage.root
