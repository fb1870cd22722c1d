"""What the endpoint's routes share: the live routing table, the model pool and the capture.

`ServingState.set_variants` is the one way routing changes: it validates, refuses versions the
registry calls rejected or archived (unless forced), loads and verifies new versions, persists
routing.json, appends the change to the registry's audit log, and only then swaps the immutable
table in one assignment (so a request in flight never sees half a change). If the audit cannot be
written, routing.json is restored and nothing changed (`AuditFailed`).
"""
from __future__ import annotations

import collections
import logging
import threading
from datetime import datetime
from typing import Any, Callable, Sequence

from ..clock import utcnow, utcnow_iso
from ..errors import RegistryError, RolloutError
from ..registry import Status, atomic_write_text
from .capture import CaptureQueue
from .contract import CategoryConformer
from .pool import ModelPool
from .routing import (
    RoutingTable,
    VariantSpec,
    default_variants,
    parse_variants,
    read_routing,
    routing_path,
    sweep_routing_temp_files,
    write_routing,
)
from .shadow import RequestIds, ShadowScorer

log = logging.getLogger(__name__)

DEFAULT_ACTOR = "admin-api"
DEFAULT_REASON = "routing change through POST /admin/variants"
REFUSED_STATUSES = (Status.REJECTED, Status.ARCHIVED)  # routed to only with "force": true
MAX_REASON_CHARS = 500


class AuditFailed(Exception):
    """The routing change could not be written to the registry's audit log (nothing changed)."""


_FROM_SETTINGS: Any = object()


