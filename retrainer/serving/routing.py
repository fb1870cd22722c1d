"""Variants and the routing table: who gets which model.

Variants. "blue" is production, "green" the canary candidate, and up to two previous production
versions stay loaded as warm standbys ("previous-1", "previous-2") at weight 0, so a rollback is a
weight change, not a model load. Every variant's model is in memory as a `scoring.FastScorer`.

Routing is deterministic per entity: the patient's pseudonym (HMAC of `patient_id` with the
pseudonymizer, the same value the prediction store keeps; `admission_id` when there is no patient
id) is mapped to u in [0, 1) and compared with the cumulative weights of the variants with weight
> 0. The same patient sees the same variant while the weights stay fixed, and raising green from
10% to 20% keeps the first 10% of patients on green. Without a pseudonymizer the hash is a plain
SHA-256 (kept in memory only); a record with neither key is routed at random by weight. The pure
part (`entity_point`, the cumulative weights) lives in `retrainer.entity_routing`, shared with the
SageMaker client `retrainer.client`.

The routing table is ONE immutable object (`RoutingTable`: variants, weights and loaded scorers),
replaced, never mutated (see `serving.app` for the swap). The current routing is persisted to
`<home>/serving/routing.json` (atomic write) and read back at start-up; without it the default is
production at 1.0 plus the previous versions at 0. Temp files of routing writes killed before their
rename are swept at start-up and before each write (`sweep_routing_temp_files`).
"""
from __future__ import annotations

import json
import logging
import math
import re
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping, Sequence

from ..entity_routing import choose, cumulative_bounds, entity_point  # noqa: F401 - re-exported
from ..registry import atomic_write_text
from ..registry.storage import stale_temp_files
from ..scoring import FastScorer

log = logging.getLogger(__name__)

PRODUCTION = "blue"
CANDIDATE = "green"
STANDBY_PREFIX = "previous-"
TARGET_HEADER = "X-Amzn-SageMaker-Target-Variant"
INVOKED_HEADER = "X-Amzn-Invoked-Production-Variant"
ROUTING_FILE = "routing.json"
STALE_TEMP_SECONDS = 60.0  # a routing write takes milliseconds: an older temp file is a killed write's
WEIGHT_TOLERANCE = 1e-6
_VARIANT_RE = re.compile(r"^[A-Za-z0-9](-*[A-Za-z0-9]){0,62}$")  # SageMaker variant names


@dataclass(frozen=True)
class VariantSpec:
    """One production variant: its name, the model version it serves and its traffic weight."""

    variant: str
    version: str
    weight: float

    def to_dict(self) -> dict[str, Any]:
        """The JSON form: {variant, version, weight}."""
        return {"variant": self.variant, "version": self.version, "weight": self.weight}


def parse_variants(items: Any) -> list[VariantSpec]:
    """Validate a routing spec: a list of {variant, version, weight} (dicts or 3-tuples).

    Raises ValueError with one line: names must be SageMaker variant names and unique, weights in
    [0, 1], at least one weight > 0, and the weights > 0 must sum to 1.
    """
    if isinstance(items, Mapping) and "variants" in items:
        items = items["variants"]
    if not isinstance(items, (list, tuple)) or not items:
        raise ValueError("expected a non-empty list of {variant, version, weight}")
    specs: list[VariantSpec] = []
    for i, item in enumerate(items):
        if isinstance(item, VariantSpec):
            specs.append(item)
            continue
        if isinstance(item, (list, tuple)) and len(item) == 3:
            item = dict(zip(("variant", "version", "weight"), item))
        if not isinstance(item, Mapping):
            raise ValueError(f"variant {i}: expected an object with variant, version, weight")
        extra = set(item) - {"variant", "version", "weight"}
        if extra:
            raise ValueError(f"variant {i}: unknown field(s) {', '.join(sorted(map(str, extra)))}")
        name, version, weight = item.get("variant"), item.get("version"), item.get("weight")
        if not isinstance(name, str) or not _VARIANT_RE.match(name):
            raise ValueError(f"variant {i}: name {name!r} must be 1-63 letters, digits or '-'")
        if not isinstance(version, str) or not version:
            raise ValueError(f"variant {name}: version must be a non-empty string")
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight) \
                or not 0 <= weight <= 1:
            raise ValueError(f"variant {name}: weight must be a number in [0, 1], got {weight!r}")
        specs.append(VariantSpec(name, version, float(weight)))
    names = [s.variant for s in specs]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"duplicate variant name(s): {', '.join(dupes)}")
    total = sum(s.weight for s in specs if s.weight > 0)
    if total == 0:
        raise ValueError("at least one variant needs a weight > 0")
    if abs(total - 1.0) > WEIGHT_TOLERANCE:
        raise ValueError(f"weights of the variants with weight > 0 must sum to 1, they sum to {total:g}")
    return specs


