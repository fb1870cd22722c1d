"""Per-entity routing, the pure part: a record's point in [0, 1) and the variant the cumulative
weights give it. One copy, imported by the local endpoint's routing table
(`retrainer.serving.routing`) and by the SageMaker client (`retrainer.client`), so both send a
patient to the same variant for the same weights and pseudonym key. No FastAPI, no boto3 here.

The point is the first 13 hex digits of the entity's pseudonym (HMAC of `patient_id` under the
pseudonym key, `deid.Pseudonymizer`; the row id when there is no entity id) divided by 16**13.
Variants with weight > 0 cover [0, 1) in their listed order, each a share equal to its normalised
weight; weight-0 variants get nothing. The order matters: both sides use the endpoint's order.
"""
from __future__ import annotations

import hashlib
from typing import Any, Iterable, Mapping, Sequence

from . import schema as S


def entity_point(record: Mapping[str, Any], pseudonymizer=None) -> float | None:
    """u in [0, 1) from the record's patient (or admission) id; None without either key."""
    for domain in (S.ENTITY or "patient_id", S.ADMISSION_ID):
        value = record.get(domain)
        if value is None or (isinstance(value, str) and not value.strip()):
            continue
        if pseudonymizer is not None:
            digest = pseudonymizer.pseudonym(value, domain)
        else:
            digest = hashlib.sha256(f"{domain}\0{str(value).strip()}".encode()).hexdigest()
        return int(digest[:13], 16) / float(16 ** 13)
    return None


def cumulative_bounds(weights: Iterable[tuple[str, float]]) -> tuple[tuple[float, ...], tuple[str, ...]]:
    """(bounds, routed): the cumulative upper bounds of the variants with weight > 0, normalised
    to 1 (the last bound is exactly 1.0), and those variants' names, in the given order."""
    weighted = [(name, float(w)) for name, w in weights if w > 0]
    total = sum(w for _, w in weighted)
    bounds, acc = [], 0.0
    for _, w in weighted:
        acc += w / total
        bounds.append(acc)
    if bounds:
        bounds[-1] = 1.0  # no gap at the top from float rounding
    return tuple(bounds), tuple(name for name, _ in weighted)


def choose(bounds: Sequence[float], routed: Sequence[str], u: float) -> str:
    """The variant for a point u in [0, 1)."""
    for bound, name in zip(bounds, routed):
        if u < bound:
            return name
    return routed[-1]
