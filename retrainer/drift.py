"""Data drift: Population Stability Index (PSI) of every feature against a stored reference profile.

How it works
------------
A `ReferenceProfile` is fitted once per model version from its training data and saved as JSON
(`to_dict`/`from_dict`, `save`/`load`). Monitoring then reads only the current window, which may
be a DataFrame, a Parquet file or a folder of Parquet files; files are streamed one row group at a
time and only bin counts are kept, so memory stays flat however many rows the window has.

Binning (the project's PSI definition)
- Numeric features: edges are the reference quantiles at k/n_bins, k = 1..n_bins-1
  (`numpy.quantile`, default linear method, missing values ignored), duplicate edges merged.
  Bins are right-closed, (-inf, e1], (e1, e2], ..., (ek, +inf): a value equal to an edge falls
  in the lower bin, as `numpy.searchsorted(edges, x, side="left")` assigns it.
- Categorical features (string, category, bool or object dtype): one bin per reference category
  (compared as `str(value)`, so True -> "True") plus one bin for categories never seen in the
  reference.
- Missing values (NaN/None/NA) form their own, last, bin on both sides.
- Shares are count / rows; a share of 0 becomes 1e-4 (nothing is renormalised) and
  PSI = sum((cur - ref) * ln(cur / ref)).

Every result carries n_ref, n_cur, the number of bins B actually used (bins holding at least one
row on either side) and a noise floor: under no drift PSI * n*m/(n+m) is approximately
chi-square(B-1), so the value sampling noise alone exceeds with probability 1 - q is
chi2.ppf(q, B-1) * (n+m)/(n*m) (q = DriftSettings.noise_quantile, 0.95).
Status: "too_small" when either side has fewer than DriftSettings.min_window rows (too small to
tell: never fires), else "drift" when psi > psi_threshold, else "ok".

The model's predicted score column ("score" by default) is profiled like a numeric feature and
compared when the current data has it too (role "score"; it is listed, but does not count towards
`features_required`). With `DriftSettings.extra_stats`, Jensen-Shannon distance (scipy, base 2,
over the same bins, unfloored) and a binned Kolmogorov-Smirnov statistic (the largest gap between
the two cumulative distributions at the reference edges, non-missing values only; the raw
reference values are not kept, so this is a lower bound of the exact two-sample KS) are added.

Speed (1M rows x 50 float64 columns, this 2-core machine; benchmarks/bench_psi.py): a numeric
column is counted with one vectorised compare-and-count pass per edge (cumulative counts
#(x <= e_k), then differences), so scoring in memory takes about 0.08 s (`searchsorted` +
`bincount` measured about ten times slower). Streaming from Parquet reads the next row group in a
background thread while the current one is counted (about 0.17 s including decoding). Fitting is
dominated by the quantiles (np.partition), run one column per core in threads (about 0.6 s).

Plain Python: this module must never import prefect.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

import numpy as np
import pandas as pd

from . import schema as S
from .errors import DataError
from .settings import DriftSettings

__all__ = [
    "FLOOR", "FeatureProfile", "ReferenceProfile", "FeatureDrift", "DriftReport",
    "drift_report", "format_report", "psi_from_counts",
]

FLOOR = 1e-4
PROFILE_FORMAT = "retrainer-drift-profile/1"
NUMERIC, CATEGORICAL = "numeric", "categorical"
FEATURE, SCORE = "feature", "score"
OK, DRIFT, TOO_SMALL = "ok", "drift", "too_small"
_CHUNK = 1 << 20  # rows per counting pass over an in-memory column (bounds the temporaries)
_NOT_FEATURES = frozenset((*S.IDENTIFIERS, *S.KEYS, S.TIMESTAMP, S.LABEL))

PathLike = str | Path
Data = pd.DataFrame | PathLike


# --------------------------------------------------------------------------------------------
# PSI arithmetic


def psi_from_counts(ref_counts, cur_counts) -> float:
    """PSI of two count vectors over the same bins: shares, 0 -> 1e-4, no renormalisation."""
    ref = np.asarray(ref_counts, dtype=np.float64)
    cur = np.asarray(cur_counts, dtype=np.float64)
    r = _floored(ref / ref.sum())
    c = _floored(cur / cur.sum())
    return float(np.sum((c - r) * np.log(c / r)))


def _floored(shares: np.ndarray) -> np.ndarray:
    return np.where(shares == 0, FLOOR, shares)


def _noise_floor(bins_used: int, n_ref: int, n_cur: int, quantile: float) -> float:
    if bins_used <= 1:
        return 0.0  # one bin: both distributions are that bin, PSI is exactly 0
    from scipy.stats import chi2

    return float(chi2.ppf(quantile, bins_used - 1) * (n_ref + n_cur) / (n_ref * n_cur))


# --------------------------------------------------------------------------------------------
# Column access: pandas Series and pyarrow (Chunked)Arrays look the same from here on


def _kind_of_pandas(dtype) -> str | None:
    if isinstance(dtype, pd.CategoricalDtype) or pd.api.types.is_bool_dtype(dtype):
        return CATEGORICAL
    if pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_complex_dtype(dtype):
        return NUMERIC
    if pd.api.types.is_string_dtype(dtype) or dtype == object:
        return CATEGORICAL
    return None


def _kind_of_arrow(typ) -> str | None:
    import pyarrow as pa

    if pa.types.is_null(typ):
        return "null"  # all missing: fits either kind
    if pa.types.is_boolean(typ) or pa.types.is_dictionary(typ) or pa.types.is_string(typ) \
            or pa.types.is_large_string(typ) or getattr(pa.types, "is_string_view", lambda t: False)(typ):
        return CATEGORICAL
    if pa.types.is_integer(typ) or pa.types.is_floating(typ) or pa.types.is_decimal(typ):
        return NUMERIC
    return None


def _as_float(col) -> np.ndarray:
    """A contiguous float64 array with NaN for missing values."""
    if isinstance(col, pd.Series):
        dt = col.dtype
        if dt == np.float64:
            arr = col.to_numpy()
        elif isinstance(dt, np.dtype):
            arr = col.to_numpy().astype(np.float64)
        else:  # nullable extension dtypes (Int64, Float64, pyarrow-backed)
            arr = col.to_numpy(dtype=np.float64, na_value=np.nan)
    else:
        import pyarrow as pa

        if pa.types.is_null(col.type):
            return np.full(len(col), np.nan)
        arr = col.to_numpy(zero_copy_only=False)
        if arr.dtype != np.float64:
            arr = arr.astype(np.float64)
    return np.ascontiguousarray(arr)


def _category_counts(col) -> tuple[dict[str, int], int]:
    """(non-missing value -> count, missing count), values compared as str(value)."""
    if isinstance(col, pd.Series):
        missing = int(col.isna().sum())
        vc = col.value_counts(dropna=True, sort=False)
        return _merge_str_keys(zip(vc.index.tolist(), vc.to_numpy().tolist())), missing
    import pyarrow as pa
    import pyarrow.compute as pc

    if pa.types.is_null(col.type):
        return {}, len(col)
    if pa.types.is_dictionary(col.type):
        col = col.cast(col.type.value_type)
    vc = pc.value_counts(col)
    keys = vc.field("values").to_pylist()
    counts = vc.field("counts").to_pylist()
    return _merge_str_keys((k, c) for k, c in zip(keys, counts) if k is not None), col.null_count


def _merge_str_keys(pairs: Iterable[tuple[Any, int]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for k, c in pairs:
        if c:
            key = str(k)
            out[key] = out.get(key, 0) + int(c)
    return out


def _numeric_counts(x: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Counts over len(edges)+1 right-closed interval bins, then the missing bin.

    Cumulative counts #(x <= e_k) in one vectorised pass per edge, then differences: with
    strictly increasing edges this is exactly searchsorted(edges, x, "left") + bincount, about
    ten times faster. NaN compares false everywhere and is counted on its own.
    """
    k = len(edges)
    out = np.zeros(k + 2, dtype=np.int64)
    cum = np.zeros(k + 2, dtype=np.int64)
    for start in range(0, len(x), _CHUNK):
        xc = x[start:start + _CHUNK]
        n_nan = int(np.count_nonzero(np.isnan(xc)))
        for i in range(k):
            cum[i + 1] = np.count_nonzero(xc <= edges[i])
        cum[k + 1] = len(xc) - n_nan
        out[:k + 1] += np.diff(cum)
        out[k + 1] += n_nan
    return out