@dataclass(frozen=True)
class RoutingTable:
    """Immutable: variants, their scorers, the cumulative weights. Replaced, never mutated."""
    variants: tuple[VariantSpec, ...]
    scorers: Mapping[str, FastScorer]          # variant -> scorer
    bounds: tuple[float, ...]                  # cumulative upper bounds of the weighted variants
    routed: tuple[str, ...]                    # the weighted variants, in order
    generation: int = 0
    updated_at: str = ""
    by_name: Mapping[str, VariantSpec] = field(default_factory=dict)

    @classmethod
    def build(cls, specs: Sequence[VariantSpec], scorers: Mapping[str, FastScorer], generation: int,
              updated_at: str) -> "RoutingTable":
        """A table for `specs`, with `scorers` by variant name; weights are normalised to 1."""
        bounds, routed = cumulative_bounds((s.variant, s.weight) for s in specs)
        return cls(tuple(specs), MappingProxyType(dict(scorers)), bounds, routed, generation, updated_at,
                   MappingProxyType({s.variant: s for s in specs}))

    @classmethod
    def empty(cls) -> "RoutingTable":
        """The table of a server with no model loaded."""
        return cls((), MappingProxyType({}), (), (), 0, "", MappingProxyType({}))

    def route(self, u: float) -> str:
        """The variant for a point u in [0, 1) (`entity_routing.choose`)."""
        return choose(self.bounds, self.routed, u)

    def to_dict(self) -> dict[str, Any]:
        """The persisted form: variants, generation, updated_at."""
        return {"variants": [s.to_dict() for s in self.variants], "generation": self.generation,
                "updated_at": self.updated_at}


def default_variants(registry) -> list[VariantSpec]:
    """Production at 1.0 ("blue") and up to two previous versions at 0 ("previous-1", "-2")."""
    prod = registry.production()
    if prod is None:
        return []
    specs = [VariantSpec(PRODUCTION, prod.version, 1.0)]
    for i, rec in enumerate(registry.previous()[:2], start=1):
        specs.append(VariantSpec(f"{STANDBY_PREFIX}{i}", rec.version, 0.0))
    return specs


def routing_path(settings) -> Path:
    """Where the routing of the endpoint of `settings` is persisted."""
    return Path(settings.home) / "serving" / ROUTING_FILE


def write_routing(path: Path, table_dict: dict[str, Any]) -> None:
    """Persist a routing (a `RoutingTable.to_dict()`) atomically; stale temp files of earlier,
    killed writes go first (`sweep_routing_temp_files`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sweep_routing_temp_files(path)
    atomic_write_text(path, json.dumps(table_dict, indent=2, sort_keys=True))


def sweep_routing_temp_files(path: Path, older_than: float = STALE_TEMP_SECONDS) -> int:
    """Delete the temp files a killed `write_routing` left next to `path` (`.<name>.<hex>.tmp`,
    `atomic_write_text`'s pattern for that one name) not modified for `older_than` seconds: a
    younger one may be another process's write in progress. Returns how many were removed; a
    file that cannot be removed is logged, never raised (the server starts anyway)."""
    path = Path(path)
    if not path.parent.is_dir():
        return 0
    cutoff = time.time() - older_than
    removed = 0
    for tmp in stale_temp_files(path.parent, path.name):
        try:
            st = tmp.lstat()
            if stat.S_ISREG(st.st_mode) and st.st_mtime < cutoff:
                tmp.unlink()
                removed += 1
        except FileNotFoundError:  # another process removed it
            continue
        except OSError as exc:
            log.warning("cannot remove stale temp file %s: %s", tmp, type(exc).__name__)
    if removed:
        log.info("removed %d stale temp file(s) of %s left by killed writes", removed, path.name)
    return removed


def read_routing(path: Path) -> list[VariantSpec] | None:
    """The persisted routing, validated; None when there is no file. ValueError/OSError if unreadable."""
    if not path.is_file():
        return None
    data = json.loads(path.read_text(encoding="utf-8"))
    return parse_variants(data)
