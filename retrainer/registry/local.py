"""The registry in one local directory (normally $RETRAINER_HOME/registry):

    registry/
      index.json          # every version's record (written atomically: temp file + os.replace)
      audit.jsonl         # one line per status change: time, actor, version, from, to, reason
      versions/<ver>/     # model artifacts, moved into place before the index names them
      .lock               # fcntl lock: writers are serialised across processes

Crash safety. A transaction commits by replacing index.json; the new index carries the audit
events of that transaction (`last_transaction`: a transaction id and its events), and the events
are then appended to audit.jsonl, each line tagged with the transaction id. A writer killed at any
point leaves either the old index (and no audit line of its transaction) or the new index with
its events: the next writer, under the lock, appends whatever lines of the index's last
transaction are missing, and readers add them too until then. So the index and the audit log
agree after any crash. Under the lock the next writer also trims a torn last audit line (a writer
killed mid-append) and removes temp files and staging directories left by dead writers (only
writers holding the lock create them). Readers skip unreadable audit lines and count them.

Files are created 0600 and directories 0700 whatever the umask.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import threading
import uuid
from pathlib import Path
from typing import IO, Any, Callable, Iterator

from ..errors import CorruptRegistry
from ..perms import DIR_MODE, FILE_MODE, private_dir, private_tree
from . import rules
from .core import StoredRegistry
from .model import ModelRecord
from .storage import (
    TXID,
    AuditLog,
    Transaction,
    artifacts_gone,
    atomic_write_text,
    fsync_dir,
    missing_events,
    parse_audit_lines,
    stale_temp_files,
)

LAST_TX = "last_transaction"  # index key: {"txid": str, "events": [...]} of the last committed change


class LocalStorage:
    """`Storage` on the files under `root`. `fault_hook(point)` is called at the crash points of a
    transaction: "mid-write" and "before-replace" (the index write), "after-index" (index replaced,
    audit not yet appended) and "mid-audit" (half the audit bytes written): tests inject crashes
    there."""

    def __init__(self, root: Path | str, model_name: str = "readmission-30d",
                 *, fault_hook: Callable[[str], None] | None = None):
        self.root = Path(root)
        self.model_name = model_name
        self.index_path = self.root / "index.json"
        self.audit_path = self.root / "audit.jsonl"
        self.versions_dir = self.root / "versions"
        self._fault = fault_hook
        self._thread_lock = threading.RLock()
        self._depth = 0
        self._lock_file: IO[str] | None = None

    def _hook(self, point: str) -> None:
        if self._fault:
            self._fault(point)

    def read_index(self) -> dict[str, Any]:
        """The index from index.json (empty before the first version); CorruptRegistry if unreadable."""
        if not self.index_path.exists():
            return rules.new_index(self.model_name)
        try:
            return json.loads(self.index_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise CorruptRegistry(f"registry index {self.index_path} is corrupt ({exc.__class__.__name__});"
                                  " restore it from backup") from None

    # ---- the lock and crash recovery -----------------------------------------------------------
    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """The exclusive fcntl lock on .lock (re-entrant within a thread, serialised across threads
        and processes). The outermost holder first recovers from any crashed writer."""
        with self._thread_lock:
            if self._depth == 0:
                private_dir(self.root)
                fd = os.open(self.root / ".lock", os.O_RDWR | os.O_CREAT, FILE_MODE)
                os.fchmod(fd, FILE_MODE)
                fh = open(fd, "a+")  # noqa: SIM115 - closed when the outermost holder leaves
                fcntl.flock(fh, fcntl.LOCK_EX)
                self._lock_file = fh
            self._depth += 1
            try:
                if self._depth == 1:
                    self._recover()
                yield
            finally:
                self._depth -= 1
                if self._depth == 0 and self._lock_file is not None:
                    fcntl.flock(self._lock_file, fcntl.LOCK_UN)
                    self._lock_file.close()
                    self._lock_file = None

    def _recover(self) -> None:
        """Under the lock: remove dead writers' temp files, trim a torn audit tail, append the
        missing audit lines of the index's last transaction, and make the files owner-only."""
        for tmp in stale_temp_files(self.root, self.index_path.name):
            tmp.unlink(missing_ok=True)
        if self.versions_dir.is_dir():
            os.chmod(self.versions_dir, DIR_MODE)
            for partial in self.versions_dir.glob(".*.partial"):
                shutil.rmtree(partial, ignore_errors=True)
        for f in (self.index_path, self.audit_path):
            if f.exists():
                os.chmod(f, FILE_MODE)
        self._trim_torn_tail()
        last = self.read_index().get(LAST_TX)
        if last:
            missing = missing_events(last, self._raw_audit()[0])
            if missing:
                self._append_lines(missing, last["txid"])

    def _trim_torn_tail(self) -> None:
        """Cut a last audit line that has no newline: a writer died while appending it."""
        if not self.audit_path.exists():
            return
        with open(self.audit_path, "r+b") as fh:
            data = fh.read()
            if not data or data.endswith(b"\n"):
                return
            fh.truncate(data.rfind(b"\n") + 1)
            fh.flush()
            os.fsync(fh.fileno())

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """Under the lock: read, yield, replace index.json (carrying this transaction's events),
        then append the events to audit.jsonl."""
        with self._locked():
            tx = Transaction(self.read_index())
            yield tx
            txid = uuid.uuid4().hex
            if tx.events:
                tx.index[LAST_TX] = {"txid": txid, "events": tx.events}
            atomic_write_text(self.index_path, json.dumps(tx.index, indent=2, sort_keys=True),
                              _fault=self._fault)
            self._hook("after-index")
            if tx.events:
                self._append_lines(tx.events, txid)

    # ---- the audit log -------------------------------------------------------------------------
    def append_audit(self, events: list[dict[str, Any]]) -> None:
        """Append events to audit.jsonl under the registry lock (a torn tail is trimmed first)."""
        with self._locked():
            self._append_lines(events, None)

    def _append_lines(self, events: list[dict[str, Any]], txid: str | None) -> None:
        self._trim_torn_tail()
        tag = {TXID: txid} if txid else {}
        data = "".join(json.dumps({**ev, **tag}, sort_keys=True) + "\n" for ev in events).encode()
        created = not self.audit_path.exists()
        fd = os.open(self.audit_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, FILE_MODE)
        try:
            os.fchmod(fd, FILE_MODE)
            half = len(data) // 2
            os.write(fd, data[:half])
            self._hook("mid-audit")
            view = memoryview(data)[half:]
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        if created:
            fsync_dir(self.root)

    def _raw_audit(self) -> tuple[list[dict[str, Any]], int]:
        """The readable lines of audit.jsonl with their transaction ids, and the unreadable count."""
        if not self.audit_path.exists():
            return [], 0
        return parse_audit_lines(self.audit_path.read_bytes().decode("utf-8", errors="replace"))

    def read_audit_log(self) -> AuditLog:
        """The events of audit.jsonl plus any the last committed transaction has not appended yet
        (its writer died in between), and the number of unreadable lines skipped."""
        try:
            last = self.read_index().get(LAST_TX)
        except CorruptRegistry:
            last = None
        raw, skipped = self._raw_audit()
        if last:
            raw += missing_events(last, raw)
        events = [{k: v for k, v in ev.items() if k != TXID} for ev in raw]
        return AuditLog(events, skipped)

    def read_audit(self) -> list[dict[str, Any]]:
        """The readable audit events, oldest first."""
        return self.read_audit_log().events

    def put_artifact(self, version: str, source: Path) -> str:
        """Copy `source` to a staging directory, then rename it to versions/<version>; returns its path."""
        private_dir(self.versions_dir)
        final = self.versions_dir / version
        if final.exists():  # left over by a crash before the index named it
            shutil.rmtree(final)
        staging = self.versions_dir / f".{version}.{uuid.uuid4().hex}.partial"
        shutil.copytree(source, staging)
        private_tree(staging)
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
