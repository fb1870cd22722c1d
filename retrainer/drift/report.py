"""Drift results: one `FeatureDrift` per feature, a `DriftReport` of them, and their renderings
(JSON, a Markdown table for a Prefect artifact, text for the CLI).

Every result carries n_ref, n_cur, the number of bins used after sparse bins were merged, the
noise floor (95% by default), the chi-square p-value of its PSI and its family-wise floor (see
`psi`). Status: "too_small" when either side has fewer than DriftSettings.min_window rows (too
small to tell: never fires), else "drift" when psi > max(psi_threshold, family-wise floor), else
"ok": a feature drifts only when its PSI is both large and beyond what noise over the F features
compared gives with probability alpha. The score column (role "score") is listed but does not
count towards `features_required`.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from ..settings import DriftSettings
from .sources import Data

if TYPE_CHECKING:
    from .profile import ReferenceProfile

FEATURE, SCORE = "feature", "score"
OK, DRIFT, TOO_SMALL = "ok", "drift", "too_small"


@dataclass(frozen=True)
class FeatureDrift:
    """One feature's drift result. `bins` is the number of bins compared after sparse bins were
    merged (`merged` lists the original bin indices of each); `p_value` is the chi-square p-value
    of the PSI; `family_floor` the PSI noise exceeds with probability alpha/`family`."""

    feature: str
    kind: str
    role: str
    psi: float
    bins: int
    n_ref: int
    n_cur: int
    noise_floor: float
    status: str
    ks: float | None = None
    js: float | None = None
    labels: tuple[str, ...] = ()
    ref_counts: tuple[int, ...] = ()
    cur_counts: tuple[int, ...] = ()
    p_value: float = 1.0
    family_floor: float = 0.0
    family: int = 1
    alpha: float = 0.05
    merged: tuple[tuple[int, ...], ...] = ()

    @property
    def above_family_floor(self) -> bool:
        """PSI beyond the family-wise floor: noise alone over the features compared does not
        explain it (at level alpha)."""
        return self.psi > self.family_floor

    def bar(self, threshold: float) -> float:
        """The PSI this feature must exceed to drift: max(threshold, its family-wise floor)."""
        return max(threshold, self.family_floor)

    def to_dict(self, detail: bool = False) -> dict:
        """JSON-safe dict of the result, rounded; per-bin counts too with detail=True."""
        d = {"feature": self.feature, "kind": self.kind, "role": self.role, "psi": round(self.psi, 6),
             "bins": self.bins, "n_ref": self.n_ref, "n_cur": self.n_cur,
             "noise_floor": round(self.noise_floor, 6), "p_value": self.p_value,
             "family_floor": round(self.family_floor, 6), "above_family_floor": self.above_family_floor,
             "family": self.family, "alpha": self.alpha, "status": self.status}
        if self.ks is not None:
            d["ks"] = round(self.ks, 6)
        if self.js is not None:
            d["js"] = round(self.js, 6)
        if detail:
            d["bin_detail"] = [{"bin": b, "ref": r, "cur": c}
                               for b, r, c in zip(self.labels, self.ref_counts, self.cur_counts)]
            d["merged_bins"] = [[self.labels[i] if i < len(self.labels) else str(i) for i in g]
                                for g in self.merged if len(g) > 1]
        return d


@dataclass
class DriftReport:
    """Per-feature PSI results with the thresholds they were judged by."""

    results: list[FeatureDrift]
    threshold: float = 0.20
    min_window: int = 500
    noise_quantile: float = 0.95
    features_required: int = 1
    alpha: float = 0.05
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.results)

    def __iter__(self) -> Iterator[FeatureDrift]:
        return iter(self.results)

    def __getitem__(self, feature: str) -> FeatureDrift:
        for r in self.results:
            if r.feature == feature:
                return r
        raise KeyError(feature)

    @property
    def n_cur(self) -> int:
        return self.results[0].n_cur if self.results else 0

    @property
    def n_ref(self) -> int:
        return self.results[0].n_ref if self.results else 0

    def drifted(self, threshold: float | None = None, min_window: int | None = None) -> list[FeatureDrift]:
        """Results with psi > max(threshold, their family-wise floor) on a window of at least
        min_window rows (defaults: the report's own), highest PSI first; includes the score
        column when it drifted."""
        t = self.threshold if threshold is None else threshold
        w = self.min_window if min_window is None else min_window
        hits = [r for r in self.results if r.psi > r.bar(t) and min(r.n_ref, r.n_cur) >= w]
        return sorted(hits, key=lambda r: r.psi, reverse=True)

    @property
    def drift_detected(self) -> bool:
        """True when at least `features_required` features (the score column aside) drifted."""
        return sum(r.role == FEATURE for r in self.drifted()) >= self.features_required

    def top(self, k: int = 5) -> list[FeatureDrift]:
        """The k results with the highest PSI."""
        return sorted(self.results, key=lambda r: r.psi, reverse=True)[:k]

    def to_records(self, detail: bool = False) -> list[dict]:
        """One `FeatureDrift.to_dict` per feature, in profile order."""
        return [r.to_dict(detail) for r in self.results]

    def to_json(self, detail: bool = False, indent: int | None = None) -> str:
        """JSON list, one object per feature: feature, kind, role, psi, bins, n_ref, n_cur,
        noise_floor, status (and ks/js when computed; per-bin counts with detail=True)."""
        return json.dumps(self.to_records(detail), indent=indent, allow_nan=False)

    def summary(self) -> str:
        """One line: how many features drifted, window sizes, too-small and score notes."""
        d = self.drifted()
        feats = sum(r.role == FEATURE for r in self.results)
        head = (f"{sum(r.role == FEATURE for r in d)} of {feats} features drifted "
                f"(PSI > max({self.threshold:g}, family-wise floor at alpha {self.alpha:g} over {feats}); "
                f"current {self.n_cur:,} rows, reference {self.n_ref:,} rows)")
        if any(r.status == TOO_SMALL for r in self.results):
            head += f"; window below {self.min_window:,} rows: too small to tell"
        if any(r.role == SCORE and r in d for r in self.results):
            head += "; the predicted score drifted"
        return head

    def to_markdown(self, k: int | None = None) -> str:
        """Markdown table (highest PSI first; k rows at most) for a Prefect artifact."""
        rows = self.top(k if k is not None else len(self.results))
        lines = [f"**Drift:** {self.summary()}.", "",
                 f"Noise floor: PSI that sampling noise alone exceeds {1 - self.noise_quantile:.0%} of the time. "
                 f"Family-wise floor: PSI that noise exceeds with probability alpha/F (alpha {self.alpha:g}, "
                 f"F features compared); a feature drifts iff PSI > max({self.threshold:g}, family-wise floor).", "",
                 "| feature | PSI | p-value | noise floor | family-wise floor | above floor | bins | n_ref | n_cur "
                 "| status |",
                 "|---|---:|---:|---:|---:|---|---:|---:|---:|---|"]
        for r in rows:
            name = f"{r.feature} (score)" if r.role == SCORE else r.feature
            status = f"**{r.status}**" if r.status == DRIFT else r.status.replace("_", " ")
            lines.append(f"| {name} | {r.psi:.4f} | {r.p_value:.3g} | {r.noise_floor:.4f} | {r.family_floor:.4f} | "
                         f"{'yes' if r.above_family_floor else 'no'} | {r.bins} | {r.n_ref:,} | "
                         f"{r.n_cur:,} | {status} |")
        return "\n".join(lines) + "\n"


def format_report(report: DriftReport, k: int | None = None) -> str:
    """Human-readable text for the CLI: one summary line, then a table, highest PSI first."""
    rows = report.top(k if k is not None else len(report))
    extra = any(r.ks is not None or r.js is not None for r in rows)
    width = max([len("feature")] + [len(r.feature) + (8 if r.role == SCORE else 0) for r in rows])
    head = f"{'feature':<{width}}  {'PSI':>8}  {'p-value':>8}  {'noise':>8}  {'fw floor':>8}  {'bins':>4}  status"
    if extra:
        head += "     KS      JS"
    lines = [report.summary(), head]
    for r in rows:
        name = f"{r.feature} (score)" if r.role == SCORE else r.feature
        line = (f"{name:<{width}}  {r.psi:8.4f}  {r.p_value:8.2g}  {r.noise_floor:8.4f}  {r.family_floor:8.4f}  "
                f"{r.bins:4d}  {r.status.replace('_', ' '):<9}")
        if extra:
            line += f"  {_fmt(r.ks)}  {_fmt(r.js)}"
        lines.append(line.rstrip())
    return "\n".join(lines)


def _fmt(x: float | None) -> str:
    return f"{x:6.4f}" if x is not None else "     -"


def drift_report(reference: "ReferenceProfile | Data", current: Data,
                 settings: DriftSettings | None = None, features: list[str] | None = None) -> DriftReport:
    """Drift of `current` against `reference`.

    reference: a ReferenceProfile, a saved profile (.json), or data to fit one from (DataFrame,
    Parquet file or folder, binned with settings.n_bins). current: DataFrame, Parquet file or
    folder. Problems with either raise DataError with one clear line.
    """
    from .profile import ReferenceProfile  # noqa: PLC0415 - cycle: profile imports this module

    settings = settings or DriftSettings()
    if isinstance(reference, ReferenceProfile):
        profile = reference
    elif isinstance(reference, (str, Path)) and Path(reference).suffix.lower() == ".json":
        profile = ReferenceProfile.load(reference)
    else:
        profile = ReferenceProfile.fit(reference, features=features, n_bins=settings.n_bins)
    return profile.score(current, settings)
