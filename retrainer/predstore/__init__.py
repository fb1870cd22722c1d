"""De-identified prediction store for monitoring (drift, canary, triggers, verdicts).

One store, two locations (`location.py`): a local directory (`<home>`) or an S3 prefix
(`s3://bucket/prefix`, the `sagemaker` backend). Layout under the root:

    predictions/date=YYYY-MM-DD/part-<uuid>.parquet     one file per append call and prediction day
    predictions/date=YYYY-MM-DD/compact-<uuid>.parquet  a day's files merged by `compact`
    labels/part-<uuid>.parquet                          one file per ingested label file

Every row goes through `deid.deidentify` before it is written, and is then cast to a fixed
Parquet schema (`prediction_schema()`, `label_schema()`): a column that is not in the schema is
never written, so raw identifiers cannot reach disk or S3 even if a caller adds one. Readers only
ever see complete files: local files are written under a hidden temporary name and renamed with
`os.replace`; an S3 object is uploaded in one piece, visible whole or not at all. Each call
writes its own uniquely named file, so concurrent appends from several threads or processes need
no lock.

Capture writes small files (one per flush of the endpoint's capture writer); `compact` merges a
day's files into few large ones. A compact file lists the files it replaces in its footer and is
written before they are deleted, so readers skip replaced files and never count a row twice.

Locally the store holds PHI-adjacent data, so whatever the process umask, its files are created
0600 and its directories 0700 (see `location.LocalLocation`, which also sweeps the temp files of
killed writers). On S3, access is the bucket policy's and the role's (deployments/iam-policy.json).

Time windows are half-open, `start <= ts < end`, in UTC; a `date` means midnight UTC of that day,
a naive datetime is taken as UTC.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from datetime import date, datetime
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from .. import deid
from .. import schema as S
from ..drift.sources import BatchStream
from ..errors import ConfigError, DataError
from .location import STALE_TEMP_SECONDS, LocalLocation, Location, location_for, one_line, to_parquet
from .location import S3Location as S3Location  # re-exported

log = logging.getLogger(__name__)

PREDICTIONS = "predictions"
LABELS = "labels"
TS = "ts"
SCORE = "score"
VERSION = "version"
VARIANT = "variant"
LATENCY = "latency_ms"
ERROR = "error"
INGESTED_AT = "ingested_at"
TARGETED = "targeted"  # the caller chose the variant by header: left out of variant_stats
SHADOW = "shadow"  # scored off the response path by a variant that did not answer: not traffic
REQUEST_ID = "request_id"  # the endpoint's id of the request; with ROW, joins one row's scores
ROW = "row"  # the row's index within its request
SCORE_PRODUCTION, SCORE_CANDIDATE = "score_production", "score_candidate"
VERSION_PRODUCTION, VERSION_CANDIDATE = "version_production", "version_candidate"
PAIRED_COLUMNS: tuple[str, ...] = (REQUEST_ID, ROW, TS, deid.ADMISSION_PSEUDONYM, deid.PATIENT_PSEUDONYM,
                                   SCORE_PRODUCTION, SCORE_CANDIDATE, VERSION_PRODUCTION, VERSION_CANDIDATE)

COMPACT_PREFIX = "compact"  # compact-<uuid>.parquet: written by `compact`, replacing the files in its footer
REPLACES_KEY = "retrainer.replaces"  # footer key: JSON list of the file names a compact file replaced
FINGERPRINT_KEY = "retrainer.key_fingerprint"  # footer key: the pseudonym key's fingerprint

_ARROW_KIND = {"int": pa.int64(), "float": pa.float64(), "string": pa.string(), "bool": pa.bool_()}
_UTC_US = pa.timestamp("us", tz="UTC")

_SCHEMAS: dict[int, tuple] = {}


def _schemas() -> tuple[pa.Schema, pa.Schema]:
    """The active model's (prediction schema, label schema): the shared columns, the model's
    features, the de-identified coarse columns; labels keyed by the row pseudonym. The store's
    pseudonym columns keep their names for every model (`admission_pseudonym` holds the row id's,
    `patient_pseudonym` the entity's). One pair per contract, built once."""
    c = S.contract()
    got = _SCHEMAS.get(id(c))
    if got is not None and got[0] is c:
        return got[1], got[2]
    label_type = pa.int64() if c.spec.label.type == "int" else pa.float64()
    prediction = pa.schema(
        [
            pa.field(TS, _UTC_US, nullable=False),
            pa.field(VARIANT, pa.string(), nullable=False),
            pa.field(VERSION, pa.string(), nullable=False),
            pa.field(SCORE, pa.float64()),
            pa.field(LATENCY, pa.float64()),
            pa.field(ERROR, pa.bool_(), nullable=False),
            pa.field(TARGETED, pa.bool_()),  # null (older files) = False
            pa.field(SHADOW, pa.bool_()),  # null (older files) = False
            pa.field(REQUEST_ID, pa.string()),  # null in older files: such rows never pair
            pa.field(ROW, pa.int64()),
            pa.field(deid.ADMISSION_PSEUDONYM, pa.string()),
            pa.field(deid.PATIENT_PSEUDONYM, pa.string()),
            *(pa.field(f, _ARROW_KIND[c.COLUMN_TYPES[f]]) for f in c.FEATURES),
            pa.field(deid.AGE_90_PLUS, pa.bool_()),
            pa.field(deid.ZIP3, pa.string()),
            pa.field(deid.ADMISSION_YEAR, pa.int64()),
        ]
    )
    labels = pa.schema(
        [
            pa.field(deid.ADMISSION_PSEUDONYM, pa.string(), nullable=False),
            pa.field(deid.PATIENT_PSEUDONYM, pa.string()),
            pa.field(c.LABEL, label_type, nullable=False),
            pa.field(INGESTED_AT, _UTC_US, nullable=False),
        ]
    )
    _SCHEMAS[id(c)] = (c, prediction, labels)
    return prediction, labels


def prediction_schema() -> pa.Schema:
    return _schemas()[0]


def label_schema() -> pa.Schema:
    return _schemas()[1]


def prediction_columns() -> tuple[str, ...]:
    return tuple(prediction_schema().names)


def labelled_columns() -> tuple[str, ...]:
    return prediction_columns() + (S.LABEL,)


def __getattr__(name: str):  # the old constants, for the active model
    getters = {"PREDICTION_SCHEMA": prediction_schema, "LABEL_SCHEMA": label_schema,
               "PREDICTION_COLUMNS": prediction_columns, "LABELLED_COLUMNS": labelled_columns}
    if name in getters:
        return getters[name]()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


TimeLike = date | datetime | str | pd.Timestamp | None


@runtime_checkable
class PredictionStoreProtocol(Protocol):
    """What the flows, the serving endpoint and the canary need from a prediction store."""

    def append(self, features: pd.DataFrame, scores, *, version: str, variant: str, latency_ms,
               ts=None, pseudonymizer: deid.Pseudonymizer, error=None, shadow=None, request_id=None,
               row=None) -> int: ...

    def write_records(self, records: pd.DataFrame) -> int: ...

    def read(self, start: TimeLike = None, end: TimeLike = None,
             columns: Iterable[str] | None = None) -> pd.DataFrame: ...

    def ingest_labels(self, path: Path | str, pseudonymizer: deid.Pseudonymizer, *,
                      unknown: str = "refuse") -> int: ...

    def read_labels(self) -> pd.DataFrame: ...

    def labelled(self, start: TimeLike = None, end: TimeLike = None, *,
                 include_targeted: bool = False, include_shadow: bool = False) -> pd.DataFrame: ...

    def variant_stats(self, start: TimeLike = None, end: TimeLike = None) -> dict[str, dict]: ...

    def paired(self, start: TimeLike = None, end: TimeLike = None, *, production: str = "blue",
               candidate: str = "green", matured_before: TimeLike = None,
               labelled: bool = True) -> pd.DataFrame: ...

    def shadow_stats(self, start: TimeLike = None, end: TimeLike = None, *,
                     production: str = "blue") -> dict[str, dict]: ...

    def count_labels_since(self, ts: TimeLike) -> int: ...


# --------------------------------------------------------------------------------------------------
# Building records (backend independent)

def _utc(value: TimeLike) -> pd.Timestamp | None:
    if value is None:
        return None
    stamp = pd.Timestamp(value)
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def _broadcast(value, n: int, name: str) -> np.ndarray:
    arr = np.asarray(value, dtype=float)
    if arr.ndim == 0:
        return np.full(n, float(arr))
    arr = arr.reshape(-1)
    if len(arr) != n:
        raise ValueError(f"{name} has {len(arr)} values for {n} rows")
    return arr


def build_records(features: pd.DataFrame, scores, *, version: str, variant: str, latency_ms,
                  ts=None, pseudonymizer: deid.Pseudonymizer, error=None, shadow=None, request_id=None,
                  row=None) -> pd.DataFrame:
    """De-identify `features` and add the prediction columns; the frame `write_records` stores.

    `scores`: one probability per row (NaN allowed for errored rows). `latency_ms`, `error`,
    `shadow`: a scalar for all rows or one value per row. `ts`: prediction time(s); None means now
    (UTC). `request_id` (a string, or one per row) and `row` (one index per row) key the scores of
    one request row across variants (`paired`); None leaves them null.
    """
    if not isinstance(features, pd.DataFrame):
        raise TypeError("features must be a pandas DataFrame")
    if not version or not variant:
        raise ValueError("version and variant must be non-empty")
    n = len(features)
    if n and np.ndim(scores) == 0:
        raise ValueError("scores must have one value per row")
    out = deid.deidentify(features, pseudonymizer)
    if ts is None:
        stamps = pd.DatetimeIndex([pd.Timestamp.now(tz="UTC")] * n)
    elif np.ndim(ts) == 0:
        stamps = pd.DatetimeIndex([_utc(ts)] * n)
    else:
        values = ts if isinstance(ts, (pd.Series, pd.Index, np.ndarray)) else list(ts)
        stamps = pd.DatetimeIndex(pd.to_datetime(values, utc=True))
        if len(stamps) != n:
            raise ValueError(f"ts has {len(stamps)} values for {n} rows")
    if stamps.isna().any():
        raise ValueError("ts contains missing values")
    out[TS] = pd.Series(stamps.as_unit("us"), index=out.index)
    out[VARIANT] = str(variant)
    out[VERSION] = str(version)
    out[SCORE] = _broadcast(scores, n, "scores")
    out[LATENCY] = _broadcast(latency_ms, n, "latency_ms")
    errors = np.zeros(n, dtype=bool) if error is None else _broadcast(error, n, "error") != 0
    out[ERROR] = errors
    if TARGETED in features.columns:  # set by the endpoint; missing/NaN means not targeted
        out[TARGETED] = features[TARGETED].eq(True).to_numpy()
    if shadow is not None:
        out[SHADOW] = _broadcast(shadow, n, "shadow") != 0
    if request_id is not None:
        ids = [request_id] * n if isinstance(request_id, str) else list(request_id)
        if len(ids) != n:
            raise ValueError(f"request_id has {len(ids)} values for {n} rows")
        out[REQUEST_ID] = pd.Series(ids, index=out.index, dtype="string")
    if row is not None:
        rows = np.asarray(row, dtype=np.int64).reshape(-1)
        if len(rows) != n:
            raise ValueError(f"row has {len(rows)} values for {n} rows")
        out[ROW] = rows
    return out


def untargeted(frame: pd.DataFrame) -> pd.DataFrame:
    """`frame` without the predictions whose variant the caller chose by header (`targeted`):
    they are not routed traffic, so no canary or trigger statistic counts them."""
    if TARGETED not in frame.columns:
        return frame
    return frame[~frame[TARGETED].eq(True)]


def unshadowed(frame: pd.DataFrame) -> pd.DataFrame:
    """`frame` without the scores made in shadow (`shadow`: a variant that did not answer the
    request scored it off the response path): they are evidence for `paired`, not traffic."""
    if SHADOW not in frame.columns:
        return frame
    return frame[~frame[SHADOW].eq(True)]


def routed(frame: pd.DataFrame) -> pd.DataFrame:
    """The routed traffic of `frame`: neither targeted nor shadow rows."""
    return unshadowed(untargeted(frame))


PAIR_READ = [TS, VARIANT, VERSION, SCORE, ERROR, TARGETED, REQUEST_ID, ROW, deid.ADMISSION_PSEUDONYM,
              deid.PATIENT_PSEUDONYM]
SHADOW_READ = [VARIANT, SCORE, LATENCY, ERROR, TARGETED, SHADOW, REQUEST_ID, ROW]


def _keyed_scores(frame: pd.DataFrame) -> pd.DataFrame:
    """Untargeted, unerrored rows with a finite score and a request key, one per key and variant."""
    frame = untargeted(frame)
    ok = (~frame[ERROR].astype(bool) & np.isfinite(frame[SCORE].to_numpy(dtype=float))
          & frame[REQUEST_ID].notna() & frame[ROW].notna())
    return frame[ok].drop_duplicates([VARIANT, REQUEST_ID, ROW])


def paired_scores(frame: pd.DataFrame, *, production: str = "blue", candidate: str = "green",
                  labels: pd.DataFrame | None = None) -> pd.DataFrame:
    """`PredictionStore.paired` on prediction rows already read (columns `PAIR_READ`): the two
    variants' scores of each request row both scored, joined on (request_id, row); inner-joined
    with `labels` (a `read_labels()` frame) when given."""
    if production == candidate:
        raise ValueError(f"production and candidate must be different variants, both are {production!r}")
    rows = _keyed_scores(frame)
    prod = rows[rows[VARIANT] == production]
    cand = rows[rows[VARIANT] == candidate]
    left = prod[[REQUEST_ID, ROW, TS, deid.ADMISSION_PSEUDONYM, deid.PATIENT_PSEUDONYM, SCORE, VERSION]].rename(
        columns={SCORE: SCORE_PRODUCTION, VERSION: VERSION_PRODUCTION})
    right = cand[[REQUEST_ID, ROW, SCORE, VERSION]].rename(columns={SCORE: SCORE_CANDIDATE,
                                                                    VERSION: VERSION_CANDIDATE})
    out = left.merge(right, on=[REQUEST_ID, ROW], how="inner", validate="one_to_one")[list(PAIRED_COLUMNS)]
    out = out.sort_values([TS, REQUEST_ID, ROW], kind="stable").reset_index(drop=True)
    if labels is None:
        return out
    lab = labels[[deid.ADMISSION_PSEUDONYM, S.LABEL]]
    out = out[out[deid.ADMISSION_PSEUDONYM].notna()]
    return out.merge(lab, on=deid.ADMISSION_PSEUDONYM, how="inner", validate="many_to_one").reset_index(drop=True)


def shadow_summary(frame: pd.DataFrame, *, production: str = "blue") -> dict[str, dict]:
    """Per variant, over its routed and shadow scores (columns `SHADOW_READ`; targeted rows left
    out): `n_scored` (rows scored without an error), `n_shadow` (of them, scored in shadow),
    `n_nan` (NaN or infinite scores), `n_out_of_range` (finite scores outside the spec's prediction
    range: [0, 1] for a classifier, the business rule's [min, max] otherwise),
    `shadow_p95_latency_ms` (of the shadow scoring; None without shadow rows), `n_failed` (shadow
    scorings that raised), `n_routed_errors` (failed or invalid routed requests' rows), and for
    every variant but `production`, `disagreement` with production on the rows both scored:
    {n_pairs, mean_abs_diff, cross_rate (share of rows on different sides of 0.5)}, or None when
    they share no row."""
    frame = untargeted(frame)
    lo, hi = S.contract().spec.prediction_range
    keyed = _keyed_scores(frame)
    prod = keyed[keyed[VARIANT] == production][[REQUEST_ID, ROW, SCORE]]
    out: dict[str, dict] = {}
    for variant, rows in frame.groupby(VARIANT, sort=True):
        err = rows[ERROR].astype(bool).to_numpy()
        shadow = rows[SHADOW].eq(True).to_numpy()
        scores = rows[SCORE].to_numpy(dtype=float)[~err]
        finite = np.isfinite(scores)
        lat = rows[LATENCY].to_numpy(dtype=float)[shadow & ~err]
        lat = lat[np.isfinite(lat)]
        stats = {
            "n_scored": int((~err).sum()),
            "n_shadow": int((shadow & ~err).sum()),
            "n_nan": int((~finite).sum()),
            "n_out_of_range": int(((scores[finite] < lo) | (scores[finite] > hi)).sum()),
            "shadow_p95_latency_ms": float(np.percentile(lat, 95)) if len(lat) else None,
            "n_failed": int((shadow & err).sum()),
            "n_routed_errors": int((~shadow & err).sum()),
        }
        if variant != production:
            mine = keyed[keyed[VARIANT] == variant][[REQUEST_ID, ROW, SCORE]]
            both = prod.merge(mine, on=[REQUEST_ID, ROW], suffixes=("_p", "_c"))
            if len(both):
                p, c = both["score_p"].to_numpy(float), both["score_c"].to_numpy(float)
                stats["disagreement"] = {"n_pairs": int(len(both)), "mean_abs_diff": float(np.abs(p - c).mean()),
                                         "cross_rate": float(((p >= 0.5) != (c >= 0.5)).mean())}
            else:
                stats["disagreement"] = None
        out[str(variant)] = stats
    return out


def min_time(a: TimeLike, b: TimeLike) -> pd.Timestamp | None:
    """The earlier of two times (None: unbounded)."""
    a, b = _utc(a), _utc(b)
    if a is None or b is None:
        return a if b is None else b
    return min(a, b)


def _to_table(frame: pd.DataFrame, schema: pa.Schema) -> pa.Table:
    """Cast `frame` to `schema`: schema columns only (missing ones null), clear errors."""
    arrays = []
    for field in schema:
        if field.name in frame.columns:
            col = frame[field.name]
            try:
                if pa.types.is_timestamp(field.type):
                    col = pd.to_datetime(col, utc=True)
                arr = pa.array(col, type=field.type, from_pandas=True)
            except (pa.ArrowInvalid, pa.ArrowTypeError, ValueError, TypeError) as exc:
                raise DataError(f"column {field.name!r} cannot be stored as {field.type}: "
                                f"{type(exc).__name__}") from None
        else:
            arr = pa.nulls(len(frame), type=field.type)
        if not field.nullable and arr.null_count:
            raise DataError(f"column {field.name!r} has missing values")
        arrays.append(arr)
    return pa.Table.from_arrays(arrays, schema=schema)


def check_records(records: pd.DataFrame) -> None:
    """What `write_records` checks, without writing: DataError (one line) unless the frame made by
    `build_records` fits `PREDICTION_SCHEMA` and is de-identified."""
    _check_deidentified(_to_table(records, prediction_schema()))


def _check_deidentified(table: pa.Table) -> None:
    """Defence in depth for `write_records`: refuse rows that were clearly not de-identified."""
    for name in deid.PSEUDONYM_COLUMNS:
        col = table.column(name).drop_null()
        if len(col):
            ok = pc.match_substring_regex(col, f"^[0-9a-f]{{{deid.PSEUDONYM_HEX_CHARS}}}$")
            if not pc.all(ok).as_py():
                raise DataError(f"column {name!r} does not hold pseudonyms; use append(), not write_records()")
    age_max = pc.max(table.column("age")).as_py() if "age" in table.column_names else None  # an age feature
    if age_max is not None and age_max > deid.AGE_CAP:
        raise DataError("ages above 90 must be coarsened; use append(), not write_records()")
    zips = table.column(deid.ZIP3).drop_null()
    if len(zips) and not pc.all(pc.match_substring_regex(zips, r"^\d{3}$")).as_py():
        raise DataError("zip3 must hold 3-digit ZIP prefixes; use append(), not write_records()")


def is_data_file(name: str) -> bool:
    return name.endswith(".parquet") and (name.startswith("part-") or name.startswith(f"{COMPACT_PREFIX}-"))


def _with_metadata(table: pa.Table, metadata: dict[str, str]) -> pa.Table:
    return table.replace_schema_metadata({**(table.schema.metadata or {}), **metadata})


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """`table` with exactly `schema`'s columns (a file written before a column existed gets nulls)."""
    arrays = [table.column(f.name).cast(f.type) if f.name in table.column_names else pa.nulls(table.num_rows, f.type)
              for f in schema]
    return pa.Table.from_arrays(arrays, schema=schema)


def traffic_filter(version: str | None = None, *, shadow: bool = True):
    """A `scan` filter: rows whose variant the caller did not choose by header (`untargeted`),
    of `version` if given; scores made in shadow only if `shadow`."""
    expr = ~pc.coalesce(pads.field(TARGETED), pa.scalar(False))
    if not shadow:
        expr = expr & ~pc.coalesce(pads.field(SHADOW), pa.scalar(False))
    if version is not None:
        expr = expr & (pads.field(VERSION) == version)
    return expr


def store_url(settings) -> str:
    """Where the prediction store of `settings` lives (see `PredictionSettings.store`)."""
    if settings.predictions.store:
        return settings.predictions.store
    if settings.backend == "sagemaker":
        a = settings.aws
        if not a.bucket:
            raise ConfigError("the sagemaker backend keeps predictions on S3: set aws.bucket (RETRAINER_AWS__BUCKET) "
                              "or predictions.store (RETRAINER_PREDICTIONS__STORE=s3://bucket/prefix)")
        return "s3://" + "/".join(p for p in (a.bucket, a.prefix.strip("/"), settings.model_name) if p)
    return str(settings.home)


def open_store(settings, *, check: bool = False) -> PredictionStore:
    """The prediction store of `settings`; `check`: run the start-up check now (one ConfigError
    line). An S3 store runs it anyway before its first use."""
    store = PredictionStore(location_for(store_url(settings), check_first=True))
    if check:
        store.check()
    return store


# --------------------------------------------------------------------------------------------------
# The store

class PredictionStore:
    """The prediction store (see module docstring) on a `Location`: a local directory (a path) or an
    S3 prefix (`s3://bucket/prefix`). `compression` is the Parquet codec."""

    def __init__(self, root: Path | str | Location, *, compression: str | None = "zstd"):
        self.location = location_for(root)
        self.compression = compression
        self._replaced_cache: dict[str, tuple[set[str], int]] = {}

    def __repr__(self) -> str:
        return f"PredictionStore({self.location.url!r})"

    @property
    def url(self) -> str:
        return self.location.url

    @property
    def is_local(self) -> bool:
        return isinstance(self.location, LocalLocation)

    @property
    def root(self) -> Path:
        return self._local().root

    @property
    def predictions_dir(self) -> Path:
        return self._local().root / PREDICTIONS

    @property
    def labels_dir(self) -> Path:
        return self._local().root / LABELS

    def _local(self) -> LocalLocation:
        if not isinstance(self.location, LocalLocation):
            raise AttributeError(f"{self.url} is not a local directory")
        return self.location

    def check(self) -> None:
        """Start-up check of the location (one ConfigError line: no bucket, denied, unreachable)."""
        self.location.check()

    # -- writing ---------------------------------------------------------------------------------
    def sweep_stale_temp_files(self, older_than: float = STALE_TEMP_SECONDS) -> int:
        """Local stores: delete temp files killed writers left (see `LocalLocation`); S3 has none."""
        if isinstance(self.location, LocalLocation):
            return self.location.sweep_stale_temp_files(older_than)
        return 0

    def append(self, features: pd.DataFrame, scores, *, version: str, variant: str, latency_ms,
               ts=None, pseudonymizer: deid.Pseudonymizer, error=None, shadow=None, request_id=None,
               row=None) -> int:
        """De-identify and store one batch of predictions; returns the number of rows written."""
        records = build_records(features, scores, version=version, variant=variant,
                                latency_ms=latency_ms, ts=ts, pseudonymizer=pseudonymizer, error=error,
                                shadow=shadow, request_id=request_id, row=row)
        return self.write_records(records, _fingerprint=pseudonymizer.fingerprint)

    def write_records(self, records: pd.DataFrame, *, _fingerprint: str | None = None) -> int:
        """Store frames made by `build_records` (used by `serving.buffer.BufferedPredictionWriter`), one file per
        prediction day. Only `PREDICTION_SCHEMA` columns are written."""
        if not len(records):
            return 0
        table = _to_table(records.reset_index(drop=True), prediction_schema())
        _check_deidentified(table)
        if _fingerprint:
            table = _with_metadata(table, {FINGERPRINT_KEY: _fingerprint})
        days = pd.Series(table.column(TS).to_pandas()).dt.strftime("%Y-%m-%d").to_numpy()
        for day in np.unique(days):
            mask = pa.array(days == day)
            self.location.write_table(f"{PREDICTIONS}/date={day}", table.filter(mask), self.compression)
        return table.num_rows

    # -- reading ---------------------------------------------------------------------------------
    def days(self) -> list[date]:
        """The prediction days the store has a partition for, oldest first."""
        out = []
        for name in self.location.list_dirs(PREDICTIONS, "date=*"):
            try:
                out.append(date.fromisoformat(name[len("date="):]))
            except ValueError:
                continue
        return sorted(out)

    def day_files(self, day: date) -> list[str]:
        """The live data files of one day partition (paths relative to the root): `part-*` files
        written by appends and `compact-*` files written by `compact`, less the files a compact
        file replaced (a compaction stopped before deleting its inputs leaves them; readers skip them)."""
        rel, names, replaced = self._partition(day)
        return [f"{rel}/{n}" for n in names if n not in replaced]

    def _partition(self, day: date) -> tuple[str, list[str], set[str]]:
        """(relative path, data file names, names some compact file there replaced) of a day."""
        rel = f"{PREDICTIONS}/date={day.isoformat()}"
        names = [n for n in self.location.list_files(rel) if is_data_file(n)]
        replaced: set[str] = set()
        for n in names:
            if n.startswith(COMPACT_PREFIX):
                replaced |= self._replaces(f"{rel}/{n}")
        return rel, names, replaced

    def _replaces(self, rel: str) -> set[str]:
        """The file names a compact file replaced (read from its footer once: files never change)."""
        return self._compact_footer(rel)[0]

    def _compact_footer(self, rel: str) -> tuple[set[str], int]:
        """(names it replaced, rows) of a compact file, cached."""
        if rel not in self._replaced_cache:
            footer = pq.read_metadata(self.location.path(rel), filesystem=self.location.fs)
            meta = footer.metadata or {}
            self._replaced_cache[rel] = (set(json.loads(meta.get(REPLACES_KEY.encode(), b"[]"))), footer.num_rows)
        return self._replaced_cache[rel]

    def _prediction_files(self, start: pd.Timestamp | None, end: pd.Timestamp | None) -> list[str]:
        first = start.date() if start is not None else None
        last = (end - pd.Timedelta(microseconds=1)).date() if end is not None else None
        files = []
        for day in self.days():
            if (first and day < first) or (last and day > last):
                continue
            files.extend(self.day_files(day))
        return files

    def _dataset(self, files: list[str], schema: pa.Schema) -> pads.Dataset:
        return pads.dataset([self.location.path(f) for f in files], schema=schema, format="parquet",
                            filesystem=self.location.fs)

    @staticmethod
    def _window(start: pd.Timestamp | None, end: pd.Timestamp | None):
        expr = None
        if start is not None:
            expr = pads.field(TS) >= pa.scalar(start.to_pydatetime(), type=_UTC_US)
        if end is not None:
            cond = pads.field(TS) < pa.scalar(end.to_pydatetime(), type=_UTC_US)
            expr = cond if expr is None else expr & cond
        return expr

    @staticmethod
    def _columns(columns: Iterable[str] | None) -> list[str]:
        all_columns = prediction_columns()
        wanted = list(all_columns if columns is None else columns)
        unknown = [c for c in wanted if c not in all_columns]
        if unknown:
            raise ValueError(f"unknown prediction column(s): {', '.join(unknown)}")
        return wanted

    def scan(self, start: TimeLike = None, end: TimeLike = None, columns: Iterable[str] | None = None, *,
             where=None, batch_rows: int = 131_072) -> BatchStream:
        """Predictions with `start <= ts < end` as a stream of Arrow record batches read one file
        after another, never the whole window in memory (the monitor's drift window). `where`: an
        extra `pyarrow.dataset` filter expression, e.g. `routed_filter(version=...)`."""
        start, end = _utc(start), _utc(end)
        wanted = self._columns(columns)
        expr = self._window(start, end)
        if where is not None:
            expr = where if expr is None else expr & where
        files = self._prediction_files(start, end)
        dataset = self._dataset(files, prediction_schema()) if files else None

        def batches(cols: list[str]):
            if dataset is None:
                return
            yield from dataset.to_batches(columns=list(cols), filter=expr, batch_size=batch_rows,
                                          batch_readahead=2, fragment_readahead=1)

        return BatchStream(prediction_schema(), wanted, batches)

    def read(self, start: TimeLike = None, end: TimeLike = None,
             columns: Iterable[str] | None = None) -> pd.DataFrame:
        """Predictions with `start <= ts < end` (UTC); all columns unless `columns` is given."""
        start, end = _utc(start), _utc(end)
        wanted = self._columns(columns)
        files = self._prediction_files(start, end)
        if not files:
            return prediction_schema().empty_table().select(wanted).to_pandas()
        return self._dataset(files, prediction_schema()).to_table(
            columns=wanted, filter=self._window(start, end)).to_pandas()

    # -- compaction ------------------------------------------------------------------------------
    def compact(self, days: Iterable[date] | None = None, *, min_files: int = 2, max_rows: int = 1_000_000,
                row_group_rows: int = 131_072) -> dict:
        """Merge each day partition's files into few `compact-*` files (at most `max_rows` rows
        each, row groups of `row_group_rows`), so that a day of captured traffic is not thousands
        of small objects. Each compact file lists the files it replaces in its footer; it is
        written before they are deleted, so readers never see a row twice or miss one, and a
        compaction stopped half-way leaves replaced files that readers skip and the next
        compaction deletes. Files are grouped by pseudonym-key fingerprint (a rotated key's rows
        are never mixed with the old key's). One compaction at a time per store (the `compact`
        deployment has a concurrency limit of 1); appends may run meanwhile.
        Returns {days, files_in, files_out, rows, leftovers_deleted}."""
        out = {"days": [], "files_in": 0, "files_out": 0, "rows": 0, "leftovers_deleted": 0}
        for day in sorted(self.days() if days is None else days):
            rel, names, replaced = self._partition(day)
            for n in names:
                if n in replaced:
                    out["leftovers_deleted"] += self.location.delete(f"{rel}/{n}")
            # a compact file holding at least half of `max_rows` is done: not merged again
            live = [n for n in names if n not in replaced and not (
                n.startswith(COMPACT_PREFIX) and self._compact_footer(f"{rel}/{n}")[1] >= max_rows // 2)]
            if len(live) < min_files:
                continue
            groups: dict[str, tuple[list[str], list[pa.Table], int]] = {}

            def flush(fp: str) -> None:
                done, tables, rows = groups.pop(fp)
                meta = {REPLACES_KEY: json.dumps(done)}
                if fp:
                    meta[FINGERPRINT_KEY] = fp
                table = _with_metadata(pa.concat_tables(tables), meta)
                self.location.write_bytes(rel, to_parquet(table, self.compression, row_group_rows),
                                          prefix=COMPACT_PREFIX)
                out["files_out"] += 1
                out["rows"] += rows

            for n in live:
                pf = pq.ParquetFile(self.location.path(f"{rel}/{n}"), filesystem=self.location.fs)
                fp = ((pf.schema_arrow.metadata or {}).get(FINGERPRINT_KEY.encode()) or b"").decode()
                table = _conform(pf.read(), prediction_schema())
                done, tables, rows = groups.setdefault(fp, ([], [], 0))
                groups[fp] = (done + [n], tables + [table], rows + table.num_rows)
                if groups[fp][2] >= max_rows:
                    flush(fp)
            for fp in list(groups):
                flush(fp)
            for n in live:  # only once every group's compact file exists
                self.location.delete(f"{rel}/{n}")
            self._replaced_cache = {k: v for k, v in self._replaced_cache.items() if not k.startswith(rel)}
            out["days"].append(day.isoformat())
            out["files_in"] += len(live)
        return out

    # -- labels ----------------------------------------------------------------------------------
    def ingest_labels(self, path: Path | str, pseudonymizer: deid.Pseudonymizer, *,
                      unknown: str = "refuse") -> int:
        """Validate and store an outcome file (CSV or Parquet) keyed by raw `admission_id`, with
        `readmitted_30d` in {0, 1}, optionally `patient_id` and `outcome_at` (when the outcome
        became known). Keys are pseudonymised, every other column is ignored. Returns the number
        of labels stored; on any problem raises DataError (one line, no raw identifier) and writes
        nothing:

        * an admission listed twice with different labels (the same label twice is stored once);
        * labels for admissions the store holds no prediction for: `unknown="refuse"` (default)
          refuses the file, "skip" stores only the others, "keep" stores them all;
        * an `outcome_at` before the admission's first prediction, or in the future.
        """
        if unknown not in ("refuse", "skip", "keep"):
            raise DataError(f"unknown={unknown!r}: use refuse, skip or keep")
        frame = _read_label_file(Path(path))
        name = Path(path).name
        labels = _validate_labels(frame, name)
        out = pd.DataFrame({
            deid.ADMISSION_PSEUDONYM: pseudonymizer.pseudonymize(labels[S.ADMISSION_ID], deid.row_domain()),
            deid.PATIENT_PSEUDONYM: (pseudonymizer.pseudonymize(labels[S.ENTITY], deid.entity_domain())
                                     if S.ENTITY and S.ENTITY in labels.columns
                                     else pd.Series(pd.NA, index=labels.index, dtype="string")),
            S.LABEL: labels[S.LABEL].to_numpy(dtype=np.int64 if S.contract().spec.label.type == "int" else np.float64),
        })
        per_admission = out.groupby(deid.ADMISSION_PSEUDONYM)[S.LABEL].nunique()
        twice = per_admission.index[per_admission > 1]
        if len(twice):
            lines = (np.flatnonzero(out[deid.ADMISSION_PSEUDONYM].isin(twice).to_numpy()) + 2)[:5]
            raise DataError(f"label file {name}: {len(twice)} admission(s) listed more than once with different "
                            f"labels (lines {', '.join(map(str, lines))}); send one outcome per admission")
        out = out.drop_duplicates(deid.ADMISSION_PSEUDONYM, keep="last")
        if unknown != "keep" or "outcome_at" in labels.columns:
            first = self._first_prediction(out[deid.ADMISSION_PSEUDONYM])
            known = out[deid.ADMISSION_PSEUDONYM].isin(first.index)
            if unknown == "refuse" and not known.all():
                raise DataError(f"label file {name}: {int((~known).sum())} of {len(out)} admission(s) have no "
                                "prediction in the store (never scored); use --unknown skip to store the others, "
                                "or --unknown keep to store them all")
            if "outcome_at" in labels.columns:
                _check_outcome_times(labels.loc[out.index, "outcome_at"], out[deid.ADMISSION_PSEUDONYM], first, name)
            if unknown == "skip":
                out = out[known.to_numpy()]
        out = out.copy()
        out[INGESTED_AT] = pd.Timestamp.now(tz="UTC")
        table = _to_table(out.reset_index(drop=True), label_schema())
        table = _with_metadata(table, {FINGERPRINT_KEY: pseudonymizer.fingerprint})
        self.location.write_table(LABELS, table, self.compression)
        return table.num_rows

    def _first_prediction(self, admissions: pd.Series) -> pd.Series:
        """The first prediction time of each of `admissions` (pseudonyms) the store has a
        prediction for (routed or shadow), indexed by pseudonym."""
        preds = self.read(columns=[TS, deid.ADMISSION_PSEUDONYM])
        preds = preds[preds[deid.ADMISSION_PSEUDONYM].isin(set(admissions))]
        return preds.groupby(deid.ADMISSION_PSEUDONYM)[TS].min()

    def read_labels(self) -> pd.DataFrame:
        """All labels, one row per admission pseudonym (the most recently ingested wins)."""
        files = [f"{LABELS}/{n}" for n in self.location.list_files(LABELS, "part-*.parquet")]
        if not files:
            return label_schema().empty_table().to_pandas()
        table = self._dataset(files, label_schema()).to_table()
        frame = table.to_pandas()
        frame = frame.sort_values(INGESTED_AT, kind="stable")
        return frame.drop_duplicates(deid.ADMISSION_PSEUDONYM, keep="last").reset_index(drop=True)

    def labelled(self, start: TimeLike = None, end: TimeLike = None, *,
                 include_targeted: bool = False, include_shadow: bool = False) -> pd.DataFrame:
        """Predictions in the window joined (inner) with their labels on `admission_pseudonym`.
        Predictions whose variant the caller chose by header (`targeted`) are left out unless
        `include_targeted`, and scores made in shadow unless `include_shadow`: the canary's AUCs
        and DeLong interval and the triggers' AUC windows all come from here."""
        preds = self.read(start, end)
        if not include_targeted:
            preds = untargeted(preds)
        if not include_shadow:
            preds = unshadowed(preds)
        labels = self.read_labels()[[deid.ADMISSION_PSEUDONYM, S.LABEL]]
        preds = preds[preds[deid.ADMISSION_PSEUDONYM].notna()]
        joined = preds.merge(labels, on=deid.ADMISSION_PSEUDONYM, how="inner", validate="many_to_one")
        return joined.reset_index(drop=True)

    def variant_stats(self, start: TimeLike = None, end: TimeLike = None) -> dict[str, dict]:
        """Per variant: n_predictions, n_labels (labelled predictions with a finite score, the
        rows the AUC is computed on), auc (None if fewer than 2 classes among them), error_rate
        (share of predictions flagged `error`), p95_latency_ms (None if no latency), version (of
        the latest prediction) and versions (all seen in the window). Predictions whose variant
        the caller chose by header (`targeted`) and scores made in shadow are left out: only
        routed traffic counts (failed and invalid requests are routed rows with `error`)."""
        from sklearn.metrics import roc_auc_score  # noqa: PLC0415 - heavy: sklearn

        preds = self.read(start, end, columns=[TS, VARIANT, VERSION, LATENCY, ERROR, TARGETED, SHADOW])
        preds = routed(preds)
        joined = self.labelled(start, end)  # routed rows too
        stats: dict[str, dict] = {}
        for variant, rows in preds.groupby(VARIANT, sort=True):
            lab = joined[joined[VARIANT] == variant]
            scored = lab[np.isfinite(lab[SCORE].to_numpy(dtype=float))]
            auc = spearman = None
            if S.TASK != "binary_classification":  # a regression or ranking model: Spearman
                if len(scored) >= 4:
                    from ..evidence.correlation import spearman as _spearman  # noqa: PLC0415 - heavy: scipy

                    spearman = _spearman(scored[S.LABEL].to_numpy(float), scored[SCORE].to_numpy(float))
            elif scored[S.LABEL].nunique() >= 2:
                auc = float(roc_auc_score(scored[S.LABEL].to_numpy(), scored[SCORE].to_numpy()))
            latency = rows[LATENCY].dropna().to_numpy(dtype=float)
            stats[str(variant)] = {
                "n_predictions": int(len(rows)),
                "n_labels": int(len(scored)),
                "auc": auc,
                **({} if spearman is None else {"spearman": spearman}),
                "error_rate": float(rows[ERROR].mean()) if len(rows) else 0.0,
                "p95_latency_ms": float(np.percentile(latency, 95)) if len(latency) else None,
                "version": str(rows.sort_values(TS, kind="stable")[VERSION].iloc[-1]),
                "versions": sorted(rows[VERSION].astype(str).unique().tolist()),
            }
        return stats

    def paired(self, start: TimeLike = None, end: TimeLike = None, *, production: str = "blue",
               candidate: str = "green", matured_before: TimeLike = None, labelled: bool = True) -> pd.DataFrame:
        """The scores `production` and `candidate` both gave to the same request rows (one answered,
        the other scored in shadow, or both in shadow), one row per request row with a finite score
        from each: columns `PAIRED_COLUMNS`, plus `readmitted_30d` when `labelled` (inner join with
        the labels on the admission pseudonym). Window `start <= ts < end`; `matured_before`: only
        predictions made before it (the caller passes now - label_delay: only rows whose label can
        exist). Targeted and errored rows, and rows without a request key (older files), never pair."""
        frame = self.read(start, min_time(end, matured_before), columns=PAIR_READ)
        return paired_scores(frame, production=production, candidate=candidate,
                             labels=self.read_labels() if labelled else None)

    def shadow_stats(self, start: TimeLike = None, end: TimeLike = None, *,
                     production: str = "blue") -> dict[str, dict]:
        """The shadow strategy's sanity checks per variant over its routed and shadow scores
        (targeted rows left out): see `shadow_summary`."""
        return shadow_summary(self.read(start, end, columns=SHADOW_READ), production=production)

    def count_labels_since(self, ts: TimeLike) -> int:
        """Admissions whose (latest) label was ingested at or after `ts`."""
        labels = self.read_labels()
        if ts is None:
            return int(len(labels))
        return int((labels[INGESTED_AT] >= _utc(ts)).sum())


def _read_label_file(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise DataError(f"label file {path.name} does not exist")
    if path.stat().st_size == 0:
        raise DataError(f"label file {path.name} is empty")
    suffix = "".join(path.suffixes[-2:]).lower() if path.suffix.lower() == ".gz" else path.suffix.lower()
    try:
        if suffix in (".parquet", ".pq"):
            return pd.read_parquet(path)
        if suffix in (".csv", ".csv.gz"):
            # ids stay strings (leading zeros), labels are checked below
            return pd.read_csv(path, dtype=str, keep_default_na=True)
    except pd.errors.EmptyDataError:
        raise DataError(f"label file {path.name} is empty") from None
    except Exception as exc:  # corrupt Parquet, undecodable or malformed CSV
        raise DataError(f"cannot read label file {path.name}: {one_line(exc)}") from None
    raise DataError(f"label file {path.name}: unsupported format (use .csv or .parquet)")


def _check_outcome_times(when: pd.Series, admissions: pd.Series, first: pd.Series, name: str) -> None:
    """An outcome cannot be known before its prediction was made, nor in the future."""
    future = int((when > pd.Timestamp.now(tz="UTC") + pd.Timedelta(minutes=5)).sum())
    if future:
        raise DataError(f"label file {name}: {future} outcome_at time(s) lie in the future")
    made = pd.to_datetime(admissions.map(first), utc=True)
    early = (made.notna() & (when < made)).to_numpy()
    if early.any():
        raise DataError(f"label file {name}: {int(early.sum())} outcome(s) known before their admission's first "
                        "prediction (outcome_at earlier than it): check the clock or the ids")


def _validate_labels(frame: pd.DataFrame, name: str) -> pd.DataFrame:
    missing = [c for c in (S.ADMISSION_ID, S.LABEL) if c not in frame.columns]
    if missing:
        raise DataError(f"label file {name} lacks column(s): {', '.join(missing)}")
    if frame.empty:
        raise DataError(f"label file {name} has no rows")
    ids = frame[S.ADMISSION_ID].astype("string").str.strip()
    if (ids.isna() | (ids == "")).any():
        raise DataError(f"label file {name}: {int((ids.isna() | (ids == '')).sum())} row(s) without {S.ADMISSION_ID}")
    raw = frame[S.LABEL]
    if pd.api.types.is_bool_dtype(raw.dtype):
        raw = raw.astype("Int64")
    values = pd.to_numeric(raw.astype("string").str.strip() if raw.dtype == object or
                           pd.api.types.is_string_dtype(raw.dtype) else raw, errors="coerce")
    spec = S.contract().spec
    domain, lo_hi = spec.label_values, spec.label.range
    bad = values.isna()
    if domain is not None:
        bad |= ~values.isin(domain)
        allowed = "0 or 1" if domain == [0, 1] else f"one of {', '.join(str(v) for v in domain)}"
    elif lo_hi is not None:
        bad |= (values < lo_hi[0]) | (values > lo_hi[1])
        allowed = f"within [{lo_hi[0]:g}, {lo_hi[1]:g}]"
    else:
        allowed = "a number"
    if bad.any():
        shown = sorted({str(v) for v in frame.loc[bad, S.LABEL].head(50)})[:5]
        raise DataError(f"label file {name}: {S.LABEL} must be {allowed}; {int(bad.sum())} row(s) have "
                        f"other values (e.g. {', '.join(shown)})")
    cols = {S.ADMISSION_ID: ids, S.LABEL: values.astype("int64" if spec.label.type == "int" else "float64")}
    if "outcome_at" in frame.columns:
        when = pd.to_datetime(frame["outcome_at"], utc=True, errors="coerce", format="ISO8601")
        if when.isna().any():
            raise DataError(f"label file {name}: outcome_at must be a time; {int(when.isna().sum())} row(s) are "
                            "empty or unreadable")
        cols["outcome_at"] = when
    entity = S.ENTITY
    if entity and entity in frame.columns:
        pids = frame[entity].astype("string").str.strip()
        cols[entity] = pids.mask(pids == "")
    return pd.DataFrame(cols)

