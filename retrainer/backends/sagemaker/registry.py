"""`SageMakerRegistry`: the `Registry` Protocol on a SageMaker Model Package Group.

Layout
- One Model Package Group per model (`settings.model_name`, made a valid SageMaker name); one
  versioned Model Package per semver version, created in registration order.
- The whole `ModelRecord` (semver, lineage, params, compact metrics, gate, status...) lives in the
  package's CustomerMetadataProperties. The service allows 50 entries of at most 256 characters
  matching `[\\p{L}\\p{Z}\\p{N}_.:/=+\\-@]*` -- JSON is NOT a valid value -- so the record is stored as
  zlib-compressed JSON in base64 (an allowed alphabet), split into 256-char chunks
  `retrainer.record.00..NN` (+ `retrainer.record.n`). Readable mirrors for the console and search:
  `retrainer.version`, `retrainer.lifecycle` (our status), `retrainer.parent`, hashes, timestamps.
  `retrainer.production_seq` orders production history (for `previous()`).
- Our status -> ModelApprovalStatus: candidate -> PendingManualApproval; canary, production,
  previous -> Approved; rejected and archived -> Rejected. Archived is Rejected on purpose: anything
  that deploys "latest Approved" must never pick an archived model; `retrainer.lifecycle` keeps
  the distinction.
- Every UpdateModelPackage sends the approval status AND the full metadata together (moto replaces
  every field on update; real SageMaker merges, so stale chunk keys are removed explicitly).
- Artifacts: s3://<bucket>/<prefix>/registry/models/<version>/model.tar.gz (the package's
  ModelDataUrl). `artifact_dir()` downloads, verifies and caches them under `cache_dir`.
- Audit: JSON lines at s3://<bucket>/<prefix>/registry/audit.jsonl, appended read-modify-write with
  S3 conditional writes (If-Match / If-None-Match), retried on conflict. A transaction's lines carry
  its transaction id (`txid`, as in the local registry) and are appended only if absent.
- Crash safety (write-ahead): before any package is written, a transaction stores
  s3://.../registry/pending.json (its txid, its audit events and the records it writes); storing it
  is the commit point. Then the packages are written, the events appended, and pending.json
  deleted. Whoever takes the lock next finds a leftover pending.json, writes its records again
  (idempotent), appends whichever of its events have no line with its txid, and deletes it; readers
  see its records and events until then (without writing: they hold no lock). So the packages and
  the audit log agree after a crash at any point.
- Writers are serialised by a lease object s3://.../registry/.lock created with If-None-Match: *
  (S3 conditional create). A lock older than `lock_ttl_s` is treated as stale and broken.
  A multi-package change (promote = demote + archive + promote) is several API calls; demotions are
  written first, so a crash part way leaves no production (never two) until the next writer
  completes it from pending.json. Keep one registry writer per model (e.g. a Prefect concurrency
  limit of 1 on registry-changing flows) in addition to the lock.

This module is storage only (`SageMakerStorage`, the `retrainer.registry.Storage` Protocol).
`SageMakerRegistry` is the generic `StoredRegistry` on it, a sibling of `LocalRegistry`: the
lifecycle rules, refusals and error messages live once, in `retrainer.registry.rules`.
"""
from __future__ import annotations

import base64
import contextlib
import copy
import json
import os
import re
import shutil
import socket
import tempfile
import time
import uuid
import zlib
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

from ...clock import utcnow_iso
from ...errors import RegistryError
from ...perms import private_dir, private_tree
from ...registry import ModelRecord, Status, StoredRegistry, rules
from ...registry.storage import (
    TXID,
    AuditLog,
    Transaction,
    artifacts_gone,
    digest_matches,
    missing_events,
    parse_audit_lines,
)
from ._aws import (
    ArtifactError,
    AWSContext,
    default_sklearn_image,
    error_code,
    error_message,
    extract_limits,
    one_line,
    resource_name,
    safe_extract_model,
    split_s3_uri,
    tar_dir,
)

APPROVAL = {Status.CANDIDATE: "PendingManualApproval", Status.CANARY: "Approved", Status.PRODUCTION: "Approved",
            Status.PREVIOUS: "Approved", Status.REJECTED: "Rejected", Status.ARCHIVED: "Rejected"}