# --------------------------------------------------------------------------------------------
# Data sources: a DataFrame, a Parquet file or a folder of Parquet files


class _Source:
    """Column names, their kinds, and an iterator of column batches (one per Parquet row group)."""

    def __init__(self, data: Data, what: str):
        self.what = what
        self.frame: pd.DataFrame | None = None
        self.files: list[Path] = []
        if isinstance(data, pd.DataFrame):
            if any(not isinstance(c, str) for c in data.columns):
                data = data.rename(columns=str)
            if data.columns.has_duplicates:
                raise DataError(f"{what} data has duplicate column names")
            self.frame = data
            self.kinds = {c: _kind_of_pandas(t) for c, t in data.dtypes.items()}
        elif isinstance(data, (str, Path)):
            self.files = _parquet_files(Path(data), what)
            self.kinds = {f.name: _kind_of_arrow(f.type) for f in self._schema(self.files[0])}
        else:
            raise DataError(f"{what} data must be a DataFrame or a Parquet path, not {type(data).__name__}")

    def _schema(self, path: Path):
        try:
            import pyarrow.parquet as pq

            return pq.read_schema(path)
        except Exception as exc:
            raise DataError(f"cannot read {self.what} Parquet file {path}: {_first_line(exc)}") from None

    @property
    def names(self) -> list[str]:
        return list(self.kinds)

    def check(self, columns: Mapping[str, str]) -> None:
        """DataError unless every file has every column with a compatible kind."""
        schemas = [(None, self.kinds)] if self.frame is not None else [
            (f, {x.name: _kind_of_arrow(x.type) for x in self._schema(f)}) for f in self.files]
        for path, kinds in schemas:
            where = f" ({path})" if path is not None and len(self.files) > 1 else ""
            missing = [c for c in columns if c not in kinds]
            if missing:
                shown = ", ".join(missing[:8]) + (f" and {len(missing) - 8} more" if len(missing) > 8 else "")
                raise DataError(f"{self.what} data{where} lacks {len(missing)} feature(s): {shown}")
            for c, kind in columns.items():
                if kinds[c] not in (kind, "null"):
                    got = kinds[c] or "unsupported"
                    raise DataError(f"feature {c!r} is {kind} in the reference but {got} in the {self.what} data{where}")

    def batches(self, columns: list[str]) -> Iterator[tuple[int, Mapping[str, Any]]]:
        if self.frame is not None:
            yield len(self.frame), {c: self.frame[c] for c in columns}
            return
        import pyarrow.parquet as pq
        from concurrent.futures import ThreadPoolExecutor

        def read(path: Path, pf, i: int):
            try:
                return path, pf.read_row_group(i, columns=columns, use_threads=True)
            except Exception as exc:
                raise DataError(f"cannot read {self.what} Parquet file {path}: {_first_line(exc)}") from None

        def groups():
            for path in self.files:
                try:
                    pf = pq.ParquetFile(path)
                except Exception as exc:
                    raise DataError(f"cannot read {self.what} Parquet file {path}: {_first_line(exc)}") from None
                for i in range(pf.num_row_groups):
                    yield path, pf, i

        # Read row group i+1 in the background while row group i is counted: at most two row
        # groups in memory, and decoding (in Arrow, without the GIL) overlaps the numpy counting.
        with ThreadPoolExecutor(max_workers=1) as pool:
            pending = None
            for args in groups():
                nxt = pool.submit(read, *args)
                if pending is not None:
                    _, table = pending.result()
                    yield table.num_rows, {c: table.column(c) for c in columns}
                pending = nxt
            if pending is not None:
                _, table = pending.result()
                yield table.num_rows, {c: table.column(c) for c in columns}

    def to_frame(self, columns: list[str]) -> pd.DataFrame:
        if self.frame is not None:
            return self.frame[columns]
        import pyarrow as pa

        tables = []
        for path in self.files:
            try:
                import pyarrow.parquet as pq

                tables.append(pq.read_table(path, columns=columns))
            except Exception as exc:
                raise DataError(f"cannot read {self.what} Parquet file {path}: {_first_line(exc)}") from None
        try:
            table = pa.concat_tables(tables, promote_options="permissive") if len(tables) > 1 else tables[0]
        except Exception as exc:
            raise DataError(f"{self.what} Parquet files do not share a schema: {_first_line(exc)}") from None
        return table.to_pandas()


