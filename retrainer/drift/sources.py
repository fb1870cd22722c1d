"""Where drift data comes from: a DataFrame, a Parquet file, a folder of Parquet files, or a
stream of Arrow batches (`BatchStream`: the prediction store's window, read file by file).

A source tells the kind of each column (numeric, categorical, or none PSI can bin) and yields
column batches. Files are streamed one row group at a time, the next row group read in a
background thread while the current one is counted, so memory stays flat however many rows the
window has and decoding (in Arrow, without the GIL) overlaps the numpy counting.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterator, Mapping

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import DataError

NUMERIC, CATEGORICAL = "numeric", "categorical"

PathLike = str | Path
Data = "pd.DataFrame | PathLike | BatchStream"


def kind_of_pandas(dtype) -> str | None:
    """NUMERIC, CATEGORICAL or None (a dtype PSI cannot bin) for a pandas dtype."""
    if isinstance(dtype, pd.CategoricalDtype) or pd.api.types.is_bool_dtype(dtype):
        return CATEGORICAL
    if pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_complex_dtype(dtype):
        return NUMERIC
    if pd.api.types.is_string_dtype(dtype) or pd.api.types.is_object_dtype(dtype):
        return CATEGORICAL
    return None


def kind_of_arrow(typ) -> str | None:
    """NUMERIC, CATEGORICAL, "null" (all missing: fits either kind) or None for an Arrow type."""
    if pa.types.is_null(typ):
        return "null"
    if pa.types.is_boolean(typ) or pa.types.is_dictionary(typ) or pa.types.is_string(typ) \
            or pa.types.is_large_string(typ) or getattr(pa.types, "is_string_view", lambda t: False)(typ):
        return CATEGORICAL
    if pa.types.is_integer(typ) or pa.types.is_floating(typ) or pa.types.is_decimal(typ):
        return NUMERIC
    return None


class Source:
    """Column names, their kinds, and an iterator of column batches (one per Parquet row group)."""

    def __init__(self, data: Data, what: str):
        self.what = what
        self.frame: pd.DataFrame | None = None
        self.files: list[Path] = []
        self.stream: BatchStream | None = None
        if isinstance(data, BatchStream):
            self.stream = data
            self.kinds = {f.name: kind_of_arrow(f.type) for f in data.schema if f.name in data.columns}
        elif isinstance(data, pd.DataFrame):
            if any(not isinstance(c, str) for c in data.columns):
                data = data.rename(columns=str)
            if data.columns.has_duplicates:
                raise DataError(f"{what} data has duplicate column names")
            self.frame = data
            self.kinds = {c: kind_of_pandas(t) for c, t in data.dtypes.items()}
        elif isinstance(data, (str, Path)):
            self.files = parquet_files(Path(data), what)
            self.kinds = {f.name: kind_of_arrow(f.type) for f in self._schema(self.files[0])}
        else:
            raise DataError(f"{what} data must be a DataFrame or a Parquet path, not {type(data).__name__}")

    def _schema(self, path: Path):
        try:
            return pq.read_schema(path)
        except Exception as exc:
            raise DataError(f"cannot read {self.what} Parquet file {path}: {first_line(exc)}") from None

    @property
    def names(self) -> list[str]:
        return list(self.kinds)

    def check(self, columns: Mapping[str, str]) -> None:
        """DataError unless every file has every column with a compatible kind."""
        schemas = [(None, self.kinds)] if self.frame is not None or self.stream is not None else [
            (f, {x.name: kind_of_arrow(x.type) for x in self._schema(f)}) for f in self.files]
        for path, kinds in schemas:
            where = f" ({path})" if path is not None and len(self.files) > 1 else ""
            missing = [c for c in columns if c not in kinds]
            if missing:
                shown = ", ".join(missing[:8]) + (f" and {len(missing) - 8} more" if len(missing) > 8 else "")
                raise DataError(f"{self.what} data{where} lacks {len(missing)} feature(s): {shown}")
            for c, kind in columns.items():
                if kinds[c] not in (kind, "null"):
                    got = kinds[c] or "unsupported"
                    raise DataError(f"feature {c!r} is {kind} in the reference but {got} "
                                    f"in the {self.what} data{where}")

    def batches(self, columns: list[str]) -> Iterator[tuple[int, Mapping[str, Any]]]:
        """(rows, column name -> Series or Arrow array) per batch: the whole frame, or one
        Parquet row group at a time."""
        if self.frame is not None:
            yield len(self.frame), {c: self.frame[c] for c in columns}
            return
        if self.stream is not None:
            for batch in self.stream.batches(columns):
                if batch.num_rows:
                    yield batch.num_rows, {c: batch.column(c) for c in columns}
            return

        def read(path: Path, pf, i: int):
            try:
                return path, pf.read_row_group(i, columns=columns, use_threads=True)
            except Exception as exc:
                raise DataError(f"cannot read {self.what} Parquet file {path}: {first_line(exc)}") from None

        def groups():
            for path in self.files:
                try:
                    pf = pq.ParquetFile(path)
                except Exception as exc:
                    raise DataError(f"cannot read {self.what} Parquet file {path}: {first_line(exc)}") from None
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
        """`columns` of the whole source as one DataFrame (the files read and concatenated)."""
        if self.frame is not None:
            return self.frame[columns]
        if self.stream is not None:
            return pa.Table.from_batches(list(self.stream.batches(columns)),
                                         schema=self.stream.schema.select(columns)).to_pandas()
        tables = []
        for path in self.files:
            try:
                tables.append(pq.read_table(path, columns=columns))
            except Exception as exc:
                raise DataError(f"cannot read {self.what} Parquet file {path}: {first_line(exc)}") from None
        try:
            table = pa.concat_tables(tables, promote_options="permissive") if len(tables) > 1 else tables[0]
        except Exception as exc:
            raise DataError(f"{self.what} Parquet files do not share a schema: {first_line(exc)}") from None
        return table.to_pandas()


def parquet_files(path: Path, what: str) -> list[Path]:
    """The .parquet files of a folder (recursively, sorted) or the one file `path`."""
    if path.is_dir():
        files = sorted(p for p in path.rglob("*.parquet") if p.is_file())
        if not files:
            raise DataError(f"{what} folder {path} has no .parquet files")
        return files
    if path.is_file():
        return [path]
    raise DataError(f"{what} data {path} does not exist")


def first_line(exc: BaseException) -> str:
    """"ExcType: first line of the message", for one-line DataErrors."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


class BatchStream:
    """A stream of Arrow record batches, for sources too big to hold (the prediction store's
    window on S3): `schema` (all columns), `columns` (the default selection) and `batches(columns)`,
    which returns a fresh iterator of `pyarrow.RecordBatch` each time it is called."""

    def __init__(self, schema: pa.Schema, columns: list[str], batches):
        self.schema, self.columns, self._batches = schema, list(columns), batches

    def batches(self, columns: list[str] | None = None):
        return self._batches(list(columns or self.columns))

    def count(self) -> int:
        """Rows in the stream (reads one column)."""
        return sum(b.num_rows for b in self.batches(self.columns[:1]))