MD = "retrainer."
CHUNK = 256
MAX_ENTRIES = 50
_SAFE_VALUE = re.compile(r"^[\w .:/=+\-@]{1,256}$")
_MIRRORS = {"version": "version", "status": "lifecycle", "parent": "parent", "created_at": "created_at",
            "status_changed_at": "status_changed_at", "artifact_sha256": "artifact_sha256",
            "schema_hash": "schema_hash", "data_hash": "data_hash", "params_hash": "params_hash"}
_NOT_FOUND = ("404", "NoSuchKey", "NotFound")
_CONFLICT = ("PreconditionFailed", "412", "ConditionalRequestConflict", "409")


def encode_metadata(record: dict[str, Any], production_seq: int | None = None) -> dict[str, str]:
    """CustomerMetadataProperties for `record` (every value valid for the real service)."""
    md = {f"{MD}format": "1"}
    for name, key in _MIRRORS.items():
        value = record.get(name)
        if value and _SAFE_VALUE.match(str(value)):
            md[MD + key] = str(value)
    if production_seq:
        md[f"{MD}production_seq"] = str(production_seq)
    blob = base64.b64encode(zlib.compress(json.dumps(record, sort_keys=True, separators=(",", ":"),
                                                     default=str).encode(), 9)).decode("ascii")
    chunks = [blob[i:i + CHUNK] for i in range(0, len(blob), CHUNK)]
    md[f"{MD}record.n"] = str(len(chunks))
    md.update({f"{MD}record.{i:02d}": c for i, c in enumerate(chunks)})
    if len(md) > MAX_ENTRIES:
        raise RegistryError(f"record of {record.get('version')} needs {len(md)} metadata entries (max {MAX_ENTRIES}):"
                            f" {len(blob)} chars compressed; keep metrics/params compact")
    return md


def decode_metadata(md: dict[str, str] | None) -> tuple[dict[str, Any], int | None] | None:
    """(record dict, production_seq) from CustomerMetadataProperties; None if not ours."""
    if not md or f"{MD}record.n" not in md:
        return None
    n = int(md[f"{MD}record.n"])
    try:
        blob = "".join(md[f"{MD}record.{i:02d}"] for i in range(n))
        record = json.loads(zlib.decompress(base64.b64decode(blob)))
    except (KeyError, ValueError, zlib.error) as exc:
        raise RegistryError(f"model package metadata of {md.get(MD + 'version', '?')} is corrupt "
                            f"({exc.__class__.__name__})") from None
    seq = md.get(f"{MD}production_seq")
    return record, (int(seq) if seq else None)


@dataclass
class _Packages:
    """What the service holds beyond the index: each version's package ARN, production order and
    metadata keys (to remove stale ones on update)."""

    arns: dict[str, str] = field(default_factory=dict)
    seq: dict[str, int] = field(default_factory=dict)
    keys: dict[str, list[str]] = field(default_factory=dict)


