"""The reference profile: every feature's reference bins and counts, fitted once per model
version (features from its training and validation rows, the model's score from its validation
rows only: see `fit_reference_profile`) and saved as JSON (`to_dict`/`from_dict`, `save`/`load`), so
monitoring reads only the current window and counts it into the stored bins.

The model's predicted score column ("score" by default) is profiled like a numeric feature and
compared when the current data has it too (role "score"). With `DriftSettings.extra_stats`,
Jensen-Shannon distance and a binned Kolmogorov-Smirnov statistic are added (see `psi`).

Speed (1M rows x 50 float64 columns, this 2-core machine; benchmarks/bench_psi.py): scoring in
memory takes about 0.08 s; streaming from Parquet about 0.17 s including decoding. Fitting is
dominated by the quantiles (np.partition), run one column per core in threads (about 0.6 s).
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd

from .. import schema as S
from ..errors import DataError
from ..settings import DriftSettings
from .psi import (
    as_float,
    binned_ks,
    category_counts,
    js_distance,
    merge_sparse_bins,
    merged_counts,
    noise_floor,
    numeric_counts,
    psi_from_counts,
    psi_p_value,
    quantile_edges,
)
from .report import DRIFT, FEATURE, OK, SCORE, TOO_SMALL, DriftReport, FeatureDrift
from .sources import CATEGORICAL, NUMERIC, Data, PathLike, Source, first_line, kind_of_pandas

PROFILE_FORMAT = "retrainer-drift-profile/1"


def _not_features() -> frozenset[str]:
    """The active model's columns that are never profiled: identifiers, keys, timestamp, label."""
    return frozenset((*S.IDENTIFIERS, *S.KEYS, S.TIMESTAMP, S.LABEL))


@dataclass(frozen=True)
class FeatureProfile:
    """One feature's reference bins and counts.

    Bin layout: numeric -> len(edges)+1 intervals then "missing"; categorical -> one bin per
    category (sorted), then "unseen", then "missing". `counts` follows that layout.
    """

    name: str
    kind: str
    counts: tuple[int, ...]
    edges: tuple[float, ...] = ()
    categories: tuple[str, ...] = ()
    role: str = FEATURE

    @property
    def n(self) -> int:
        return int(sum(self.counts))

    @property
    def labels(self) -> list[str]:
        if self.kind == CATEGORICAL:
            return [*self.categories, "<unseen>", "<missing>"]
        bounds = ["-inf", *(f"{e:.6g}" for e in self.edges), "+inf"]
        return [f"({a}, {b}]" if b != "+inf" else f"({a}, {b})" for a, b in zip(bounds, bounds[1:])] + ["<missing>"]

    def count(self, column) -> np.ndarray:
        """Bin counts of one column (pandas Series or pyarrow array) in this feature's layout."""
        if self.kind == NUMERIC:
            return numeric_counts(as_float(column), np.asarray(self.edges, dtype=np.float64))
        values, missing = category_counts(column)
        out = np.zeros(len(self.categories) + 2, dtype=np.int64)
        index = {c: i for i, c in enumerate(self.categories)}
        unseen = len(self.categories)
        for value, c in values.items():
            out[index.get(value, unseen)] += c
        out[-1] += missing
        return out

    def to_dict(self) -> dict:
        """JSON-safe dict (infinite edges are written as "inf"/"-inf")."""
        d: dict[str, Any] = {"name": self.name, "kind": self.kind, "role": self.role,
                             "counts": [int(c) for c in self.counts]}
        if self.kind == NUMERIC:
            d["edges"] = [e if math.isfinite(e) else ("inf" if e > 0 else "-inf") for e in self.edges]
        else:
            d["categories"] = list(self.categories)
        return d

    @classmethod
    def from_dict(cls, d: Mapping) -> "FeatureProfile":
        """The profile `to_dict` wrote; ValueError when the layout is inconsistent."""
        kind = d["kind"]
        if kind not in (NUMERIC, CATEGORICAL):
            raise ValueError(f"unknown kind {kind!r}")
        edges = tuple(float(e) for e in d.get("edges", ()))
        categories = tuple(str(c) for c in d.get("categories", ()))
        counts = tuple(int(c) for c in d["counts"])
        expected = len(edges) + 2 if kind == NUMERIC else len(categories) + 2
        if len(counts) != expected:
            raise ValueError(f"feature {d['name']!r} has {len(counts)} counts, expected {expected}")
        if any(b <= a for a, b in zip(edges, edges[1:])):
            raise ValueError(f"feature {d['name']!r} edges are not strictly increasing")
        return cls(name=str(d["name"]), kind=kind, counts=counts, edges=edges, categories=categories,
                   role=str(d.get("role", FEATURE)))