def _parquet_files(path: Path, what: str) -> list[Path]:
    if path.is_dir():
        files = sorted(p for p in path.rglob("*.parquet") if p.is_file())
        if not files:
            raise DataError(f"{what} folder {path} has no .parquet files")
        return files
    if path.is_file():
        return [path]
    raise DataError(f"{what} data {path} does not exist")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


# --------------------------------------------------------------------------------------------
# Reference profile


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
            return _numeric_counts(_as_float(column), np.asarray(self.edges, dtype=np.float64))
        values, missing = _category_counts(column)
        out = np.zeros(len(self.categories) + 2, dtype=np.int64)
        index = {c: i for i, c in enumerate(self.categories)}
        unseen = len(self.categories)
        for value, c in values.items():
            out[index.get(value, unseen)] += c
        out[-1] += missing
        return out

    def to_dict(self) -> dict:
        d: dict[str, Any] = {"name": self.name, "kind": self.kind, "role": self.role,
                             "counts": [int(c) for c in self.counts]}
        if self.kind == NUMERIC:
            d["edges"] = [e if math.isfinite(e) else ("inf" if e > 0 else "-inf") for e in self.edges]
        else:
            d["categories"] = list(self.categories)
        return d

    @classmethod
    def from_dict(cls, d: Mapping) -> "FeatureProfile":
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
        src = _Source(frame, "reference")
        if features is None:
            names = [c for c in src.names if c not in _NOT_FEATURES and c != score_column
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
        kinds = {c: _kind_of_pandas(df[c].dtype) for c in roles}
        q = np.arange(1, n_bins) / n_bins

        def numeric(name: str) -> tuple[np.ndarray, np.ndarray]:
            x = _as_float(df[name])
            nan = np.isnan(x)
            edges = _quantile_edges(x[~nan] if nan.any() else x, q)
            return edges, _numeric_counts(x, edges)

        # Quantiles (np.partition) dominate fitting and release the GIL: one thread per core.
        numeric_names = [c for c in roles if kinds[c] != CATEGORICAL]
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=max(1, min(len(numeric_names), os.cpu_count() or 1, 8))) as pool:
            fitted = dict(zip(numeric_names, pool.map(numeric, numeric_names)))
        profiles = []
        for name, role in roles.items():
            col = df[name]
            if name in fitted:
                edges, counts = fitted[name]
                profiles.append(FeatureProfile(name, NUMERIC, tuple(int(c) for c in counts),
                                               edges=tuple(float(e) for e in edges), role=role))
            else:
                values, missing = _category_counts(col)
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
        try:
            if d.get("format") != PROFILE_FORMAT:
                raise ValueError(f"format is {d.get('format')!r}, expected {PROFILE_FORMAT!r}")
            feats = tuple(FeatureProfile.from_dict(f) for f in d["features"])
            return cls(feats, n_bins=int(d["n_bins"]), score_column=d.get("score_column"),
                       meta=dict(d.get("meta") or {}))
        except DataError:
            raise
        except Exception as exc:
            raise DataError(f"malformed drift profile: {_first_line(exc)}") from None

    def save(self, path: PathLike) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.to_dict(), allow_nan=False))
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: PathLike) -> "ReferenceProfile":
        path = Path(path)
        try:
            d = json.loads(path.read_text())
        except FileNotFoundError:
            raise DataError(f"drift profile {path} does not exist") from None
        except Exception as exc:
            raise DataError(f"cannot read drift profile {path}: {_first_line(exc)}") from None
        return cls.from_dict(d)

    # ---- scoring ---------------------------------------------------------------------------

    def count(self, current: Data) -> tuple[int, dict[str, np.ndarray]]:
        """(rows, bin counts per feature) of the current window, streamed by row group.

        Every reference feature must be present (DataError otherwise); the score column is
        counted only when the current data has it.
        """
        src = _Source(current, "current")
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
        """PSI (and noise floor, status, optional KS/JS) of every feature of `current`
        (DataFrame, Parquet file or folder of Parquet files) against this reference."""
        settings = settings or DriftSettings()
        _, counts = self.count(current)
        results = [_compare(f, counts[f.name], settings) for f in self.features if f.name in counts]
        return DriftReport(results, threshold=settings.psi_threshold, min_window=settings.min_window,
                           noise_quantile=settings.noise_quantile,
                           features_required=settings.features_required, meta=dict(self.meta))


