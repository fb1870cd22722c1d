"""The prediction store on a local directory: the contract suite (`tests/store_contract.py`,
shared with the S3 store) plus what only a local directory has: file modes, temp files of
killed writers, the durability of buffered writes."""
from __future__ import annotations

import os
import time
from pathlib import Path

import pandas as pd
import pytest

from retrainer import schema as S
from retrainer.errors import DataError
from retrainer.predstore import PredictionStore
from retrainer.serving.buffer import BufferedPredictionWriter
from tests.store_contract import *  # noqa: F403 - the contract suite runs here on a local directory
from tests.store_contract import local_objects


@pytest.fixture
def new_store(tmp_path):
    def make(name: str = "store", compression: str | None = "zstd") -> PredictionStore:
        return PredictionStore(tmp_path / name, compression=compression)
    return make


@pytest.fixture
def objects():
    return lambda store: local_objects(store.root) if store.root.exists() else []


def test_half_written_files_are_ignored(tmp_path, raw, ps):
    store = PredictionStore(tmp_path)
    store.append(raw.head(5), [0.2] * 5, version="1", variant="v", latency_ms=1, ts="2024-03-01", pseudonymizer=ps)
    (tmp_path / "predictions" / "date=2024-03-01" / ".part-deadbeef.parquet.tmp").write_bytes(b"PAR1 half")
    assert len(store.read()) == 5


def test_missing_label_file_is_a_data_error(tmp_path, ps):
    with pytest.raises(DataError, match="does not exist"):
        PredictionStore(tmp_path).ingest_labels(tmp_path / "nope.csv", ps)


def test_buffered_writer_flushes_on_time(tmp_path, raw, ps):
    store = PredictionStore(tmp_path)
    with BufferedPredictionWriter(store, pseudonymizer=ps, flush_rows=10_000, flush_seconds=0.05) as writer:
        writer.add(raw.head(3), [0.1, 0.2, 0.3], version="1", variant="prod", latency_ms=[1, 2, 3])
        deadline = time.monotonic() + 5
        while writer.pending and time.monotonic() < deadline:
            time.sleep(0.02)
        assert writer.pending == 0
        assert len(store.read()) == 3


def test_buffered_writer_keeps_rows_when_a_write_fails(tmp_path, raw, ps):
    class Flaky:
        def __init__(self):
            self.fail, self.frames = True, []

        def write_records(self, records):
            if self.fail:
                raise OSError("disk full")
            self.frames.append(records)
            return len(records)

    flaky = Flaky()
    writer = BufferedPredictionWriter(flaky, pseudonymizer=ps, flush_rows=100, flush_seconds=None)
    writer.add(raw.head(5), [0.1] * 5, version="1", variant="prod", latency_ms=1)
    with pytest.raises(OSError):
        writer.flush()
    assert writer.pending == 5
    flaky.fail = False
    writer.close()
    assert sum(len(f) for f in flaky.frames) == 5


def test_append_validates_its_arguments(tmp_path, raw, ps):
    store = PredictionStore(tmp_path)
    with pytest.raises(ValueError, match="scores"):
        store.append(raw.head(3), [0.1, 0.2], version="1", variant="v", latency_ms=1, pseudonymizer=ps)
    with pytest.raises(ValueError, match="ts"):
        store.append(raw.head(3), [0.1] * 3, version="1", variant="v", latency_ms=1, ts=["2024-01-01"],
                     pseudonymizer=ps)
    with pytest.raises(ValueError, match="variant"):
        store.append(raw.head(3), [0.1] * 3, version="1", variant="", latency_ms=1, pseudonymizer=ps)
    with pytest.raises(DataError, match="age"):
        store.append(raw.head(2).assign(age=["old", "young"]), [0.1] * 2, version="1", variant="v",
                     latency_ms=1, pseudonymizer=ps)
    assert store.append(raw.head(0), [], version="1", variant="v", latency_ms=1, pseudonymizer=ps) == 0
    assert not tmp_path.joinpath("predictions").exists()
    # ts defaults to now, in UTC
    before = pd.Timestamp.now(tz="UTC")
    store.append(raw.head(1), [0.5], version="1", variant="v", latency_ms=1, pseudonymizer=ps)
    assert store.read()["ts"].iloc[0] >= before.floor("us")


def test_buffered_writer_rejects_bad_rows_at_add_time(tmp_path, raw, ps):
    store = PredictionStore(tmp_path)
    with BufferedPredictionWriter(store, pseudonymizer=ps, flush_rows=100, flush_seconds=None) as writer:
        with pytest.raises(DataError, match="age"):
            writer.add(raw.head(1).assign(age=["old"]), [0.1], version="1", variant="v", latency_ms=1)
        writer.add(raw.head(2), [0.1, 0.2], version="1", variant="v", latency_ms=1)
        assert writer.pending == 2
    assert len(store.read()) == 2