@dataclass(frozen=True)
class ReferenceProfile:
    """Reference bins and counts of every feature (and the score column), fitted once per model
    version from its training data; JSON-serialisable so monitoring reads only the current window."""

    features: tuple[FeatureProfile, ...]
    n_bins: int = 10
    score_column: str | None = "score"
    meta: dict = field(default_factory=dict)

    # ---- fitting ---------------------------------------------------------------------------

    @classmethod
    def fit(cls, frame: Data, features: list[str] | None = None, n_bins: int = 10,
            score_column: str | None = "score", meta: Mapping | None = None) -> "ReferenceProfile":
        """Profile `frame` (DataFrame, Parquet file or folder).

        features=None profiles every column except identifiers, keys, the timestamp, the label
        and the score column (and silently skips columns of unsupported dtype, e.g. datetimes).
        `score_column`, when present, is profiled too (role "score"). `meta` is free-form JSON
        (model name/version, training window...) kept with the profile.
        """
        if n_bins < 2:
            raise DataError("n_bins must be at least 2")
        src = Source(frame, "reference")
        if features is None:
            not_features = _not_features()
            names = [c for c in src.names if c not in not_features and c != score_column
                     and src.kinds[c] is not None]
        else:
            names = list(dict.fromkeys(features))
            absent = [c for c in names if c not in src.kinds]
            if absent:
                raise DataError(f"reference data lacks {len(absent)} feature(s): {', '.join(absent[:8])}")
            bad = [c for c in names if src.kinds[c] is None]
            if bad:
                raise DataError(f"feature {bad[0]!r} has a dtype drift cannot bin (numeric, string, category or bool)")
        if not names:
            raise DataError("reference data has no feature columns to profile")
        roles = {c: FEATURE for c in names}
        if score_column and score_column in src.kinds and score_column not in roles:
            if src.kinds[score_column] not in (NUMERIC, "null"):
                raise DataError(f"score column {score_column!r} is not numeric")
            roles[score_column] = SCORE
        df = src.to_frame(list(roles))
        if len(df) == 0:
            raise DataError("reference data has no rows")
        kinds = {c: kind_of_pandas(df[c].dtype) for c in roles}
        q = np.arange(1, n_bins) / n_bins

        def numeric(name: str) -> tuple[np.ndarray, np.ndarray]:
            x = as_float(df[name])
            nan = np.isnan(x)
            edges = quantile_edges(x[~nan] if nan.any() else x, q)
            return edges, numeric_counts(x, edges)

        # Quantiles (np.partition) dominate fitting and release the GIL: one thread per core.
        numeric_names = [c for c in roles if kinds[c] != CATEGORICAL]
        workers = max(1, min(len(numeric_names), os.cpu_count() or 1, 8))
        with ThreadPoolExecutor(max_workers=workers) as pool:
            fitted = dict(zip(numeric_names, pool.map(numeric, numeric_names)))
        profiles = []
        for name, role in roles.items():
            col = df[name]
            if name in fitted:
                edges, counts = fitted[name]
                profiles.append(FeatureProfile(name, NUMERIC, tuple(int(c) for c in counts),
                                               edges=tuple(float(e) for e in edges), role=role))
            else:
                values, missing = category_counts(col)
                cats = tuple(sorted(values))
                counts = [values[c] for c in cats] + [0, missing]
                profiles.append(FeatureProfile(name, CATEGORICAL, tuple(counts), categories=cats, role=role))
        return cls(tuple(profiles), n_bins=n_bins, score_column=score_column, meta=dict(meta or {}))

    # ---- serialisation ---------------------------------------------------------------------

    @property
    def n_rows(self) -> int:
        return self.features[0].n if self.features else 0

    def __getitem__(self, name: str) -> FeatureProfile:
        for f in self.features:
            if f.name == name:
                return f
        raise KeyError(name)

    def to_dict(self) -> dict:
        """JSON-safe dict (infinite edges are written as "inf"/"-inf")."""
        return {"format": PROFILE_FORMAT, "n_bins": self.n_bins, "score_column": self.score_column,
                "n_rows": self.n_rows, "meta": self.meta, "features": [f.to_dict() for f in self.features]}

    @classmethod
    def from_dict(cls, d: Mapping) -> "ReferenceProfile":
        """The profile `to_dict` wrote; DataError (one line) when it is not one."""
        try:
            if d.get("format") != PROFILE_FORMAT:
                raise ValueError(f"format is {d.get('format')!r}, expected {PROFILE_FORMAT!r}")
            feats = tuple(FeatureProfile.from_dict(f) for f in d["features"])
            return cls(feats, n_bins=int(d["n_bins"]), score_column=d.get("score_column"),
                       meta=dict(d.get("meta") or {}))
        except DataError:
            raise
        except Exception as exc:
            raise DataError(f"malformed drift profile: {first_line(exc)}") from None

    def save(self, path: PathLike) -> Path:
        """Write the profile as JSON to `path` (atomically: a temporary file, then a rename); returns the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.to_dict(), allow_nan=False))
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: PathLike) -> "ReferenceProfile":
        """The profile saved at `path`; DataError when it is missing or unreadable."""
        path = Path(path)
        try:
            d = json.loads(path.read_text())
        except FileNotFoundError:
            raise DataError(f"drift profile {path} does not exist") from None
        except Exception as exc:
            raise DataError(f"cannot read drift profile {path}: {first_line(exc)}") from None
        return cls.from_dict(d)

    # ---- scoring ---------------------------------------------------------------------------

    def count(self, current: Data) -> tuple[int, dict[str, np.ndarray]]:
        """(rows, bin counts per feature) of the current window, streamed by row group.

        Every reference feature must be present (DataError otherwise); the score column is
        counted only when the current data has it.
        """
        src = Source(current, "current")
        use = [f for f in self.features if f.role != SCORE or f.name in src.kinds]
        src.check({f.name: f.kind for f in use})
        counts = {f.name: np.zeros(len(f.counts), dtype=np.int64) for f in use}
        n = 0
        for rows, batch in src.batches([f.name for f in use]):
            n += rows
            for f in use:
                counts[f.name] += f.count(batch[f.name])
        if n == 0:
            raise DataError("current data has no rows")
        return n, counts

    def score(self, current: Data, settings: DriftSettings | None = None) -> DriftReport:
        """PSI (p-value, noise and family-wise floors, status, optional KS/JS) of every feature of
        `current` (DataFrame, Parquet file or folder of Parquet files) against this reference.
        The family-wise floor is taken over the F features compared (the score column is judged
        at the same per-feature level alpha/F but is not one of the F)."""
        settings = settings or DriftSettings()
        _, counts = self.count(current)
        family = sum(f.role == FEATURE and f.name in counts for f in self.features)
        results = [compare(f, counts[f.name], settings, family) for f in self.features if f.name in counts]
        return DriftReport(results, threshold=settings.psi_threshold, min_window=settings.min_window,
                           noise_quantile=settings.noise_quantile,
                           features_required=settings.features_required, alpha=settings.alpha,
                           meta=dict(self.meta))


def compare(f: FeatureProfile, cur_counts: np.ndarray, settings: DriftSettings, family: int = 1) -> FeatureDrift:
    """The drift result of one feature: its reference counts `f` against the current window's
    `cur_counts` (same layout), judged by `settings` as one of `family` features compared.

    Sparse bins (expected current count below 5) are merged first (`psi.merge_sparse_bins`);
    PSI, the p-value and both floors are computed on the merged bins. Status "drift" needs
    PSI > max(psi_threshold, family-wise floor) on a window of at least min_window rows."""
    ref = np.asarray(f.counts, dtype=np.float64)
    cur = np.asarray(cur_counts, dtype=np.float64)
    n_ref, n_cur = int(ref.sum()), int(cur.sum())
    groups = merge_sparse_bins(ref, cur, ordered=f.kind == NUMERIC, n_categories=len(f.categories))
    ref_m, cur_m = merged_counts(ref, groups), merged_counts(cur, groups)
    psi = psi_from_counts(ref_m, cur_m) if n_ref and n_cur else 0.0
    used = len(groups)
    noise = noise_floor(used, n_ref, n_cur, settings.noise_quantile) if n_ref and n_cur else 0.0
    family = max(int(family), 1)
    fw = noise_floor(used, n_ref, n_cur, 1.0 - settings.alpha / family) if n_ref and n_cur else 0.0
    p_value = psi_p_value(psi, used, n_ref, n_cur) if n_ref and n_cur else 1.0
    if min(n_ref, n_cur) < settings.min_window:
        status = TOO_SMALL
    elif psi > max(settings.psi_threshold, fw):
        status = DRIFT
    else:
        status = OK
    ks = js = None
    if settings.extra_stats:
        js = js_distance(ref, cur)
        if f.kind == NUMERIC:
            ks = binned_ks(ref, cur)
    return FeatureDrift(feature=f.name, kind=f.kind, role=f.role, psi=psi, bins=used, n_ref=n_ref,
                        n_cur=n_cur, noise_floor=noise, status=status, ks=ks, js=js,
                        labels=tuple(f.labels), ref_counts=tuple(int(c) for c in f.counts),
                        cur_counts=tuple(int(c) for c in cur_counts), p_value=p_value,
                        family_floor=fw, family=family, alpha=settings.alpha,
                        merged=tuple(tuple(g) for g in groups))


def fit_reference_profile(model, train: pd.DataFrame, validation: pd.DataFrame, settings,
                          meta: dict | None = None) -> ReferenceProfile:
    """Profile of a new model version, binned with settings.drift.n_bins (`settings` is a
    retrainer Settings):
    - the features are profiled on the training AND validation rows (the data the version was
      built from);
    - the model's predicted score (the `score` column) is profiled on the VALIDATION rows only:
      on its own training rows a model scores more confidently than on data it has not seen, so
      a training-row score profile would make every live window look drifted.
    The two parts therefore have different row counts (`FeatureProfile.n`); every comparison
    uses each feature's own reference count. The retrain flow stores the profile with the
    version's artifacts; monitoring reads it from there and only has to count the current window.
    """
    if validation is None or len(validation) == 0:
        raise DataError("no validation rows to profile the model's score on")
    frame = pd.concat([train, validation], ignore_index=True)
    monitored = list(S.MONITORED_FEATURES)  # the spec's `monitored` features (readmission: all)
    features = ReferenceProfile.fit(frame[monitored], features=monitored,
                                    n_bins=settings.drift.n_bins, score_column=None)
    scores = ReferenceProfile.fit(pd.DataFrame({"score": np.asarray(model.predict(validation), dtype=float)}),
                                  features=["score"], n_bins=settings.drift.n_bins, score_column=None)
    m = dict(meta or {})
    m.setdefault("score_profiled_on", "validation")
    m.setdefault("score_rows", int(len(validation)))
    m.setdefault("feature_rows", int(len(frame)))
    score = dataclasses.replace(scores.features[0], role=SCORE)
    return ReferenceProfile((*features.features, score), n_bins=settings.drift.n_bins,
                            score_column="score", meta=m)
