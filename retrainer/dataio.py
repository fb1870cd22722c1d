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


_PERIOD_FORMAT = {"days": "%Y-%m-%d", "weeks": "%Y-%m-%d", "months": "%Y-%m"}


def periods_of(ts: pd.Series, unit: str) -> pd.Series:
    """The period label of each timestamp: its day, the Monday of its week, or its month."""
    if unit == "weeks":
        ts = ts.dt.normalize() - pd.to_timedelta(ts.dt.weekday, unit="D")
    return ts.dt.strftime(_PERIOD_FORMAT[unit])


def time_split(df: pd.DataFrame, split: SplitSettings) -> Split:
    """Train on older periods, validate on the next, test on the most recent. Never shuffled.

    Periods are whole days, weeks (Monday first) or months (`split.unit`); with `split.train` set
    only that many periods before validation train (a rolling window), else every older one."""
    ts = pd.to_datetime(df[S.TIMESTAMP])
    period = periods_of(ts, split.unit)
    periods = sorted(period.unique())
    need = split.periods_needed
    if len(periods) < need:
        train_part = f"{split.train}" if split.train else f"at least {split.min_train}"
        raise DataError(f"time-based split needs at least {need} {split.unit} of data "
                        f"({train_part} train + {split.validation} validation + {split.test} test); "
                        f"the batch covers {len(periods)}")
    test_p = periods[-split.test:]
    val_p = periods[-(split.test + split.validation):-split.test]
    older = periods[:-(split.test + split.validation)]
    train_p = older[-split.train:] if split.train else older
    order = np.argsort(ts.to_numpy(), kind="stable")
    df = df.iloc[order].reset_index(drop=True)
    period = period.iloc[order].reset_index(drop=True)
    return Split(
        train=df[period.isin(train_p)].reset_index(drop=True),
        validation=df[period.isin(val_p)].reset_index(drop=True),
        test=df[period.isin(test_p)].reset_index(drop=True),
        months={"train": train_p, "validation": val_p, "test": test_p},
    )
