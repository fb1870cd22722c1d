"""Owner-only file permissions for retrainer's state (registry, Prefect's database and logs).

Patient-level lineage and models live in these files, so they are created 0600 (directories
0700) whatever the umask; retrainer processes also run with umask 0o077 (`restrict_umask`), so
files other libraries create for them (Prefect's SQLite database under PREFECT_HOME, logs) are
private too.
"""
from __future__ import annotations

import os
from pathlib import Path

PRIVATE_UMASK = 0o077
FILE_MODE = 0o600
DIR_MODE = 0o700


def restrict_umask() -> int:
    """Make the process umask at least 0o077 (group and others get nothing); returns the old one."""
    old = os.umask(PRIVATE_UMASK)
    os.umask(old | PRIVATE_UMASK)
    return old


def private_dir(path: Path | str) -> Path:
    """Create `path` (and missing parents) as 0700 directories; an existing `path` is set to 0700.
    Existing parents are left as they are (they may be shared, e.g. the repository)."""
    path = Path(path)
    missing = []
    p = path
    while not p.exists():
        missing.append(p)
        if p.parent == p:
            break
        p = p.parent
    for d in reversed(missing):
        d.mkdir(mode=DIR_MODE, exist_ok=True)
        os.chmod(d, DIR_MODE)
    if path.is_dir():
        os.chmod(path, DIR_MODE)
    return path


def private_tree(path: Path | str) -> Path:
    """Set every directory under `path` (itself included) to 0700 and every file to 0600."""
    path = Path(path)
    for root, dirs, files in os.walk(path):
        os.chmod(root, DIR_MODE)
        for f in files:
            fp = os.path.join(root, f)
            if not os.path.islink(fp):
                os.chmod(fp, FILE_MODE)
    return path
