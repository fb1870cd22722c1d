"""Reading training batches (a Parquet file or a folder of them) with clear errors, the
time-based split, and content hashes for lineage."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from . import schema as S
from .errors import DataError
from .settings import SplitSettings


def parquet_files(path: str | Path) -> list[Path]:
    p = Path(path)
    if not p.exists():
        raise DataError(f"{p}: no such file or directory")
    if p.is_dir():
        files = sorted(f for f in p.rglob("*.parquet") if f.is_file() and not f.name.startswith("."))
        if not files:
            raise DataError(f"{p}: directory has no .parquet files")
        return files
    return [p]


def read_parquet(path: str | Path, columns: list[str] | None = None) -> pd.DataFrame:
    """Read one file or a folder of Parquet files into one frame."""
    import pyarrow.parquet as pq  # noqa: PLC0415 - heavy: pyarrow

    frames = []
    for f in parquet_files(path):
        try:
            frames.append(pq.read_table(f, columns=columns).to_pandas())
        except Exception as exc:  # pyarrow raises several types for non-Parquet or truncated files
            msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise DataError(f"{f}: not a readable Parquet file ({msg})") from None
    if len(frames) == 1:
        return frames[0]
    try:
        return pd.concat(frames, ignore_index=True)
    except Exception as exc:
        raise DataError(f"{path}: files do not share one schema ({exc})") from None


def load_batch(path: str | Path) -> pd.DataFrame:
    df = read_parquet(path)
    if len(df) == 0:
        raise DataError(f"{path}: zero rows")
    return df


def content_hash(df: pd.DataFrame) -> str:
    """A hash of the batch's content (column names, dtypes and values), independent of file layout."""
    h = hashlib.sha256()
    cols = sorted(df.columns)
    h.update(repr([(c, str(df[c].dtype)) for c in cols]).encode())
    h.update(pd.util.hash_pandas_object(df[cols], index=False).to_numpy().tobytes())
    return h.hexdigest()


@dataclass
class Split:
    train: pd.DataFrame
    validation: pd.DataFrame
    test: pd.DataFrame
    months: dict[str, list[str]]

    def summary(self) -> dict:
        return {name: {"rows": len(getattr(self, name)), "months": m} for name, m in self.months.items()}


def time_split(df: pd.DataFrame, split: SplitSettings) -> Split:
    """Train on older months, validate on the next, test on the most recent. Never shuffled."""
    ts = pd.to_datetime(df[S.TIMESTAMP])
    month = ts.dt.strftime("%Y-%m")
    months = sorted(month.unique())
    need = split.min_train_months + split.validation_months + split.test_months
    if len(months) < need:
        raise DataError(f"time-based split needs at least {need} months of data "
                        f"({split.min_train_months} train + {split.validation_months} validation + "
                        f"{split.test_months} test); the batch covers {len(months)}")
    test_m = months[-split.test_months:]
    val_m = months[-(split.test_months + split.validation_months):-split.test_months]
    train_m = months[:-(split.test_months + split.validation_months)]
    order = np.argsort(ts.to_numpy(), kind="stable")
    df = df.iloc[order].reset_index(drop=True)
    month = month.iloc[order].reset_index(drop=True)
    return Split(
        train=df[month.isin(train_m)].reset_index(drop=True),
        validation=df[month.isin(val_m)].reset_index(drop=True),
        test=df[month.isin(test_m)].reset_index(drop=True),
        months={"train": train_m, "validation": val_m, "test": test_m},
    )