class SageMakerStorage:
    """`Storage` on a Model Package Group, S3 artifacts, an S3 audit log and an S3 lease lock
    (see module docstring). Artifacts are downloaded into `cache_dir`/artifacts/<version>.
    `fault_hook(point)` is called at the crash points of a transaction: "after-pending" (pending.json
    stored, no package written), "after-packages" (packages written, audit not appended) and
    "after-audit" (audit appended, pending.json not deleted): tests inject crashes there."""

    def __init__(self, aws: AWSContext, model_name: str = "readmission-30d", *, cache_dir: Path | str,
                 inference_image: str | None = None, instance_type: str = "ml.m5.large",
                 lock_ttl_s: float = 900.0, lock_timeout_s: float = 120.0,
                 sleep: Callable[[float], None] = time.sleep,
                 fault_hook: Callable[[str], None] | None = None):
        self.aws = aws
        self.model_name = model_name
        self.group = resource_name(model_name)
        self.root = Path(cache_dir)
        self.inference_image = inference_image
        self.instance_type = instance_type
        self.lock_ttl_s = lock_ttl_s
        self.lock_timeout_s = lock_timeout_s
        self._sleep = sleep
        self._fault = fault_hook

    def _hook(self, point: str) -> None:
        if self._fault:
            self._fault(point)

    # ---- locations ------------------------------------------------------------------------------
    @property
    def audit_key(self) -> str:
        """S3 key of the audit log."""
        return self.aws.key("registry", "audit.jsonl")

    @property
    def lock_key(self) -> str:
        """S3 key of the writers' lease."""
        return self.aws.key("registry", ".lock")

    @property
    def pending_key(self) -> str:
        """S3 key of the write-ahead record of a transaction in progress (or of a dead writer's)."""
        return self.aws.key("registry", "pending.json")

    def artifact_key(self, version: str) -> str:
        """Takes a version; returns the S3 key of its model.tar.gz."""
        return self.aws.key("registry", "models", version, "model.tar.gz")

    # ---- index ----------------------------------------------------------------------------------
    def _packages(self) -> list[dict[str, Any]]:
        sm = self.aws.sm
        summaries: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {"ModelPackageGroupName": self.group, "MaxResults": 100}
        try:
            while True:
                page = sm.list_model_packages(**kwargs)
                summaries += page.get("ModelPackageSummaryList", [])
                if not page.get("NextToken"):
                    break
                kwargs["NextToken"] = page["NextToken"]
        except Exception as exc:
            if error_code(exc) in ("ValidationException", "ResourceNotFound") and "not" in error_message(exc).lower():
                return []  # no group yet: nothing registered
            raise RegistryError(f"cannot list model packages of {self.group}: {error_code(exc)}: "
                                f"{error_message(exc)}") from exc
        summaries.sort(key=lambda s: s.get("ModelPackageVersion") or 0)
        return [sm.describe_model_package(ModelPackageName=s["ModelPackageArn"]) for s in summaries]

    def _load(self, pending: dict[str, Any] | None = None) -> tuple[dict[str, Any], _Packages]:
        """The index and package details from the service; with `pending`, its records replace the
        packages' (the state the pending transaction commits to)."""
        idx = rules.new_index(self.model_name)
        known = _Packages()
        for pkg in self._packages():
            decoded = decode_metadata(pkg.get("CustomerMetadataProperties"))
            if decoded is None:
                continue  # a package not written by retrainer
            rec, seq = decoded
            v = rec["version"]
            idx["versions"][v] = rec
            known.arns[v] = pkg["ModelPackageArn"]
            known.keys[v] = sorted(pkg.get("CustomerMetadataProperties") or {})
            if seq:
                known.seq[v] = seq
        if pending:
            seq_after = dict(known.seq)
            for w in pending["writes"]:
                idx["versions"][w["version"]] = w["record"]
                seq_after.pop(w["version"], None)
                if w["seq"]:
                    seq_after[w["version"]] = w["seq"]
            idx["production_history"] = sorted(seq_after, key=seq_after.__getitem__)
            return idx, known
        idx["production_history"] = sorted(known.seq, key=known.seq.__getitem__)
        return idx, known

    def read_index(self) -> dict[str, Any]:
        """The index rebuilt from the group's packages (their metadata records), with the records
        of a pending transaction (committed, not yet completed) in place of theirs."""
        pending = self._get_pending()
        return self._load(pending)[0]

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """Under the S3 lease: complete a dead writer's pending transaction, read the packages,
        yield, store pending.json (the commit), write the changed packages, append the audit
        events tagged with the transaction id, delete pending.json."""
        with self._s3_lock():
            self._recover()
            idx, known = self._load()
            before = copy.deepcopy(idx)
            tx = Transaction(idx)
            yield tx
            writes = self._plan(before, known, tx.index)
            if not tx.events:  # nothing to audit: nothing to make agree
                self._apply(writes, known)
                return
            pending = {"txid": uuid.uuid4().hex, "events": tx.events, "writes": writes}
            self._put_pending(pending)
            self._hook("after-pending")
            self._apply(writes, known, pending=pending)
            self._hook("after-packages")
            self._append_lines(tx.events, pending["txid"])
            self._hook("after-audit")
            self._delete_pending()

    def _recover(self) -> None:
        """Under the lock: complete a pending transaction left by a dead writer (write its records
        again, append its missing audit lines), then delete it."""
        pending = self._get_pending()
        if pending is None:
            return
        _, known = self._load()
        self._apply(pending["writes"], known, redo=True)
        self._append_lines(pending["events"], pending["txid"])
        self._delete_pending()

    @staticmethod
    def _plan(before: dict[str, Any], known: _Packages, idx: dict[str, Any]) -> list[dict[str, Any]]:
        """The package writes that take `before` to `idx`, in order: [{version, record, seq}]."""
        seq = dict(known.seq)
        top = max(seq.values(), default=0)
        for v in idx["production_history"][len(before["production_history"]):]:  # new productions, in order
            top += 1
            seq[v] = top
        changed = [v for v, r in idx["versions"].items()
                   if r != before["versions"].get(v) or seq.get(v) != known.seq.get(v)]
        # Demotions first, production last: a crash in between leaves no production, never two.
        changed.sort(key=lambda v: idx["versions"][v]["status"] == Status.PRODUCTION)
        for v in changed:  # an unencodable record fails here, before anything is written
            encode_metadata(idx["versions"][v], seq.get(v))
        return [{"version": v, "record": idx["versions"][v], "seq": seq.get(v)} for v in changed]

    def _apply(self, writes: list[dict[str, Any]], known: _Packages, *, pending: dict[str, Any] | None = None,
               redo: bool = False) -> None:
        """Write each record to its package (created if the group has none for it yet). If the first
        write fails, nothing changed: `pending` is deleted. A later failure leaves it, so the next
        writer completes the transaction."""
        for n, w in enumerate(writes):
            v, rec = w["version"], w["record"]
            md = encode_metadata(rec, w["seq"])
            status = APPROVAL[rec["status"]]
            try:
                if v not in known.arns:
                    self._create_package(rec, md, status, cleanup=not redo)
                else:
                    self._update_package(v, rec, md, status, known)
            except Exception:
                if pending is not None and n == 0:
                    with contextlib.suppress(Exception):
                        self._delete_pending()
                raise

    def _update_package(self, v: str, rec: dict[str, Any], md: dict[str, str], status: str,
                        known: _Packages) -> None:
        stale = [k for k in known.keys.get(v, []) if k not in md]
        try:
            self.aws.sm.update_model_package(
                ModelPackageArn=known.arns[v], ModelApprovalStatus=status,
                ApprovalDescription=f"{rec['status']}"[:1000], CustomerMetadataProperties=md,
                **({"CustomerMetadataPropertiesToRemove": stale} if stale else {}))
        except Exception as exc:
            raise RegistryError(f"cannot update model package of {v}: {error_code(exc)}: "
                                f"{error_message(exc)}") from exc


    def _create_package(self, rec: dict[str, Any], md: dict[str, str], status: str, *, cleanup: bool = True) -> None:
        image = self.inference_image or default_sklearn_image(self.aws.region)
        try:
            self.aws.sm.create_model_package(
                ModelPackageGroupName=self.group,
                ModelPackageDescription=f"{self.model_name} {rec['version']}",
                ModelApprovalStatus=status, CustomerMetadataProperties=md,
                InferenceSpecification={
                    "Containers": [{"Image": image, "ModelDataUrl": rec["artifact_uri"]}],
                    "SupportedContentTypes": ["application/json", "text/csv"],
                    "SupportedResponseMIMETypes": ["application/json"],
                    "SupportedRealtimeInferenceInstanceTypes": [self.instance_type]})
        except Exception as exc:
            if cleanup:  # nothing half-created (not when completing a pending transaction: it names them)
                bucket, key = split_s3_uri(rec["artifact_uri"])
                with contextlib.suppress(Exception):
                    self.aws.s3.delete_object(Bucket=bucket, Key=key)
            raise RegistryError(f"cannot create model package for {rec['version']}: {error_code(exc)}: "
                                f"{error_message(exc)}") from exc

    def _ensure_group(self) -> None:
        sm = self.aws.sm
        try:
            sm.describe_model_package_group(ModelPackageGroupName=self.group)
            return
        except Exception as exc:
            if error_code(exc) not in ("ValidationException", "ResourceNotFound"):
                raise RegistryError(f"cannot read model package group {self.group}: {error_message(exc)}") from exc
        sm.create_model_package_group(ModelPackageGroupName=self.group,
                                      ModelPackageGroupDescription=f"retrainer model {self.model_name}")

    # ---- artifacts ------------------------------------------------------------------------------
    def put_artifact(self, version: str, source: Path) -> str:
        """Upload `source` as model.tar.gz (the group is created on first use); returns its s3:// URI."""
        body = tar_dir(Path(source))
        self._ensure_group()
        key = self.artifact_key(version)
        self.aws.s3.put_object(Bucket=self.aws.bucket, Key=key, Body=body)
        return f"s3://{self.aws.bucket}/{key}"

    def get_artifact(self, record: ModelRecord) -> Path:
        """The cached copy if it matches the record's sha256, else a fresh, safely extracted download."""
        version = record.version
        dest = self.root / "artifacts" / version
        if dest.is_dir() and digest_matches(dest, record.artifact_sha256):
            return dest
        if not record.artifact_uri or record.extra.get("artifacts_removed_at"):
            raise artifacts_gone(version)
        bucket, key = split_s3_uri(record.artifact_uri)
        private_dir(dest.parent)
        with tempfile.TemporaryDirectory(dir=dest.parent, prefix=f".{version}.") as tmp:
            tar_path = Path(tmp) / "model.tar.gz"
            try:
                self.aws.s3.download_file(bucket, key, str(tar_path))
            except Exception as exc:
                if error_code(exc) in _NOT_FOUND:
                    raise artifacts_gone(version) from None
                raise RegistryError(f"cannot download {record.artifact_uri}: {error_message(exc)}") from exc
            try:
                safe_extract_model(tar_path, Path(tmp) / "model", label=record.artifact_uri,
                                   **extract_limits(self.aws.settings))
            except ArtifactError as exc:
                raise RegistryError(str(exc)) from None
            private_tree(Path(tmp) / "model")
            if dest.exists():
                shutil.rmtree(dest)
            os.replace(Path(tmp) / "model", dest)
        return dest

    def remove_artifact(self, record: ModelRecord) -> bool:
        """Delete the S3 object and the local cache; False if the record names no artifact."""
        if not record.artifact_uri:
            return False
        bucket, key = split_s3_uri(record.artifact_uri)
        self.aws.s3.delete_object(Bucket=bucket, Key=key)
        shutil.rmtree(self.root / "artifacts" / record.version, ignore_errors=True)
        return True

    # ---- S3 audit log and lock ------------------------------------------------------------------
    def _get_audit(self) -> tuple[str, str | None]:
        bucket = self.aws.require_bucket()
        try:
            obj = self.aws.s3.get_object(Bucket=bucket, Key=self.audit_key)
        except Exception as exc:
            if error_code(exc) in _NOT_FOUND:
                return "", None
            raise RegistryError(f"cannot read audit log s3://{bucket}/{self.audit_key}: {error_message(exc)}") from exc
        return obj["Body"].read().decode("utf-8"), obj["ETag"]

    def read_audit_log(self) -> AuditLog:
        """The readable events in the S3 audit log, oldest first, plus those of a pending
        transaction not appended yet (its writer died, or is still writing), and the unreadable
        line count."""
        pending = self._get_pending()
        text, _ = self._get_audit()
        raw, skipped = parse_audit_lines(text)
        if pending:
            raw += missing_events(pending, raw)
        return AuditLog([{k: v for k, v in ev.items() if k != TXID} for ev in raw], skipped)

    def read_audit(self) -> list[dict[str, Any]]:
        """The readable events in the S3 audit log, oldest first."""
        return self.read_audit_log().events

    def append_audit(self, events: list[dict[str, Any]]) -> None:
        """Append with a conditional write (If-Match / If-None-Match), retried on conflict."""
        self._append_lines(events, None)

    def _append_lines(self, events: list[dict[str, Any]], txid: str | None) -> None:
        """Append `events` (tagged with `txid` if given; then only those with no line of that txid
        yet) with a conditional write, retried on conflict."""
        for attempt in range(8):
            text, etag = self._get_audit()
            todo = events
            if txid:
                todo = missing_events({"txid": txid, "events": events}, parse_audit_lines(text)[0])
                if not todo:
                    return
            tag = {TXID: txid} if txid else {}
            lines = "".join(json.dumps({**ev, **tag}, sort_keys=True) + "\n" for ev in todo)
            if text and not text.endswith("\n"):
                text += "\n"
            cond = {"IfMatch": etag} if etag else {"IfNoneMatch": "*"}
            try:
                self.aws.s3.put_object(Bucket=self.aws.bucket, Key=self.audit_key, Body=(text + lines).encode(),
                                       ContentType="application/x-ndjson", **cond)
                return
            except Exception as exc:
                if error_code(exc) not in _CONFLICT:
                    raise RegistryError(f"cannot append to audit log: {error_message(exc)}") from exc
                self._sleep(0.05 * (2 ** attempt))
        raise RegistryError("cannot append to audit log: too many concurrent writers")

    # ---- the pending transaction (write-ahead record) --------------------------------------------
    def _get_pending(self) -> dict[str, Any] | None:
        bucket = self.aws.require_bucket()
        try:
            obj = self.aws.s3.get_object(Bucket=bucket, Key=self.pending_key)
        except Exception as exc:
            if error_code(exc) in _NOT_FOUND:
                return None
            raise RegistryError(f"cannot read s3://{bucket}/{self.pending_key}: {error_message(exc)}") from exc
        try:
            return json.loads(obj["Body"].read())
        except ValueError:
            raise RegistryError(f"s3://{bucket}/{self.pending_key} is corrupt; it holds a transaction "
                                "that was not completed: inspect it, then delete it") from None

    def _put_pending(self, pending: dict[str, Any]) -> None:
        try:
            self.aws.s3.put_object(Bucket=self.aws.bucket, Key=self.pending_key, ContentType="application/json",
                                   Body=json.dumps(pending, sort_keys=True, default=str).encode())
        except Exception as exc:
            raise RegistryError(f"cannot store the pending transaction: {error_message(exc)}") from exc

    def _delete_pending(self) -> None:
        self.aws.s3.delete_object(Bucket=self.aws.bucket, Key=self.pending_key)

    @contextlib.contextmanager
    def _s3_lock(self) -> Iterator[None]:
        s3, bucket = self.aws.s3, self.aws.require_bucket()
        owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        deadline = time.monotonic() + self.lock_timeout_s
        delay = 0.05
        while True:
            try:
                s3.put_object(Bucket=bucket, Key=self.lock_key, IfNoneMatch="*",
                              Body=json.dumps({"owner": owner, "since": utcnow_iso()}).encode())
                break
            except Exception as exc:
                if error_code(exc) not in _CONFLICT:
                    raise RegistryError(f"cannot take the registry lock s3://{bucket}/{self.lock_key}: "
                                        f"{error_message(exc)}") from exc
            holder = self._lock_holder()
            if holder is None:
                continue
            age, who = holder
            if age > self.lock_ttl_s:  # stale: its writer died
                with contextlib.suppress(Exception):
                    s3.delete_object(Bucket=bucket, Key=self.lock_key)
                continue
            if time.monotonic() > deadline:
                raise RegistryError(f"registry {self.group} is locked by {who} ({age:.0f} s); "
                                    f"retry later or delete s3://{bucket}/{self.lock_key} if that writer is gone")
            self._sleep(delay)
            delay = min(delay * 2, 2.0)
        try:
            yield
        finally:
            with contextlib.suppress(Exception):
                s3.delete_object(Bucket=bucket, Key=self.lock_key)

    def _lock_holder(self) -> tuple[float, str] | None:
        try:
            obj = self.aws.s3.get_object(Bucket=self.aws.bucket, Key=self.lock_key)
        except Exception as exc:
            if error_code(exc) in _NOT_FOUND:
                return None
            raise
        try:
            who = json.loads(obj["Body"].read()).get("owner", "?")
        except ValueError:
            who = "?"
        # Wall-clock time on purpose: the lease's age is measured against S3's own timestamp.
        age = (datetime.now(timezone.utc) - obj["LastModified"]).total_seconds()
        return age, one_line(who, 80)


