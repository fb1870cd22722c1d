"""Retention: what the registry and the prediction store may forget, and what they must keep.

Two parts, one plan:

* **Registry**: the existing `registry.retention(actor=...)` (artifacts of archived and rejected
  versions; records stay). It never touches production, the two previous versions, candidates or
  canaries. On top of that, nothing is removed while a version it would remove is still needed by
  a running rollout or a pending deferred verdict (the rollout's version and the production it
  would roll back to) or is routed on the endpoint: the whole registry step is deferred and the
  result says which version and why (the registry call has no per-version exclusion).
* **Prediction store** (PHI-adjacent): whole day partitions `predictions/date=YYYY-MM-DD/` whose
  every row is older than the horizon `now - predictions.retention_days` are deleted, unless a
  hold needs them: a running rollout (journal `active()`) or a pending deferred verdict (journal
  `pending_verdicts()`) keeps every partition from that rollout's `started_at` on. Shadow rows
  carry their request's time, so a request's routed and shadow scores share a partition and are
  deleted together. A label file (`labels/part-*.parquet`, one per ingested file) is deleted whole
  when all its labels were ingested before the cutoff and none of its admissions has a kept
  prediction; otherwise it stays whole.

`plan(...)` only reads (the dry run); `apply(...)` re-plans and acts. Both work on a local store
and on an S3 store, through the store's own listing (`days`, `day_files`: compacted partitions are
counted once). Every store deletion is audited: time, actor, reason, partitions, label files, rows,
shadow rows, horizon, cutoff and what was kept and why.
- Local: one line of `<store root>/retention-audit.jsonl` (append-only, 0600). A partition is first
  renamed to a hidden `.deleting-...` name (readers glob `date=*` and no longer see it), then
  audited, then removed; a run killed in between leaves the hidden name, which the next run audits
  and removes ("finishing an interrupted retention run").
- S3 (no rename): a pending marker `retention/pending-<id>.json` listing every object to delete is
  written first, then the audit event (one object under `audit/retention/`, named by its write
  time so that names sort in write order), then the deletes, then the marker is removed. A
  partition's objects are deleted in two steps: first what a compact file replaced (readers
  already skip it), then the live files, so a replaced file never becomes live again. A marker
  left behind is a killed run: the next run audits what is still there ("finishing an interrupted
  retention run", naming the killed run and its audit event if it was written) and deletes it.
  Deletes are batched (DeleteObjects, up to 1,000 keys a request). Unlike the local rename,
  readers can see an expired partition half-deleted while a run deletes it (never a row twice).

No Prefect here (tasks/retention.py and flows/retention.py wrap it).
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterable

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from . import deid
from .clock import utcnow
from .errors import ConfigError
from .predstore import COMPACT_PREFIX, INGESTED_AT, LABELS, PREDICTIONS, REPLACES_KEY, SHADOW, is_data_file
from .predstore.location import S3Location, one_line
from .registry.rules import CLEANABLE
from .settings import min_retention_days

log = logging.getLogger(__name__)

AUDIT_FILE = "retention-audit.jsonl"
S3_AUDIT = "audit/retention"  # on S3: one JSON object per event
S3_PENDING = "retention"  # on S3: pending-<id>.json, what a run is about to delete
S3_DELETE_BATCH = 1000  # keys per DeleteObjects request (the S3 maximum)
DELETING = ".deleting-"
AUDIT_MODE = 0o600
KEEP_PREVIOUS_REASON = "previous production version, kept ready for rollback"


def _utc(value: str | datetime) -> datetime:
    when = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return when.replace(tzinfo=timezone.utc) if when.tzinfo is None else when.astimezone(timezone.utc)


def _iso(when: datetime) -> str:
    return when.astimezone(timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True)
class Hold:
    """Keep every prediction partition from `since` on, because of `reason`."""
    since: datetime
    reason: str
    kind: str  # "rollout" or "verdict"
    version: str

    def to_dict(self) -> dict[str, Any]:
        return {"since": _iso(self.since), "reason": self.reason, "kind": self.kind, "version": self.version}


EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def _start(r) -> tuple[datetime, str]:
    """A rollout's start; an unreadable one holds everything (never guess what may go)."""
    try:
        return _utc(r.started_at), ""
    except (TypeError, ValueError):
        return EPOCH, " (its start time is unreadable: everything is kept)"