# ------------------------------------------------------------------------------------------------
# Permissions: the store is PHI-adjacent

@pytest.mark.parametrize("umask", [0o022, 0o000, 0o277], ids=["umask022", "umask000", "umask277"])
def test_store_files_are_0600_and_directories_0700_whatever_the_umask(tmp_path, raw, ps, umask):
    root = tmp_path / "new-home"  # the store creates its root
    old = os.umask(umask)
    try:
        store = PredictionStore(root)
        store.append(raw.head(3), [0.1, 0.2, 0.3], version="1", variant="prod", latency_ms=1.0,
                     ts=["2026-01-01T10:00:00Z", "2026-01-02T10:00:00Z", "2026-01-02T11:00:00Z"], pseudonymizer=ps)
        with BufferedPredictionWriter(store, pseudonymizer=ps, flush_rows=100, flush_seconds=None) as writer:
            writer.add(raw.head(2), [0.1, 0.2], version="1", variant="prod", latency_ms=1.0)
        labels = tmp_path / "labels.csv"
        raw.head(3)[[S.ADMISSION_ID, S.LABEL]].to_csv(labels, index=False)
        store.ingest_labels(labels, ps)
    finally:
        os.umask(old)
    files = [p for p in root.rglob("*") if p.is_file()]
    dirs = [root, *(p for p in root.rglob("*") if p.is_dir())]
    assert len(files) == 4  # two prediction days, one buffered file, one label file
    assert {p.parent.name for p in files} >= {"date=2026-01-01", "labels"}
    assert {oct(p.stat().st_mode & 0o777) for p in files} == {"0o600"}
    assert {oct(p.stat().st_mode & 0o777) for p in dirs} == {"0o700"}


def test_existing_world_readable_store_directories_are_tightened(tmp_path, raw, ps):
    (tmp_path / "predictions" / "date=2026-01-01").mkdir(parents=True, mode=0o755)
    (tmp_path / "predictions").chmod(0o755)
    PredictionStore(tmp_path).append(raw.head(1), [0.1], version="1", variant="prod", latency_ms=1.0,
                                     ts="2026-01-01T10:00:00Z", pseudonymizer=ps)
    assert (tmp_path / "predictions").stat().st_mode & 0o777 == 0o700
    assert (tmp_path / "predictions" / "date=2026-01-01").stat().st_mode & 0o777 == 0o700


# -- targeted predictions (the variant chosen by header) ------------------------------------------

# -- temp files of killed writers -----------------------------------------------------------------

def plant(path: Path, age_s: float = 0.0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"PAR1 half")
    if age_s:
        old = time.time() - age_s
        os.utime(path, (old, old))
    return path


def test_first_write_sweeps_stale_temp_files_of_its_own_pattern_only(tmp_path, raw, ps):
    home = tmp_path / "home"
    PredictionStore(home).append(raw.head(5), [0.2] * 5, version="1", variant="v", latency_ms=1, ts="2024-03-01",
                                 pseudonymizer=ps)
    kept_part = next((home / "predictions" / "date=2024-03-01").glob("part-*.parquet"))
    day = home / "predictions" / "date=2024-03-01"
    hour = 3600.0
    stale = [plant(day / ".part-0badc0de.parquet.tmp", hour),
             plant(home / "labels" / ".part-0ddba11.parquet.tmp", hour),
             plant(home / "predictions" / "date=2023-12-31" / ".part-feed.parquet.tmp", hour)]
    kept = [plant(day / ".part-11fe.parquet.tmp"),  # young: maybe another process's write in progress
            plant(day / "notes.txt", hour), plant(day / ".other.tmp", hour),  # not the store's pattern
            plant(home / ".part-outside.parquet.tmp", hour),  # not in a store directory
            plant(home / "registry" / ".part-outside.parquet.tmp", hour),
            plant(home / "predictions" / ".part-top.parquet.tmp", hour), kept_part]

    store = PredictionStore(home)
    assert all(p.exists() for p in stale)  # opening alone writes nothing
    store.append(raw.head(3), [0.3] * 3, version="1", variant="v", latency_ms=1, ts="2024-03-02", pseudonymizer=ps)
    assert [p for p in stale if p.exists()] == []
    assert [p for p in kept if not p.exists()] == []
    assert len(store.read()) == 8
    plant(day / ".part-later.parquet.tmp", hour)
    assert store.sweep_stale_temp_files() == 1


def test_label_ingest_sweeps_too(tmp_path, raw, ps):
    stale = plant(tmp_path / "labels" / ".part-0ddba11.parquet.tmp", 3600.0)
    raw.head(10)[[S.ADMISSION_ID, S.LABEL]].to_csv(tmp_path / "l.csv", index=False)
    assert PredictionStore(tmp_path).ingest_labels(tmp_path / "l.csv", ps, unknown="keep") == 10
    assert not stale.exists() and (tmp_path / "l.csv").exists()
