"""Model registry: versions, lineage, statuses and the audit log.

Modelled on a registry with one documented interface and independent stores:

- `model`   -- `Status`, `ModelRecord` and the `Registry` Protocol (each operation documented once);
- `rules`   -- the lifecycle rules as pure functions over the index (transitions, registration,
               promotion keeping two previous, the rollback target, what retention cleans);
- `storage` -- the `Storage` Protocol (index, locked transaction, audit, artifacts) and the
               crash-safe file helpers;
- `core`    -- `StoredRegistry`: the rules run inside a storage's transactions;
- `local`   -- `LocalStorage` (files under one directory) and `LocalRegistry`.

`SageMakerRegistry` (`retrainer.backends.sagemaker`) is a sibling of `LocalRegistry`: the same
`StoredRegistry` on a Model Package Group storage, so both refuse the same things with the same
messages. Production plus the two most recent previous versions are always kept ready;
retention never deletes their artifacts.
"""
from __future__ import annotations

from .core import StoredRegistry
from .local import LocalRegistry, LocalStorage
from .model import STATUSES, ModelRecord, Registry, Status
from .rules import ALLOWED, KEEP_PREVIOUS, rollback_target
from .storage import AuditLog, Storage, Transaction, atomic_write_text, sha256_dir, verify_artifact

__all__ = ["ALLOWED", "AuditLog", "KEEP_PREVIOUS", "STATUSES", "LocalRegistry", "LocalStorage", "ModelRecord",
           "Registry", "Status", "Storage", "StoredRegistry", "Transaction", "atomic_write_text", "rollback_target",
           "sha256_dir", "verify_artifact"]