def holds(journal) -> list[Hold]:
    """What the rollout journal still needs: each running rollout's and each pending deferred
    verdict's rows, from its rollout's start."""
    out = []
    for r in journal.active():
        since, note = _start(r)
        out.append(Hold(since, f"rollout of {r.version} is {r.status} (stage {r.stage}, "
                        f"{r.traffic:.0%} traffic) since {r.started_at}{note}", "rollout", r.version))
    for r in journal.pending_verdicts():
        since, note = _start(r)
        out.append(Hold(since, f"the deferred verdict on {r.version} (promoted over "
                        f"{r.production or 'none'}) is due {r.verdict_due_at}: it re-reads its rollout's rows "
                        f"since {r.started_at}{note}", "verdict", r.version))
    return out


@dataclass
class RetentionPlan:
    """What a run would delete and keep (see the module doc). Days are ISO dates (UTC)."""
    now: str
    retention_days: int
    minimum_days: int
    horizon: str  # now - retention_days
    cutoff: str  # min(horizon, every hold's since): nothing at or after it is deleted
    holds: list[dict[str, Any]] = field(default_factory=list)
    delete_partitions: list[dict[str, Any]] = field(default_factory=list)  # {day, files, rows, shadow_rows}
    kept_partitions: list[dict[str, Any]] = field(default_factory=list)  # older than the horizon: {day, rows, reason}
    recent_partitions: int = 0  # partitions inside the horizon (kept: the retention period)
    delete_label_files: list[dict[str, Any]] = field(default_factory=list)  # {file, rows, newest}
    kept_label_files: list[dict[str, Any]] = field(default_factory=list)  # older than the cutoff: {file, reason}
    registry_remove: list[str] = field(default_factory=list)
    registry_kept: list[dict[str, Any]] = field(default_factory=list)  # {version, status, reason}
    registry_deferred: str | None = None

    @property
    def rows(self) -> int:
        return sum(p["rows"] for p in self.delete_partitions)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "rows": self.rows, "label_rows": sum(f["rows"] for f in self.delete_label_files)}

    def markdown(self, title: str = "Retention") -> str:
        lines = [f"# {title}", "",
                 f"Now {self.now}; retention {self.retention_days} days (minimum {self.minimum_days}: label delay "
                 f"+ the canary's maximum duration); horizon {self.horizon}; cutoff {self.cutoff}.", ""]
        lines.append(f"**Prediction partitions deleted:** {len(self.delete_partitions)} ({self.rows:,} rows, "
                     f"{sum(p['shadow_rows'] for p in self.delete_partitions):,} of them shadow)"
                     + (f": {self.delete_partitions[0]['day']} .. {self.delete_partitions[-1]['day']}"
                        if self.delete_partitions else ""))
        lines.append(f"**Partitions kept inside the retention period:** {self.recent_partitions}")
        if self.kept_partitions:
            lines += ["", "| partition older than the horizon, kept | rows | why |", "|---|---|---|"]
            lines += [f"| {p['day']} | {p['rows']:,} | {p['reason']} |" for p in self.kept_partitions]
        lines += ["", f"**Label files deleted:** {len(self.delete_label_files)} "
                      f"({sum(f['rows'] for f in self.delete_label_files):,} labels)"]
        lines += [f"- kept {f['file']}: {f['reason']}" for f in self.kept_label_files]
        lines += ["", "**Holds (running rollouts, pending deferred verdicts):** "
                  + ("none" if not self.holds else "")]
        lines += [f"- since {h['since']}: {h['reason']}" for h in self.holds]
        lines += ["", "**Registry:** " + (f"artifacts removed for {', '.join(self.registry_remove)}"
                                          if self.registry_remove else "no artifacts to remove")]
        if self.registry_deferred:
            lines.append(f"- deferred: {self.registry_deferred}")
        lines += ["", "| version kept | status | why |", "|---|---|---|"]
        lines += [f"| {k['version']} | {k['status']} | {k['reason']} |" for k in self.registry_kept]
        return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------------
# Reading the store's layout

def _partitions(store) -> list[tuple[date, list[str]]]:
    """(day, its live data files as paths relative to the store's root), oldest first: appended
    `part-*` and compacted `compact-*` files, less files a compact file replaced (counted once)."""
    return [(day, store.day_files(day)) for day in store.days()]


