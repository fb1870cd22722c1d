"""Loading, the time split and the content hash."""
import pytest

from retrainer import schema as S
from retrainer.dataio import content_hash, load_batch, time_split
from retrainer.errors import DataError
from retrainer.settings import SplitSettings


def test_time_split_never_mixes_months(months):
    df = load_batch(months).sample(frac=1, random_state=0)  # shuffled input
    sp = time_split(df, SplitSettings(validation_months=1, test_months=2))
    assert sp.months == {"train": ["2024-01", "2024-02", "2024-03"], "validation": ["2024-04"],
                         "test": ["2024-05", "2024-06"]}
    assert sp.train[S.TIMESTAMP].max() < sp.validation[S.TIMESTAMP].min()
    assert sp.validation[S.TIMESTAMP].max() < sp.test[S.TIMESTAMP].min()
    assert len(sp.train) + len(sp.validation) + len(sp.test) == len(df)


def test_split_needs_enough_months(months):
    df = load_batch(months / "admissions_2024_01.parquet")
    with pytest.raises(DataError, match="needs at least 3 months"):
        time_split(df, SplitSettings())


def test_content_hash_ignores_file_layout_but_not_values(months):
    df = load_batch(months)
    assert content_hash(df) == content_hash(df.copy())
    changed = df.copy()
    changed.loc[0, "age"] = changed.loc[0, "age"] + 1
    assert content_hash(changed) != content_hash(df)
