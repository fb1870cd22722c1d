"""The non-inferiority rule every AUC comparison decides by, and the evidence it decides on.

With Δ = AUC(candidate) - AUC(production), δ the tolerance (`canary.auc_tolerance`, 0.02) and
[low, high] a two-sided `level` interval of Δ (0.95: each bound is a one-sided test at 0.025):

* **promote** iff low > -δ        (the candidate is shown to be no worse than δ);
* **rollback** iff high < -δ      (the candidate is shown to be worse by more than δ);
* otherwise **inconclusive**: the evidence cannot tell, and nothing is promoted on it.

The rule decides only on enough evidence: each compared arm needs at least `min_positives`
positives and `min_negatives` negatives (100 each by default), else the verdict is inconclusive
and says what is missing.

The interval comes from the paired DeLong test when both models scored the same rows, the
unpaired DeLong test when each row was scored by one arm, and a bootstrap clustered on the
pseudonym when one patient contributes several rows (`compare_paired`, `compare_unpaired`).
Independent pieces of evidence (the registration-time comparison on the newest matured month and
the matured shadow rows of a canary) are pooled by inverse-variance weighting (`pool`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Literal

import numpy as np

from .auc import (
    DEFAULT_BOOTSTRAP,
    AUCDelta,
    clustered_bootstrap_paired,
    clustered_bootstrap_unpaired,
    has_repeats,
    paired_delong,
    unpaired_delong,
    z_two_sided,
)

Verdict = Literal["promote", "rollback", "inconclusive"]
VERDICTS: tuple[str, ...] = ("promote", "rollback", "inconclusive")
MIN_POSITIVES = 100
MIN_NEGATIVES = 100


@dataclass(frozen=True)
class Counts:
    """Rows, positives and negatives of one compared arm."""

    n: int
    positives: int

    @property
    def negatives(self) -> int:
        return self.n - self.positives


@dataclass(frozen=True)
class Evidence:
    """One AUC comparison and its verdict: what was measured (`source`), how (`method`), on how
    many rows and positives per arm, Δ with its interval, and the rule's verdict and reason."""

    source: str
    verdict: Verdict
    reason: str
    tolerance: float
    method: str | None = None
    level: float = 0.95
    delta: float | None = None
    low: float | None = None
    high: float | None = None
    se: float | None = None
    auc_candidate: float | None = None
    auc_production: float | None = None
    candidate: Counts = Counts(0, 0)
    production: Counts = Counts(0, 0)
    paired: bool = True
    parts: tuple["Evidence", ...] = field(default=())
    metric: str = "auc"  # what Δ is of; a regression model's evidence is on "spearman" (auc_* hold its values)

    @property
    def decided(self) -> bool:
        return self.verdict != "inconclusive"

    def to_dict(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in ("source", "verdict", "reason", "tolerance", "method", "level",
                                              "delta", "low", "high", "se", "auc_candidate", "auc_production",
                                              "paired", "metric")}
        for arm in ("candidate", "production"):
            c: Counts = getattr(self, arm)
            out[f"n_{arm}"], out[f"pos_{arm}"], out[f"neg_{arm}"] = c.n, c.positives, c.negatives
        out["parts"] = [p.to_dict() for p in self.parts]
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Evidence":
        """The inverse of `to_dict` (for evidence stored in a version's lineage)."""
        keys = ("source", "verdict", "reason", "tolerance", "method", "level", "delta", "low", "high", "se",
                "auc_candidate", "auc_production", "paired", "metric")
        return cls(**{k: d.get(k) for k in keys if k in d},
                   candidate=Counts(int(d.get("n_candidate", 0)), int(d.get("pos_candidate", 0))),
                   production=Counts(int(d.get("n_production", 0)), int(d.get("pos_production", 0))),
                   parts=tuple(cls.from_dict(p) for p in d.get("parts") or ()))

    def summary(self) -> str:
        """One line: the measurement, the interval, the verdict."""
        return self.reason


def _counts_text(e: "Evidence") -> str:
    c, p = e.candidate, e.production
    if e.paired:
        return f"{c.n:,} rows ({c.positives:,} positives, {c.negatives:,} negatives)"
    return (f"candidate {c.n:,} rows ({c.positives:,}+/{c.negatives:,}-), production {p.n:,} rows "
            f"({p.positives:,}+/{p.negatives:,}-)")


def decide(delta: AUCDelta | None, tolerance: float, *, source: str, paired: bool,
           candidate: Counts | None = None, production: Counts | None = None,
           min_positives: int = MIN_POSITIVES, min_negatives: int = MIN_NEGATIVES,
           parts: Iterable[Evidence] = ()) -> Evidence:
    """Apply the non-inferiority rule to `delta` (None: no usable comparison)."""
    if tolerance < 0:
        raise ValueError("tolerance must be >= 0")
    if delta is not None:
        candidate = Counts(delta.n_candidate, delta.pos_candidate)
        production = Counts(delta.n_production, delta.pos_production)
    candidate = candidate or Counts(0, 0)
    production = production or Counts(0, 0)
    base: dict[str, Any] = dict(source=source, tolerance=tolerance, candidate=candidate, production=production,
                                paired=paired, parts=tuple(parts))
    if delta is not None:
        base.update(method=delta.method, level=delta.level, delta=delta.delta, low=delta.low, high=delta.high,
                    se=delta.se, auc_candidate=delta.auc_candidate, auc_production=delta.auc_production)
    arms = [("candidate", candidate)] if paired else [("candidate", candidate), ("production", production)]
    short = [f"{name} has {c.positives} positives and {c.negatives} negatives" for name, c in arms
             if c.positives < min_positives or c.negatives < min_negatives]
    probe = Evidence(verdict="inconclusive", reason="", **base)
    where = f"{source}: " if source else ""
    if short:
        return Evidence(verdict="inconclusive", **base,
                        reason=f"{where}inconclusive: too few labels ({'; '.join(short)}; need "
                               f"{min_positives} positives and {min_negatives} negatives per arm)")
    if delta is None:
        return Evidence(verdict="inconclusive", **base, reason=f"{where}inconclusive: no comparison possible")
    what = (f"{where}{delta.method} on {_counts_text(probe)}: ΔAUC {delta.delta:+.4f}, "
            f"{delta.level:.0%} CI [{delta.low:+.4f}, {delta.high:+.4f}]")
    if delta.low > -tolerance:
        return Evidence(verdict="promote", **base, reason=f"{what}; lower bound > -{tolerance:g}: non-inferior")
    if delta.high < -tolerance:
        return Evidence(verdict="rollback", **base,
                        reason=f"{what}; upper bound < -{tolerance:g}: worse by more than the tolerance")
    return Evidence(verdict="inconclusive", **base,
                    reason=f"{what} contains -{tolerance:g}: inconclusive")


