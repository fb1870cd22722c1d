"""The models in memory: one `scoring.FastScorer` per loaded version, loaded only after the
registry has verified the artifacts' sha256, so a tampered or cleaned version is never served."""
from __future__ import annotations

import threading
from typing import Iterable

from ..scoring import FastScorer
from ..training import load_model


class ModelPool:
    """Loaded scorers by version. `get` verifies the artifacts' sha256 through the registry."""

    def __init__(self, registry):
        self.registry = registry
        self._scorers: dict[str, FastScorer] = {}
        self._lock = threading.Lock()

    def get(self, version: str) -> FastScorer:
        """The scorer of `version`, loaded (and verified) on first use.

        Raises a RegistryError: UnknownVersion, or ArtifactIntegrityError (artifacts gone or failing
        their sha256)."""
        with self._lock:
            cached = self._scorers.get(version)
        if cached is not None:
            return cached
        path = self.registry.verify(version)
        scorer = FastScorer.from_model(load_model(path))
        with self._lock:
            return self._scorers.setdefault(version, scorer)

    def keep_only(self, versions: Iterable[str]) -> None:
        """Unload every version not in `versions`."""
        keep = set(versions)
        with self._lock:
            for v in [v for v in self._scorers if v not in keep]:
                del self._scorers[v]

    @property
    def versions(self) -> list[str]:
        """The loaded versions, sorted."""
        with self._lock:
            return sorted(self._scorers)