def _count(store, files: Iterable[str]) -> tuple[int, int]:
    """(rows, shadow rows) of the store's Parquet files (footer row counts; the shadow column only)."""
    rows = shadow = 0
    loc = store.location
    for f in files:
        try:
            rows += pq.ParquetFile(loc.path(f), filesystem=loc.fs).metadata.num_rows
            col = pq.read_table(loc.path(f), columns=[SHADOW], filesystem=loc.fs).column(SHADOW)
            shadow += int(pc.sum(pc.cast(col, pa.int64())).as_py() or 0)
        except (OSError, ValueError, KeyError) as exc:
            log.warning("retention: cannot count rows of %s (%s)", f.rsplit("/", 1)[-1], type(exc).__name__)
    return rows, shadow


def _label_files(store) -> list[str]:
    return [f"{LABELS}/{n}" for n in store.location.list_files(LABELS, "part-*.parquet")]


def _day_end(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=timezone.utc) + timedelta(days=1)


def check_retention_days(retention_days: int, settings) -> int:
    """The minimum retention for `settings`; ConfigError when `retention_days` is below it."""
    need = min_retention_days(settings.label_delay, settings.canary.max_duration_hours)
    if retention_days < need:
        raise ConfigError(f"predictions.retention_days={retention_days} is below label_delay + "
                          f"canary.max_duration_hours = {need} days: a canary's matured rows would be deleted "
                          f"before its verdict; use at least {need}")
    return need


# --------------------------------------------------------------------------------------------------
# The plan

def plan(store, registry, journal, settings, now: datetime | None = None, *,
         endpoint_versions: Iterable[str] = (), retention_days: int | None = None) -> RetentionPlan:
    """What `apply` would do now, without changing anything (the dry run). `endpoint_versions`:
    versions the endpoint routes to (kept in the registry whatever their status)."""
    now = _utc(now or utcnow())
    days = settings.predictions.retention_days if retention_days is None else int(retention_days)
    need = check_retention_days(days, settings)
    horizon = now - timedelta(days=days)
    hs = holds(journal)
    cutoff = min([horizon, *(h.since for h in hs)])
    p = RetentionPlan(now=_iso(now), retention_days=days, minimum_days=need, horizon=_iso(horizon),
                      cutoff=_iso(cutoff), holds=[h.to_dict() for h in hs])

    kept_files: list[str] = []
    for day, files in _partitions(store):
        end = _day_end(day)
        if end > horizon:
            p.recent_partitions += 1
            kept_files += files
            continue
        rows, shadow = _count(store, files)
        needed_by = [h for h in hs if h.since < end]
        if needed_by:
            kept_files += files
            p.kept_partitions.append({"day": day.isoformat(), "rows": rows,
                                      "reason": "; ".join(h.reason for h in needed_by)})
        else:
            p.delete_partitions.append({"day": day.isoformat(), "files": len(files), "rows": rows,
                                        "shadow_rows": shadow})
    _plan_labels(store, p, cutoff, kept_files)
    _plan_registry(registry, journal, p, endpoint_versions)
    return p


def _plan_labels(store, p: RetentionPlan, cutoff: datetime, kept_files: list[str]) -> None:
    loc = store.location
    old = []
    for f in _label_files(store):
        name = f.rsplit("/", 1)[-1]
        try:
            t = pq.read_table(loc.path(f), columns=[deid.ADMISSION_PSEUDONYM, INGESTED_AT], filesystem=loc.fs)
        except (OSError, ValueError, KeyError) as exc:
            p.kept_label_files.append({"file": name, "reason": f"unreadable ({type(exc).__name__}): left alone"})
            continue
        if not t.num_rows:
            continue
        newest = max(t.column(INGESTED_AT).to_pylist())
        if _utc(newest) < cutoff:
            old.append((name, t, newest))
    if not old:
        return
    kept_admissions: set[str] = set()
    for part in kept_files:
        try:
            col = pq.read_table(loc.path(part), columns=[deid.ADMISSION_PSEUDONYM],
                                filesystem=loc.fs).column(deid.ADMISSION_PSEUDONYM)
        except (OSError, ValueError, KeyError):
            continue
        kept_admissions.update(v for v in col.to_pylist() if v)
    for f, t, newest in old:
        still = sum(1 for a in t.column(deid.ADMISSION_PSEUDONYM).to_pylist() if a in kept_admissions)
        if still:
            p.kept_label_files.append({"file": f, "reason": f"{still} of its {t.num_rows} admissions still have "
                                                                 "kept predictions (a label file is kept whole)"})
        else:
            p.delete_label_files.append({"file": f, "rows": t.num_rows, "newest": _iso(_utc(newest))})