def compare_paired(y, s_production, s_candidate, *, tolerance: float, source: str = "", level: float = 0.95,
                   clusters=None, min_positives: int = MIN_POSITIVES, min_negatives: int = MIN_NEGATIVES,
                   n_boot: int = DEFAULT_BOOTSTRAP, seed: int = 0) -> Evidence:
    """Both models scored on the same labelled rows. Paired DeLong, or a paired bootstrap
    clustered on `clusters` (pseudonyms) when some pseudonym appears more than once."""
    y_arr = np.asarray(y).astype(int).ravel()
    delta = (clustered_bootstrap_paired(y, s_production, s_candidate, clusters, level, n_boot, seed)
             if has_repeats(clusters) else paired_delong(y, s_production, s_candidate, level))
    counts = Counts(len(y_arr), int(y_arr.sum()))
    return decide(delta, tolerance, source=source, paired=True, candidate=counts, production=counts,
                  min_positives=min_positives, min_negatives=min_negatives)


def compare_unpaired(y_candidate, s_candidate, y_production, s_production, *, tolerance: float,
                     source: str = "", level: float = 0.95, clusters_candidate=None, clusters_production=None,
                     min_positives: int = MIN_POSITIVES, min_negatives: int = MIN_NEGATIVES,
                     n_boot: int = DEFAULT_BOOTSTRAP, seed: int = 0) -> Evidence:
    """Each labelled row scored by one arm. Unpaired DeLong, or a bootstrap clustered within each
    arm when a pseudonym repeats in either arm."""
    yc = np.asarray(y_candidate).astype(int).ravel()
    yp = np.asarray(y_production).astype(int).ravel()
    if has_repeats(clusters_candidate) or has_repeats(clusters_production):
        cc = clusters_candidate if clusters_candidate is not None else np.arange(len(yc)).astype(str)
        cp = clusters_production if clusters_production is not None else np.arange(len(yp)).astype(str)
        delta = clustered_bootstrap_unpaired(y_candidate, s_candidate, cc, y_production, s_production, cp,
                                             level, n_boot, seed)
    else:
        delta = unpaired_delong(y_candidate, s_candidate, y_production, s_production, level)
    return decide(delta, tolerance, source=source, paired=False, candidate=Counts(len(yc), int(yc.sum())),
                  production=Counts(len(yp), int(yp.sum())), min_positives=min_positives,
                  min_negatives=min_negatives)


def pool(pieces: Iterable[Evidence], tolerance: float, *, source: str = "pooled",
         min_positives: int = MIN_POSITIVES, min_negatives: int = MIN_NEGATIVES) -> Evidence:
    """Independent comparisons pooled by inverse-variance weighting of Δ (fixed effect):
    Δ = Σ w_i Δ_i / Σ w_i, se = 1/sqrt(Σ w_i), w_i = 1/se_i². Pieces without an interval add
    nothing. One usable piece is returned re-decided under `source`; none is inconclusive."""
    pieces = [p for p in pieces if p is not None]
    usable = [p for p in pieces if p.delta is not None and p.se is not None]
    cand = Counts(sum(p.candidate.n for p in usable), sum(p.candidate.positives for p in usable))
    prod = Counts(sum(p.production.n for p in usable), sum(p.production.positives for p in usable))
    paired = all(p.paired for p in usable) if usable else True
    if not usable:
        return decide(None, tolerance, source=source, paired=paired, candidate=cand, production=prod,
                      min_positives=min_positives, min_negatives=min_negatives, parts=pieces)
    level = usable[0].level
    weights = [1.0 / max(p.se, 1e-9) ** 2 for p in usable]
    total = sum(weights)
    d = sum(w * p.delta for w, p in zip(weights, usable)) / total
    se = math.sqrt(1.0 / total)
    z = z_two_sided(level)
    methods = " + ".join(sorted({p.method or "?" for p in usable}))
    auc_c = sum(w * p.auc_candidate for w, p in zip(weights, usable)) / total
    auc_p = sum(w * p.auc_production for w, p in zip(weights, usable)) / total
    delta = AUCDelta(f"pooled ({methods})" if len(usable) > 1 else usable[0].method, d, d - z * se, d + z * se,
                     se, level, auc_c, auc_p, cand.n, cand.positives, prod.n, prod.positives)
    return decide(delta, tolerance, source=source, paired=paired, min_positives=min_positives,
                  min_negatives=min_negatives, parts=pieces)