class SageMakerRegistry(StoredRegistry):
    """Registry on a SageMaker Model Package Group (see module docstring): the generic registry on
    a `SageMakerStorage`, a sibling of `LocalRegistry`."""

    def __init__(self, aws: AWSContext, model_name: str = "readmission-30d", *, cache_dir: Path | str,
                 inference_image: str | None = None, instance_type: str = "ml.m5.large",
                 lock_ttl_s: float = 900.0, lock_timeout_s: float = 120.0,
                 sleep: Callable[[float], None] = time.sleep,
                 fault_hook: Callable[[str], None] | None = None):
        super().__init__(SageMakerStorage(aws, model_name, cache_dir=cache_dir, inference_image=inference_image,
                                          instance_type=instance_type, lock_ttl_s=lock_ttl_s,
                                          lock_timeout_s=lock_timeout_s, sleep=sleep, fault_hook=fault_hook))

    @property
    def aws(self) -> AWSContext:
        """The AWS clients and settings."""
        return self.storage.aws

    @property
    def group(self) -> str:
        """The Model Package Group's name."""
        return self.storage.group

    @property
    def root(self) -> Path:
        """The local artifact cache directory."""
        return self.storage.root

    @property
    def audit_key(self) -> str:
        """S3 key of the audit log."""
        return self.storage.audit_key

    @property
    def lock_key(self) -> str:
        """S3 key of the writers' lease."""
        return self.storage.lock_key

    def artifact_key(self, version: str) -> str:
        """Takes a version; returns the S3 key of its model.tar.gz."""
        return self.storage.artifact_key(version)