def _quantile_edges(values: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Merged reference quantiles. numpy's linear interpolation between two equal infinite
    values gives NaN; there the (equal) lower order statistic is used instead."""
    if not len(values):
        return np.empty(0)
    with np.errstate(invalid="ignore"):
        edges = np.quantile(values, q)
    if np.isnan(edges).any():
        edges = np.where(np.isnan(edges), np.quantile(values, q, method="lower"), edges)
    return np.unique(edges)


def _compare(f: FeatureProfile, cur_counts: np.ndarray, settings: DriftSettings) -> "FeatureDrift":
    ref = np.asarray(f.counts, dtype=np.float64)
    cur = cur_counts.astype(np.float64)
    n_ref, n_cur = int(ref.sum()), int(cur.sum())
    psi = psi_from_counts(ref, cur)
    used = int(np.count_nonzero((ref + cur) > 0))
    noise = _noise_floor(used, n_ref, n_cur, settings.noise_quantile)
    status = TOO_SMALL if min(n_ref, n_cur) < settings.min_window else DRIFT if psi > settings.psi_threshold else OK
    ks = js = None
    if settings.extra_stats:
        from scipy.spatial.distance import jensenshannon

        js = float(jensenshannon(ref / n_ref, cur / n_cur, base=2))
        if f.kind == NUMERIC and ref[:-1].sum() > 0 and cur[:-1].sum() > 0:
            cr = np.cumsum(ref[:-1]) / ref[:-1].sum()
            cc = np.cumsum(cur[:-1]) / cur[:-1].sum()
            ks = float(np.max(np.abs(cr - cc)))
    return FeatureDrift(feature=f.name, kind=f.kind, role=f.role, psi=psi, bins=used, n_ref=n_ref,
                        n_cur=n_cur, noise_floor=noise, status=status, ks=ks, js=js,
                        labels=tuple(f.labels), ref_counts=tuple(int(c) for c in f.counts),
                        cur_counts=tuple(int(c) for c in cur_counts))


# --------------------------------------------------------------------------------------------
# Report


@dataclass(frozen=True)
class FeatureDrift:
    """One feature's drift result. `bins` is the number of bins used (non-empty on either side)."""

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

    def to_dict(self, detail: bool = False) -> dict:
        d = {"feature": self.feature, "kind": self.kind, "role": self.role, "psi": round(self.psi, 6),
             "bins": self.bins, "n_ref": self.n_ref, "n_cur": self.n_cur,
             "noise_floor": round(self.noise_floor, 6), "status": self.status}
        if self.ks is not None:
            d["ks"] = round(self.ks, 6)
        if self.js is not None:
            d["js"] = round(self.js, 6)
        if detail:
            d["bin_detail"] = [{"bin": b, "ref": r, "cur": c}
                               for b, r, c in zip(self.labels, self.ref_counts, self.cur_counts)]
        return d


@dataclass
class DriftReport:
    """Per-feature PSI results with the thresholds they were judged by."""

    results: list[FeatureDrift]
    threshold: float = 0.20
    min_window: int = 500
    noise_quantile: float = 0.95
    features_required: int = 1
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
        """Results with psi > threshold on a window of at least min_window rows (defaults: the
        report's own), highest PSI first; includes the score column when it drifted."""
        t = self.threshold if threshold is None else threshold
        w = self.min_window if min_window is None else min_window
        hits = [r for r in self.results if r.psi > t and min(r.n_ref, r.n_cur) >= w]
        return sorted(hits, key=lambda r: r.psi, reverse=True)

    @property
    def drift_detected(self) -> bool:
        """True when at least `features_required` features (the score column aside) drifted."""
        return sum(r.role == FEATURE for r in self.drifted()) >= self.features_required

    def top(self, k: int = 5) -> list[FeatureDrift]:
        """The k results with the highest PSI."""
        return sorted(self.results, key=lambda r: r.psi, reverse=True)[:k]

    def to_records(self, detail: bool = False) -> list[dict]:
        return [r.to_dict(detail) for r in self.results]

    def to_json(self, detail: bool = False, indent: int | None = None) -> str:
        """JSON list, one object per feature: feature, kind, role, psi, bins, n_ref, n_cur,
        noise_floor, status (and ks/js when computed; per-bin counts with detail=True)."""
        return json.dumps(self.to_records(detail), indent=indent, allow_nan=False)

    def summary(self) -> str:
        d = self.drifted()
        feats = sum(r.role == FEATURE for r in self.results)
        head = (f"{sum(r.role == FEATURE for r in d)} of {feats} features drifted "
                f"(PSI > {self.threshold:g}; current {self.n_cur:,} rows, reference {self.n_ref:,} rows)")
        if any(r.status == TOO_SMALL for r in self.results):
            head += f"; window below {self.min_window:,} rows: too small to tell"
        if any(r.role == SCORE and r in d for r in self.results):
            head += "; the predicted score drifted"
        return head

    def to_markdown(self, k: int | None = None) -> str:
        """Markdown table (highest PSI first; k rows at most) for a Prefect artifact."""
        rows = self.top(k if k is not None else len(self.results))
        lines = [f"**Drift:** {self.summary()}.", "",
                 f"Noise floor: PSI that sampling noise alone exceeds {1 - self.noise_quantile:.0%} of the time.", "",
                 "| feature | PSI | noise floor | bins | n_ref | n_cur | status |",
                 "|---|---:|---:|---:|---:|---:|---|"]
        for r in rows:
            name = f"{r.feature} (score)" if r.role == SCORE else r.feature
            status = f"**{r.status}**" if r.status == DRIFT else r.status.replace("_", " ")
            lines.append(f"| {name} | {r.psi:.4f} | {r.noise_floor:.4f} | {r.bins} | {r.n_ref:,} | "
                         f"{r.n_cur:,} | {status} |")
        return "\n".join(lines) + "\n"


def format_report(report: DriftReport, k: int | None = None) -> str:
    """Human-readable text for the CLI: one summary line, then a table, highest PSI first."""
    rows = report.top(k if k is not None else len(report))
    extra = any(r.ks is not None or r.js is not None for r in rows)
    width = max([len("feature")] + [len(r.feature) + (8 if r.role == SCORE else 0) for r in rows])
    head = f"{'feature':<{width}}  {'PSI':>8}  {'noise':>8}  {'bins':>4}  status"
    if extra:
        head += "     KS      JS"
    lines = [report.summary(), head]
    for r in rows:
        name = f"{r.feature} (score)" if r.role == SCORE else r.feature
        line = f"{name:<{width}}  {r.psi:8.4f}  {r.noise_floor:8.4f}  {r.bins:4d}  {r.status.replace('_', ' '):<9}"
        if extra:
            line += f"  {_fmt(r.ks)}  {_fmt(r.js)}"
        lines.append(line.rstrip())
    return "\n".join(lines)


def _fmt(x: float | None) -> str:
    return f"{x:6.4f}" if x is not None else "     -"


# --------------------------------------------------------------------------------------------
# Convenience


def drift_report(reference: "ReferenceProfile | Data", current: Data,
                 settings: DriftSettings | None = None, features: list[str] | None = None) -> DriftReport:
    """Drift of `current` against `reference`.

    reference: a ReferenceProfile, a saved profile (.json), or data to fit one from (DataFrame,
    Parquet file or folder, binned with settings.n_bins). current: DataFrame, Parquet file or
    folder. Problems with either raise DataError with one clear line.
    """
    settings = settings or DriftSettings()
    if isinstance(reference, ReferenceProfile):
        profile = reference
    elif isinstance(reference, (str, Path)) and Path(reference).suffix.lower() == ".json":
        profile = ReferenceProfile.load(reference)
    else:
        profile = ReferenceProfile.fit(reference, features=features, n_bins=settings.n_bins)
    return profile.score(current, settings)