class ServingState:
    """Everything the routes share. `table` is the one reference swapped by admin changes.

    Capture options (see `capture.CaptureQueue`; by default from `settings.serving`): `flush_rows`
    (N) and `flush_seconds` (T, None: no time rule) bound what a crash can lose,
    `capture_backlog_rows` bounds the rows held while writes fail, `capture_interval` is the
    hand-off period, `capture_process` chooses the writer (None: a process when possible)."""

    def __init__(self, settings, registry, store=None, pseudonymizer=None, clock: Callable[[], datetime] = utcnow,
                 *, flush_rows: int | None = None, flush_seconds: float | None = _FROM_SETTINGS,
                 capture_interval: float = 0.1, capture_backlog_rows: int | None = None,
                 capture_process: bool | None = None, fixed: VariantSpec | None = None):
        self.settings = settings
        self.fixed = fixed  # the SageMaker container: one variant, no routing file, no admin changes
        self.registry = registry
        self.pseudonymizer = pseudonymizer
        self.clock = clock
        self.pool = ModelPool(registry)
        self.admin_lock = threading.Lock()
        self.path = routing_path(settings)
        self.startup_warning: str | None = None
        self.table: RoutingTable = RoutingTable.empty()
        self.capture: CaptureQueue | None = None
        self.conformer = CategoryConformer()
        self.targeted = 0  # predictions whose variant a header chose (left out of canary statistics)
        self.request_ids = RequestIds()
        self.failures: collections.Counter = collections.Counter()  # (variant, "invalid"/"failed") -> requests
        self.shadow: ShadowScorer | None = None
        self.shadow_mode: str = settings.serving.shadow
        if store is not None and pseudonymizer is not None:
            sv = settings.serving
            self.capture = CaptureQueue(
                store, pseudonymizer, flush_rows=flush_rows or sv.capture_flush_rows,
                flush_seconds=sv.capture_flush_seconds if flush_seconds is _FROM_SETTINGS else flush_seconds,
                max_backlog_rows=capture_backlog_rows or sv.capture_backlog_rows, interval=capture_interval,
                key_env=settings.pseudonym_key_env, process=capture_process)
        elif store is not None:
            log.warning("prediction capture is off: no pseudonymizer (key) was given")
        if fixed is not None:
            self.shadow_mode = "off"  # one model here: SageMaker's shadow variants score in their own containers
        if self.capture is not None and self.shadow_mode != "off":  # shadow scores only matter stored
            self.shadow = ShadowScorer(self.capture, self.shadow_mode,
                                       max_backlog_rows=settings.serving.shadow_backlog_rows)
        if fixed is not None:
            self.table = self._build([fixed], generation=1)  # RegistryError: the model fails its sha256
            return
        sweep_routing_temp_files(self.path)  # temp files of routing writes killed before their rename
        self._load_initial()

    def _load_initial(self) -> None:
        try:
            specs = read_routing(self.path)
        except (ValueError, OSError) as exc:
            specs = None
            self.startup_warning = f"{self.path} is unreadable ({exc}); using the default routing"
        if specs is not None:
            try:
                self.table = self._build(specs, generation=1)
                return
            except (RegistryError, ValueError) as exc:
                self.startup_warning = f"persisted routing refused ({exc}); using the default routing"
                log.error(self.startup_warning)
        try:
            specs = default_variants(self.registry)
            if specs:
                self.table = self._build(specs, generation=1)
        except (RegistryError, ValueError) as exc:
            msg = f"default routing refused ({exc}); serving nothing until an admin sets variants"
            self.startup_warning = f"{self.startup_warning}; {msg}" if self.startup_warning else msg
            log.error(msg)

    def _build(self, specs: Sequence[VariantSpec], generation: int) -> RoutingTable:
        scorers = {s.variant: self.pool.get(s.version) for s in specs}  # loads + verifies new versions
        return RoutingTable.build(specs, scorers, generation, self.clock().isoformat(timespec="milliseconds"))

    def set_variants(self, items: Any, *, actor: str = DEFAULT_ACTOR, reason: str = DEFAULT_REASON,
                     force: bool = False) -> RoutingTable:
        """Validate, refuse rejected/archived versions (unless `force`), load (verified), persist,
        append the change to the registry's audit log, then swap the table in one assignment.
        RolloutError when refused; AuditFailed (routing.json restored) when the audit cannot be
        written; in both cases nothing changed."""
        specs = parse_variants(items)
        with self.admin_lock:
            statuses = {s.version: str(self.registry.get(s.version).status) for s in specs}  # UnknownVersion
            refused = {v: st for v, st in statuses.items() if st in REFUSED_STATUSES}
            if refused and not force:
                v, st = next(iter(refused.items()))
                raise RolloutError(f"version {v} is {st} in the registry; send \"force\": true to route to it anyway")
            old = self.table
            new = self._build(specs, generation=old.generation + 1)
            previous_file = self.path.read_bytes() if self.path.is_file() else None
            write_routing(self.path, new.to_dict())
            event = {"time": utcnow_iso(), "actor": actor, "version": "routing", "kind": "routing",
                     "via": DEFAULT_ACTOR, "from": summary(old), "to": summary(new), "reason": reason,
                     "generation": new.generation, "force": bool(force), "forced": refused}
            try:
                self.registry.storage.append_audit([event])
            except Exception as exc:
                self._restore_routing(previous_file)
                raise AuditFailed(f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from None
            self.table = new  # the atomic switch
            self.pool.keep_only(s.version for s in specs)
            return new

    def _restore_routing(self, previous: bytes | None) -> None:
        try:
            if previous is None:
                self.path.unlink(missing_ok=True)
            else:
                atomic_write_text(self.path, previous.decode("utf-8"))
        except OSError as exc:
            log.error("could not restore %s after a failed audit write: %s", self.path, type(exc).__name__)

    def state(self) -> dict[str, Any]:
        """What `GET /admin/variants` answers: the routing, loaded versions, capture counters."""
        t = self.table
        out = t.to_dict()
        out["loaded_versions"] = self.pool.versions
        out["routing_file"] = str(self.path)
        out["capture"] = ({"captured": self.capture.captured, "dropped": self.capture.dropped}
                          if self.capture else None)
        out["contract"] = {**self.conformer.stats(), "targeted_predictions": self.targeted}
        out["shadow"] = (self.shadow.stats() if self.shadow is not None else
                         {"mode": self.shadow_mode, "active": False})
        if self.shadow is not None:
            out["shadow"]["active"] = bool(self.shadow.plan(t))
        out["failed_requests"] = [{"variant": v, "reason": r, "requests": n}
                                  for (v, r), n in sorted(self.failures.items())]
        if self.startup_warning:
            out["startup_warning"] = self.startup_warning
        return out

    def close(self) -> None:
        """Score what waits for shadow scoring, flush and stop the capture (the app's shutdown)."""
        if self.shadow is not None:
            self.shadow.close()
        if self.capture is not None:
            self.capture.close()
            self.capture = None


def summary(table: RoutingTable) -> str | None:
    """One line for the audit log: "blue=1.1.0:0.9 green=1.2.0:0.1" (None for an empty table)."""
    return " ".join(f"{s.variant}={s.version}:{s.weight:g}" for s in table.variants) or None