def _plan_registry(registry, journal, p: RetentionPlan, endpoint_versions: Iterable[str]) -> None:
    records = registry.list()
    needed: dict[str, str] = {}
    for r in journal.active():
        needed.setdefault(r.version, f"its rollout is {r.status}")
        if r.production:
            needed.setdefault(r.production, f"production when {r.version}'s running rollout started (its rollback "
                                            "target)")
    for r in journal.pending_verdicts():
        needed.setdefault(r.version, f"its deferred verdict is due {r.verdict_due_at}")
        if r.production:
            needed.setdefault(r.production, f"the deferred verdict on {r.version} may roll back to it")
    for v in endpoint_versions:
        needed.setdefault(v, "routed on the endpoint")
    cleanable = [r.version for r in records
                 if r.status in CLEANABLE and not (r.extra or {}).get("artifacts_removed_at")]
    blocked = [v for v in cleanable if v in needed]
    if blocked:
        p.registry_deferred = "; ".join(f"{v} is {next(r.status for r in records if r.version == v)} but {needed[v]}"
                                        for v in blocked) + ": no artifacts removed this run"
    else:
        p.registry_remove = cleanable
    for r in records:
        if r.version in cleanable and not blocked:
            continue
        if r.status in CLEANABLE and (r.extra or {}).get("artifacts_removed_at"):
            continue  # already cleaned: nothing left to keep
        reason = {"production": "production", "previous": KEEP_PREVIOUS_REASON,
                  "candidate": "candidate: not cleanable", "canary": "canary: not cleanable",
                  "archived": "archived: cleaning deferred this run",
                  "rejected": "rejected: cleaning deferred this run"}.get(str(r.status), "")
        if r.version in needed:
            reason = f"{reason}; {needed[r.version]}" if reason else needed[r.version]
        p.registry_kept.append({"version": r.version, "status": str(r.status), "reason": reason or "kept"})


# --------------------------------------------------------------------------------------------------
# Acting

def audit_path(store) -> Path | str:
    """The audit log: a file locally, the `audit/retention/` prefix's URL on S3."""
    if not store.is_local:
        return f"{store.url}/{S3_AUDIT}/"
    return Path(store.root) / AUDIT_FILE


_last_stamp = 0


def _audit_name() -> str:
    """An S3 audit event's object name: the wall-clock write time to the nanosecond (never the
    domain clock, which a scripted run may hold still), strictly increasing within a process, and a
    random suffix, so that names sort in write order (one retention run at a time per store)."""
    global _last_stamp
    ns = _last_stamp = max(time.time_ns(), _last_stamp + 1)
    return f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime(ns // 10**9))}.{ns % 10**9:09d}Z-{uuid.uuid4().hex[:8]}.json"


def append_audit(store, event: dict[str, Any], *, name: str | None = None) -> str | None:
    """Append one JSON line (fsync'd, file 0600). A torn last line left by a crash is closed first,
    so it stays one unreadable line that `read_audit` skips. On S3: one object per event under
    `audit/retention/` (an object is written whole or not at all), named by `name` or
    `_audit_name()`; returns that name (None locally)."""
    if not store.is_local:
        name = name or _audit_name()
        store.location.put(f"{S3_AUDIT}/{name}", json.dumps(event, sort_keys=True, default=str).encode())
        return name
    path = audit_path(store)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, AUDIT_MODE)
    try:
        os.fchmod(fd, AUDIT_MODE)
        size = os.fstat(fd).st_size
        prefix = b""
        if size:
            os.lseek(fd, size - 1, os.SEEK_SET)
            if os.read(fd, 1) != b"\n":
                prefix = b"\n"
        os.write(fd, prefix + (json.dumps(event, sort_keys=True, default=str) + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    return None


def read_audit(store) -> tuple[list[dict[str, Any]], int]:
    """(events oldest first, unreadable lines skipped)."""
    if not store.is_local:
        events, bad = [], 0
        for name in store.location.list_files(S3_AUDIT, "*.json"):  # names sort in write order
            try:
                events.append(json.loads(store.location.read(f"{S3_AUDIT}/{name}")))
            except (ValueError, OSError):
                bad += 1
        return events, bad
    path = audit_path(store)
    if not path.is_file():
        return [], 0
    events, bad = [], 0
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            events.append(json.loads(line))
        except ValueError:
            bad += 1
    return events, bad


def _finish_interrupted(store, actor: str, now: datetime) -> dict[str, Any] | None:
    """Audit and remove what a killed run renamed (locally) or listed in its pending marker (S3)
    but did not remove."""
    if not store.is_local:
        return _finish_interrupted_s3(store, actor, now)
    left = []
    for base in (Path(store.predictions_dir), Path(store.labels_dir)):
        if base.is_dir():
            left += sorted(base.glob(f"{DELETING}*"))
    if not left:
        return None
    parts = [x for x in left if x.is_dir()]
    labels = [x for x in left if x.is_file()]
    rows, shadow = _count(store, (str(f.relative_to(store.root)) for d in parts for f in _live_files(d)))
    label_rows, _ = _count_labels(labels)
    event = {"time": _iso(now), "actor": actor, "kind": "retention",
             "reason": "finishing an interrupted retention run",
             "partitions": [_original_name(x.name).removeprefix("date=") for x in parts],
             "label_files": [_original_name(x.name) for x in labels],
             "rows": rows, "shadow_rows": shadow, "label_rows": label_rows}
    append_audit(store, event)
    for x in parts:
        shutil.rmtree(x, ignore_errors=True)
    for x in labels:
        x.unlink(missing_ok=True)
    return event


def _live_files(d: Path) -> list[Path]:
    """A renamed-aside local partition's data files less those a compact file there replaced (a
    compaction stopped before its deletes): what readers counted, each row once."""
    files = sorted(f for f in d.glob("*.parquet") if is_data_file(f.name))
    replaced: set[str] = set()
    for f in files:
        if f.name.startswith(COMPACT_PREFIX):
            try:
                meta = pq.read_metadata(f).metadata or {}
                replaced |= set(json.loads(meta.get(REPLACES_KEY.encode(), b"[]")))
            except (OSError, ValueError):
                continue
    return [f for f in files if f.name not in replaced]


def _finish_interrupted_s3(store, actor: str, now: datetime) -> dict[str, Any] | None:
    """S3 has no rename: a run first writes a pending marker listing every object it will delete,
    then the audit event, then deletes, then removes the marker. A marker left behind is a run
    killed in between: the objects it lists that are still there are audited ("finishing an
    interrupted retention run", rows as readers count them) and deleted, then the marker goes.
    A marker whose objects are all gone (killed after its deletes) is just removed: its run's
    audit event was written before its first delete."""
    loc = store.location
    markers = loc.list_files(S3_PENDING, "pending-*.json")
    if not markers:
        return None
    runs: list[dict[str, Any]] = []
    files: list[str] = []
    done: list[str] = []
    for m in markers:
        try:
            pending = json.loads(loc.read(f"{S3_PENDING}/{m}"))
            files += [f for f in pending["files"] if isinstance(f, str) and f not in files]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("retention: pending marker %s unreadable (%s): left alone", m, one_line(exc))
            continue
        done.append(m)
        runs.append({"time": pending.get("time"), "actor": pending.get("actor"), "audit": pending.get("audit")})
    listing: dict[str, set[str]] = {}
    present = []
    for f in files:
        folder, name = f.rsplit("/", 1) if "/" in f else ("", f)
        if folder not in listing:
            listing[folder] = set(loc.list_files(folder))
        if name in listing[folder]:
            present.append(f)
    event = None
    if present:
        audits = set(loc.list_files(S3_AUDIT, "*.json"))
        for r in runs:
            r["audited"] = bool(r["audit"]) and r["audit"] in audits
        parts = sorted({f.split("/")[1].removeprefix("date=") for f in present if f.startswith(f"{PREDICTIONS}/")})
        live = {f for day in parts for f in store.day_files(date.fromisoformat(day))}
        rows, shadow = _count(store, [f for f in present if f in live])
        labels = [f for f in present if f.startswith(f"{LABELS}/")]
        event = {"time": _iso(now), "actor": actor, "kind": "retention",
                 "reason": "finishing an interrupted retention run", "partitions": parts,
                 "label_files": [f.rsplit("/", 1)[-1] for f in labels], "rows": rows, "shadow_rows": shadow,
                 "label_rows": sum(_rows(store, f) for f in labels), "interrupted_runs": runs}
        append_audit(store, event)
        _delete_objects(loc, [f for f in present if f.startswith(f"{PREDICTIONS}/") and f not in live])
        _delete_objects(loc, [f for f in present if f in live or not f.startswith(f"{PREDICTIONS}/")])
    _delete_objects(loc, [f"{S3_PENDING}/{m}" for m in done])
    return event


def _rows(store, rel: str) -> int:
    try:
        return pq.ParquetFile(store.location.path(rel), filesystem=store.location.fs).metadata.num_rows
    except (OSError, ValueError):
        return 0


def _count_labels(files: Iterable[Path]) -> tuple[int, int]:
    n = 0
    for f in files:
        try:
            n += pq.ParquetFile(f).metadata.num_rows
        except (OSError, ValueError):
            pass
    return n, 0


def _original_name(hidden: str) -> str:
    """`.deleting-<8 hex>-date=2025-01-01` -> `date=2025-01-01`."""
    return hidden[len(DELETING):].split("-", 1)[1] if hidden.startswith(DELETING) else hidden


def apply(store, registry, journal, settings, now: datetime | None = None, *, actor: str,
          reason: str = "retention", endpoint_versions: Iterable[str] = (),
          retention_days: int | None = None) -> dict[str, Any]:
    """Re-plan now, then delete what the plan lists: registry artifacts (`registry.retention`) unless
    deferred, prediction partitions and label files (audited). Returns the plan's dict plus
    `registry_removed`, `deleted_partitions`, `deleted_label_files`, `audit` (the line written, or
    None when nothing was deleted) and `interrupted` (a killed earlier run finished, or None)."""
    now = _utc(now or utcnow())
    interrupted = _finish_interrupted(store, actor, now)
    p = plan(store, registry, journal, settings, now, endpoint_versions=endpoint_versions,
             retention_days=retention_days)
    removed = registry.retention(actor=actor) if p.registry_remove else []

    if not store.is_local:
        deleted_parts, deleted_labels, event = _delete_s3(store, p, actor, reason, now)
        return {**p.to_dict(), "registry_removed": removed, "deleted_partitions": [x["day"] for x in deleted_parts],
                "deleted_label_files": [x["file"] for x in deleted_labels], "audit": event,
                "interrupted": interrupted, "dry_run": False}

    tag = uuid.uuid4().hex[:8]
    moved: list[Path] = []

    def move_aside(src: Path) -> bool:
        """Rename `src` to a hidden name readers skip; False when it is already gone."""
        dst = src.with_name(f"{DELETING}{tag}-{src.name}")
        try:
            os.replace(src, dst)
        except FileNotFoundError:
            return False
        moved.append(dst)
        return True

    deleted_parts = [part for part in p.delete_partitions
                     if move_aside(Path(store.predictions_dir) / f"date={part['day']}")]
    deleted_labels = [lf for lf in p.delete_label_files if move_aside(Path(store.labels_dir) / lf["file"])]
    event = None
    if moved:
        event = _event(p, deleted_parts, deleted_labels, actor, reason, now)
        append_audit(store, event)  # before removing: a crash after this leaves hidden names the next run clears
        for x in moved:
            if x.is_dir():
                shutil.rmtree(x)
            else:
                x.unlink(missing_ok=True)
    return {**p.to_dict(), "registry_removed": removed, "deleted_partitions": [x["day"] for x in deleted_parts],
            "deleted_label_files": [x["file"] for x in deleted_labels], "audit": event, "interrupted": interrupted,
            "dry_run": False}


def _event(p: RetentionPlan, parts: list[dict], labels: list[dict], actor: str, reason: str,
           now: datetime) -> dict[str, Any]:
    return {"time": _iso(now), "actor": actor, "kind": "retention", "reason": reason,
            "retention_days": p.retention_days, "horizon": p.horizon, "cutoff": p.cutoff,
            "partitions": [x["day"] for x in parts], "rows": sum(x["rows"] for x in parts),
            "shadow_rows": sum(x["shadow_rows"] for x in parts), "label_files": [x["file"] for x in labels],
            "label_rows": sum(x["rows"] for x in labels),
            "kept": [{"day": x["day"], "reason": x["reason"]} for x in p.kept_partitions], "holds": p.holds}


def _partition_objects(store, day: str) -> tuple[list[str], list[str]]:
    """(objects of a day partition readers skip -- files a compact file replaced and anything that
    is not a data file --, its live data files): deleted in that order."""
    rel = f"{PREDICTIONS}/date={day}"
    live = set(store.day_files(date.fromisoformat(day)))
    every = [f"{rel}/{n}" for n in store.location.list_files(rel)]
    return [f for f in every if f not in live], [f for f in every if f in live]


def _delete_objects(loc, rels: list[str]) -> None:
    """Delete objects (relative paths); already-gone ones are fine. On S3 in DeleteObjects batches;
    one line (OSError) naming the first key S3 refused."""
    if not rels:
        return
    if not isinstance(loc, S3Location):
        for r in rels:
            loc.delete(r)
        return
    for i in range(0, len(rels), S3_DELETE_BATCH):
        batch = rels[i:i + S3_DELETE_BATCH]
        try:
            out = loc.client.delete_objects(Bucket=loc.bucket, Delete={
                "Objects": [{"Key": loc.key(r)} for r in batch], "Quiet": True})
        except Exception as exc:  # noqa: BLE001 - botocore's errors: one line
            raise OSError(f"cannot delete under {loc.url}: {one_line(exc)}") from None
        errors = out.get("Errors") or []
        if errors:
            e = errors[0]
            raise OSError(f"cannot delete s3://{loc.bucket}/{e.get('Key')}: {e.get('Code')} "
                          f"({len(errors)} of {len(batch)} keys refused)")


def _delete_s3(store, p: RetentionPlan, actor: str, reason: str, now: datetime):
    """On S3: the pending marker (every object to delete, and the name the audit event will have),
    the audit event, the deletes (replaced files first, then live ones and label files), then the
    marker's removal; a run killed in between is finished by the next (`_finish_interrupted_s3`)."""
    loc = store.location
    skipped: list[str] = []
    live: list[str] = []
    parts = []
    for x in p.delete_partitions:
        first, then = _partition_objects(store, x["day"])
        if first or then:
            parts.append(x)
            skipped += first
            live += then
    present = set(loc.list_files(LABELS))
    labels = [x for x in p.delete_label_files if x["file"] in present]
    label_files = [f"{LABELS}/{x['file']}" for x in labels]
    if not parts and not labels:
        return [], [], None
    marker = f"{S3_PENDING}/pending-{uuid.uuid4().hex[:12]}.json"
    audit = _audit_name()
    loc.put(marker, json.dumps({"time": _iso(now), "actor": actor, "audit": audit,
                                "partitions": [x["day"] for x in parts], "label_files": [x["file"] for x in labels],
                                "files": skipped + live + label_files}).encode())
    event = _event(p, parts, labels, actor, reason, now)
    append_audit(store, event, name=audit)  # before any delete: a kill after this leaves the marker
    _delete_objects(loc, skipped)
    _delete_objects(loc, live + label_files)
    _delete_objects(loc, [marker])
    return parts, labels, event


def endpoint_versions(settings, endpoint=None) -> set[str]:
    """The versions the endpoint routes to: the persisted routing file (local backend), and, when
    `endpoint` is given and not local, what it reports (best effort: a failure keeps what is known)."""
    from .serving.routing import read_routing, routing_path  # noqa: PLC0415 - serving's package imports FastAPI

    versions: set[str] = set()
    try:
        versions |= {s.version for s in read_routing(routing_path(settings)) or []}
    except (ValueError, OSError) as exc:
        log.warning("retention: routing file unreadable (%s); production and previous stay protected anyway",
                    type(exc).__name__)
    if endpoint is not None and settings.backend != "local":
        try:
            versions |= {str(v["version"]) for v in endpoint.state().get("variants", [])}
        except Exception as exc:  # noqa: BLE001 - best effort: the registry statuses still protect
            log.warning("retention: endpoint state unavailable (%s)", type(exc).__name__)
    return versions


__all__ = ["AUDIT_FILE", "Hold", "RetentionPlan", "append_audit", "apply", "audit_path", "check_retention_days",
           "endpoint_versions", "holds", "plan", "read_audit"]
