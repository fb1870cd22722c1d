"""The prediction store's contract: one suite, run on every location the store supports.

`tests/unit/test_predstore_local.py` runs it on a local directory and `tests/aws/test_predstore_s3.py`
on an S3 prefix of moto's server over HTTP. Each of those modules imports these tests and defines
two fixtures: `new_store(name="store", compression="zstd")`, a fresh empty `PredictionStore`, and
`objects(store)`, every stored file or object as (path relative to the store's root, bytes) -- what
the identifier scan reads, byte for byte. Same calls, same results, same errors on both.
"""
from __future__ import annotations

import io
import re
import threading
import time
from datetime import date, datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sklearn.metrics import roc_auc_score

from retrainer import datagen, deid, predstore
from retrainer import schema as S
from retrainer.errors import DataError
from retrainer.predstore import PredictionStore, PredictionStoreProtocol
from retrainer.serving.buffer import BufferedPredictionWriter

KEY = b"store-test-key-0123456789abcdef"
HEX32 = re.compile(r"^[0-9a-f]{32}$")
DAYS = ("2024-03-01", "2024-03-02", "2024-03-04")
VARIANTS = ("production", "canary")


@pytest.fixture(scope="module")
def raw() -> pd.DataFrame:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        paths = datagen.generate(tmp, datagen.GenerationSpec(months=2, rows_per_month=180, seed=11))
        frame = pd.concat([pd.read_parquet(p) for p in paths], ignore_index=True)
    # A few rows that exercise the coarsening rules.
    frame.loc[0, "age"] = 95
    frame.loc[1, "zip_code"] = "03642"
    return frame


@pytest.fixture
def ps() -> deid.Pseudonymizer:
    return deid.Pseudonymizer(KEY)


def scores_for(frame: pd.DataFrame, seed: int = 0) -> np.ndarray:
    """Informative but imperfect scores (AUC around 0.8)."""
    rng = np.random.default_rng(seed)
    return np.clip(0.25 * frame[S.LABEL].to_numpy() + rng.random(len(frame)) * 0.75, 0, 1)


def fill(store: PredictionStore, raw: pd.DataFrame, ps) -> pd.DataFrame:
    """Append `raw` in chunks over several days and variants; returns what was sent, per row."""
    sent = []
    chunks = np.array_split(np.arange(len(raw)), 6)
    for i, idx in enumerate(chunks):
        part = raw.iloc[idx]
        variant = VARIANTS[i % 2]
        day = pd.Timestamp(DAYS[i % len(DAYS)], tz="UTC")
        ts = day + pd.to_timedelta(np.linspace(0, 86_399, len(part)).astype(int), unit="s")
        scores = scores_for(part, seed=i)
        latency = np.linspace(5, 50 + 10 * i, len(part))
        errors = np.zeros(len(part), dtype=bool)
        if variant == "canary":
            errors[:3] = True
        n = store.append(part.drop(columns=[S.LABEL]), scores, version=f"1.{i % 2}.0", variant=variant,
                         latency_ms=latency, ts=ts, pseudonymizer=ps, error=errors)
        assert n == len(part)
        sent.append(pd.DataFrame({S.ADMISSION_ID: part[S.ADMISSION_ID].to_numpy(), "variant": variant,
                                  "score": scores, "label": part[S.LABEL].to_numpy(), "latency": latency,
                                  "error": errors, "ts": ts}))
    return pd.concat(sent, ignore_index=True)


# -- the identifier scan --------------------------------------------------------------------------

def identifier_values(frame: pd.DataFrame) -> set[str]:
    values: set[str] = set()
    for col in ("patient_name", "mrn", "phone", "email", "street_address", "patient_id", S.ADMISSION_ID,
                "zip_code"):
        values.update(frame[col].dropna().astype(str))
    dob = pd.to_datetime(frame["date_of_birth"])
    for fmt in ("%Y-%m-%d", "%m/%d/%Y", "%Y%m%d"):
        values.update(dob.dt.strftime(fmt))
    return values


def scan_for_identifiers(objects: list[tuple[str, bytes]], secrets: set[str],
                         extra_bytes: tuple[bytes, ...] = ()) -> list[str]:
    """Every way an identifier could show up in the stored `objects` ((relative path, bytes));
    returns what was found.

    Raw bytes: long values as plain substrings; every value as Parquet PLAIN (4-byte length prefix)
    and Thrift statistics (1-byte length prefix) encodings, which also catches short 5-digit ZIPs
    without false hits inside hex pseudonyms. Parquet read back: exact cell matches in every column
    and substrings in every non-pseudonym text column; pseudonym columns must be 32 hex chars.
    """
    found: list[str] = []
    encoded = [(s, s.encode()) for s in secrets]
    assert objects, "nothing written"
    for rel, data in objects:
        # A value is in a path as a whole name part, or (8+ chars) anywhere in it; a short ZIP inside
        # a random hex file name is not a leak.
        parts = set(re.split(r"[^A-Za-z0-9@]+", rel))
        found += [f"path {rel}: {s}" for s in secrets if s in parts or (len(s) >= 8 and s in rel)]
        for s, b in encoded:
            if (len(b) >= 8 and b in data) or len(b).to_bytes(4, "little") + b in data \
                    or bytes([len(b)]) + b in data:
                found.append(f"bytes {rel}: {s}")
        found += [f"bytes {rel}: extra" for b in extra_bytes if b in data]
        if not rel.endswith(".parquet"):
            continue
        table = pq.read_table(io.BytesIO(data))
        # metadata holds file names (a compact file's `retrainer.replaces`): matched like a path, so a
        # short ZIP inside a random hex name is not a leak
        meta = " ".join((k + b" " + v).decode("utf-8", "replace") for k, v in (table.schema.metadata or {}).items())
        tokens = set(re.split(r"[^A-Za-z0-9@]+", meta))
        found += [f"metadata {rel}: {s}" for s in secrets if s in tokens or (len(s) >= 8 and s in meta)]
        frame = table.to_pandas()
        for col in frame.columns:
            values = frame[col].dropna()
            cells = set(values.astype(str))
            found += [f"cell {rel}:{col}: {s}" for s in cells & secrets]
            if col in deid.PSEUDONYM_COLUMNS:
                assert all(HEX32.match(v) for v in cells), col
            elif values.dtype == object or pd.api.types.is_string_dtype(values.dtype):
                text = "\n".join(cells)
                found += [f"text {rel}:{col}: {s}" for s in secrets if len(s) >= 6 and s in text]
    return found


def local_objects(root: Path) -> list[tuple[str, bytes]]:
    """Every file under `root` as (relative path, bytes)."""
    return [(str(p.relative_to(root)), p.read_bytes()) for p in sorted(root.rglob("*")) if p.is_file()]


def data_files(objects: list[tuple[str, bytes]]) -> list[str]:
    """The prediction data files among `objects`."""
    return [rel for rel, _ in objects
            if rel.startswith("predictions/") and predstore.is_data_file(rel.rsplit("/", 1)[-1])]


def label_files(objects, store) -> list[str]:
    return [rel for rel, _ in objects(store) if rel.startswith("labels/")]


def test_scanner_finds_identifiers_when_they_are_there(tmp_path, raw):
    """Positive control: the scan is not vacuous."""
    buf = io.BytesIO()
    raw.head(20).to_parquet(buf, compression=None)
    found = scan_for_identifiers([("leak/raw.parquet", buf.getvalue())], identifier_values(raw.head(20)))
    for col in ("patient_name", "mrn", "phone", "email", "street_address", "patient_id", "zip_code"):
        assert any(str(raw[col].iloc[3]) in f for f in found), col


@pytest.mark.parametrize("compression", [None, "zstd"])
def test_no_raw_identifier_reaches_the_store(tmp_path, raw, ps, compression, new_store, objects):
    """Every byte the store holds -- appended, buffered, shadow and error rows, labels from files
    that carry identifiers, and the compacted files -- is scanned for every raw identifier sent."""
    store = new_store(compression=compression)
    fill(store, raw, ps)
    # labels arrive in a file that also carries identifiers that must be ignored
    labels = raw[[S.ADMISSION_ID, "patient_id", "patient_name", "mrn", "email", S.LABEL]]
    labels.to_csv(tmp_path / "labels.csv", index=False)
    store.ingest_labels(tmp_path / "labels.csv", ps)
    labels.to_parquet(tmp_path / "labels.parquet")
    store.ingest_labels(tmp_path / "labels.parquet", ps)
    with BufferedPredictionWriter(store, pseudonymizer=ps, flush_rows=10, flush_seconds=None) as writer:
        for i in range(25):
            writer.add(raw.iloc[[i]], [0.5], version="2.0.0", variant="shadow", latency_ms=3.0)
        for i in range(0, 40, 4):  # rows scored in shadow, keyed by request and row, and error rows
            writer.add(raw.iloc[i:i + 4], [0.1, 0.2, 0.3, 0.4], version="2.1.0", variant="green", latency_ms=1.0,
                       shadow=True, request_id=f"req-{'abcdefghij'[i // 4]}", row=[0, 1, 2, 3])
            writer.add(raw.iloc[i:i + 4], [np.nan] * 4, version="2.0.0", variant="blue", latency_ms=1.0,
                       error=True, request_id=f"req-{'abcdefghij'[i // 4]}", row=[0, 1, 2, 3])
    before = store.read()
    store.compact(min_files=1)
    stored_objects = objects(store)
    assert any(rel.rsplit("/", 1)[-1].startswith("compact-") for rel in data_files(stored_objects))

    found = scan_for_identifiers(stored_objects, identifier_values(raw), extra_bytes=(KEY, KEY.hex().encode()))
    assert found == [], found[:5]
    stored = store.read()
    assert len(stored) == len(before)
    assert int(stored["shadow"].eq(True).sum()) == 40 and int(stored["error"].sum()) >= 40
    # and the coarsening happened
    assert stored["age"].max() == 90 and stored["age_90_plus"].sum() >= 1
    assert "000" in set(stored["zip3"].dropna())
    assert stored["zip3"].dropna().str.fullmatch(r"\d{3}").all()
    assert set(stored.columns) == set(predstore.PREDICTION_COLUMNS)
    for rel, data in stored_objects:
        meta = pq.read_schema(io.BytesIO(data)).metadata or {}
        assert set(meta) <= {b"retrainer.key_fingerprint", b"retrainer.replaces"}, rel


def test_partitioned_by_prediction_day(tmp_path, raw, ps, new_store, objects):
    store = new_store()
    fill(store, raw, ps)
    assert store.days() == [date.fromisoformat(d) for d in DAYS]
    for rel, data in objects(store):
        day, name = rel.split("/")[1:]
        assert re.fullmatch(r"part-[0-9a-f]{32}\.parquet", name), name  # no temp files left
        days = pq.read_table(io.BytesIO(data)).column("ts").to_pandas().dt.strftime("%Y-%m-%d")
        assert set(days) == {day[5:]}
    # one append spanning two days writes one file per day
    two = new_store("two")
    two.append(raw.head(4), [0.1] * 4, version="1", variant="v", latency_ms=1,
               ts=["2024-05-01T23:59:59Z"] * 2 + ["2024-05-02T00:00:00Z"] * 2, pseudonymizer=ps)
    assert sorted(rel.split("/")[1] for rel in data_files(objects(two))) == ["date=2024-05-01", "date=2024-05-02"]


def test_read_with_date_filters(tmp_path, raw, ps, new_store, objects):
    store = new_store()
    sent = fill(store, raw, ps)
    assert len(store.read()) == len(sent)
    day2 = store.read(start=date(2024, 3, 2), end=date(2024, 3, 3))
    assert len(day2) == (sent["ts"].dt.strftime("%Y-%m-%d") == "2024-03-02").sum() > 0
    assert (day2["ts"].dt.strftime("%Y-%m-%d") == "2024-03-02").all()
    assert len(store.read(start="2024-03-02")) == (sent["ts"] >= "2024-03-02").sum()
    assert len(store.read(end="2024-03-02")) == (sent["ts"] < "2024-03-02").sum()
    # time-of-day precision inside a partition, tz-aware and naive (= UTC) bounds
    noon = datetime(2024, 3, 1, 12, tzinfo=timezone.utc)
    assert len(store.read(start=noon, end="2024-03-02")) == \
        ((sent["ts"] >= noon) & (sent["ts"] < "2024-03-02")).sum()
    assert len(store.read(start=datetime(2024, 3, 1, 12))) == (sent["ts"] >= noon).sum()
    cols = store.read(start="2024-03-04", columns=["score", "variant"])
    assert list(cols.columns) == ["score", "variant"] and len(cols) > 0
    with pytest.raises(ValueError, match="patient_id"):
        store.read(columns=["patient_id"])


def test_empty_store_reads_empty_frames_with_the_right_columns(new_store):
    store = new_store("nothing")
    empty = store.read()
    assert empty.empty and list(empty.columns) == list(predstore.PREDICTION_COLUMNS)
    assert str(empty["ts"].dtype) == "datetime64[us, UTC]" and empty["score"].dtype == np.float64
    assert list(store.read(columns=["score"]).columns) == ["score"]
    assert store.labelled().empty and S.LABEL in store.labelled().columns
    assert store.variant_stats() == {}
    assert store.count_labels_since("2024-01-01") == 0
    assert isinstance(store, PredictionStoreProtocol)


def test_labelled_join_and_variant_stats(tmp_path, raw, ps, new_store, objects):
    store = new_store()
    sent = fill(store, raw, ps)
    labels = raw[[S.ADMISSION_ID, "patient_id", S.LABEL]]
    # labels for 80% of admissions, in a CSV
    known = labels.sample(frac=0.8, random_state=1)
    known.to_csv(tmp_path / "labels.csv", index=False)
    assert store.ingest_labels(tmp_path / "labels.csv", ps) == len(known)

    joined = store.labelled()
    assert set(predstore.LABELLED_COLUMNS) <= set(joined.columns)
    assert len(joined) == len(known)
    assert not set(joined.columns) & {S.ADMISSION_ID, "patient_id"}

    expected = sent[sent[S.ADMISSION_ID].isin(known[S.ADMISSION_ID])]
    stats = store.variant_stats()
    assert set(stats) == set(VARIANTS)
    for variant in VARIANTS:
        rows = sent[sent["variant"] == variant]
        lab = expected[expected["variant"] == variant]
        s = stats[variant]
        assert s["n_predictions"] == len(rows)
        assert s["n_labels"] == len(lab)
        assert s["auc"] == pytest.approx(roc_auc_score(lab["label"], lab["score"]))
        assert s["error_rate"] == pytest.approx(rows["error"].mean())
        assert s["p95_latency_ms"] == pytest.approx(np.percentile(rows["latency"], 95))
    assert stats["production"]["version"] == "1.0.0" and stats["canary"]["version"] == "1.1.0"
    assert stats["production"]["error_rate"] == 0.0 and stats["canary"]["error_rate"] > 0

    # a window: only the predictions made on March 2nd
    window = store.variant_stats(start="2024-03-02", end="2024-03-03")
    in_window = expected[expected["ts"].dt.strftime("%Y-%m-%d") == "2024-03-02"]
    assert sum(v["n_labels"] for v in window.values()) == len(in_window)


def test_auc_is_none_with_a_single_class(tmp_path, raw, ps, new_store, objects):
    store = new_store()
    part = raw.head(30)
    store.append(part, scores_for(part), version="1", variant="v", latency_ms=2, ts="2024-03-01", pseudonymizer=ps)
    part[[S.ADMISSION_ID]].assign(**{S.LABEL: 0}).to_csv(tmp_path / "l.csv", index=False)
    store.ingest_labels(tmp_path / "l.csv", ps)
    assert store.variant_stats()["v"]["auc"] is None
    assert store.variant_stats()["v"]["n_labels"] == 30


def test_latest_label_wins_and_count_since(tmp_path, raw, ps, new_store, objects):
    store = new_store()
    fill(store, raw, ps)
    labels = raw[[S.ADMISSION_ID, S.LABEL]].head(100)
    labels.to_parquet(tmp_path / "first.parquet")
    store.ingest_labels(tmp_path / "first.parquet", ps)
    between = pd.Timestamp.now(tz="UTC")
    time.sleep(0.01)
    corrected = labels.head(10).assign(**{S.LABEL: 1 - labels[S.LABEL].head(10)})
    corrected.to_csv(tmp_path / "fix.csv", index=False)
    store.ingest_labels(tmp_path / "fix.csv", ps)

    read = store.read_labels()
    assert len(read) == 100 and read[deid.ADMISSION_PSEUDONYM].is_unique
    got = dict(zip(read[deid.ADMISSION_PSEUDONYM], read[S.LABEL]))
    want = pd.concat([corrected, labels.iloc[10:]])
    for admission, label in zip(want[S.ADMISSION_ID], want[S.LABEL]):
        assert got[ps.pseudonym(admission, "admission_id")] == label
    assert store.count_labels_since(between) == 10
    assert store.count_labels_since(between - pd.Timedelta(hours=1)) == 100
    assert store.count_labels_since(pd.Timestamp.now(tz="UTC") + pd.Timedelta(seconds=1)) == 0
    # within one file, the same outcome twice is stored once
    dup = pd.DataFrame({S.ADMISSION_ID: ["Z1", "Z1"], S.LABEL: [1, 1]})
    dup.to_csv(tmp_path / "dup.csv", index=False)
    assert store.ingest_labels(tmp_path / "dup.csv", ps, unknown="keep") == 1
    assert store.read_labels().set_index(deid.ADMISSION_PSEUDONYM).loc[ps.pseudonym("Z1", "admission_id"), S.LABEL] == 1


BAD_LABEL_FILES = {
    "missing_label_column": ("labels.csv", b"admission_id,patient_id\nA1,P1\n", "lacks column"),
    "missing_id_column": ("labels.csv", b"patient_id,readmitted_30d\nP1,1\n", "lacks column"),
    "label_2": ("labels.csv", b"admission_id,readmitted_30d\nA1,1\nA2,2\n", "0 or 1"),
    "label_text": ("labels.csv", b"admission_id,readmitted_30d\nA1,yes\n", "0 or 1"),
    "label_missing": ("labels.csv", b"admission_id,readmitted_30d\nA1,\nA2,0\n", "0 or 1"),
    "id_missing": ("labels.csv", b"admission_id,readmitted_30d\n,1\n", "without admission_id"),
    "empty_file": ("labels.csv", b"", "empty"),
    "header_only": ("labels.csv", b"admission_id,readmitted_30d\n", "no rows"),
    "corrupt_parquet": ("labels.parquet", b"PAR1\x00\x13\x99garbage bytes\xff\xfePAR1", "cannot read"),
    "corrupt_csv": ("labels.csv", bytes(range(256)) * 4, None),
    "wrong_format": ("labels.json", b'{"admission_id": "A1"}', "unsupported"),
}


@pytest.mark.parametrize("case", sorted(BAD_LABEL_FILES))
def test_bad_label_files_raise_data_error_and_write_nothing(tmp_path, ps, case, new_store, objects):
    name, content, match = BAD_LABEL_FILES[case]
    path = tmp_path / "in" / name
    path.parent.mkdir()
    path.write_bytes(content)
    store = new_store("store")
    with pytest.raises(DataError, match=match) as err:
        store.ingest_labels(path, ps)
    assert "\n" not in str(err.value)
    assert objects(store) == []


def test_label_values_in_other_spellings_are_accepted(tmp_path, ps, new_store, objects):
    store = new_store()
    pd.DataFrame({S.ADMISSION_ID: ["A1", "A2", "A3"], S.LABEL: [True, False, True]}).to_parquet(tmp_path / "b.parquet")
    (tmp_path / "f.csv").write_text("admission_id,readmitted_30d\nA4, 1.0\nA5,0\n")
    assert store.ingest_labels(tmp_path / "b.parquet", ps, unknown="keep") == 3
    assert store.ingest_labels(tmp_path / "f.csv", ps, unknown="keep") == 2
    assert sorted(store.read_labels()[S.LABEL]) == [0, 0, 1, 1, 1]


def test_concurrent_appends_lose_no_rows(tmp_path, raw, ps, new_store, objects):
    store = new_store()
    errors: list[BaseException] = []
    n_threads, per_thread, rows = 8, 12, 3

    def work(t: int):
        try:
            for i in range(per_thread):
                start = (t * per_thread + i) * rows % (len(raw) - rows)
                part = raw.iloc[start:start + rows]
                store.append(part, [0.3] * rows, version="1", variant=f"v{t % 2}", latency_ms=1.0,
                             ts=f"2024-03-0{1 + i % 3}T10:00:00Z", pseudonymizer=ps)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(n_threads)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == []
    assert len(store.read()) == n_threads * per_thread * rows
    assert len(data_files(objects(store))) == n_threads * per_thread


def test_buffered_writer_batches_and_flushes_everything_on_close(tmp_path, raw, ps, new_store, objects):
    store = new_store()
    writer = BufferedPredictionWriter(store, pseudonymizer=ps, flush_rows=16, flush_seconds=None)
    per_thread = 25

    def work(t: int):
        for i in range(per_thread):
            writer.add(raw.iloc[[t * per_thread + i]], [0.4], version="1", variant="prod",
                       latency_ms=2.0, ts="2024-03-01T08:00:00Z")

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    writer.close()
    assert writer.pending == 0
    stored = store.read()
    assert len(stored) == 4 * per_thread
    assert stored[deid.ADMISSION_PSEUDONYM].is_unique
    assert len(data_files(objects(store))) <= 4 * per_thread // 16 + 1
    with pytest.raises(RuntimeError, match="closed"):
        writer.add(raw.iloc[[0]], [0.4], version="1", variant="prod", latency_ms=2.0)


def test_write_records_refuses_rows_that_were_not_deidentified(tmp_path, raw, new_store, objects):
    store = new_store()
    base = raw.head(2).assign(ts=pd.Timestamp("2024-03-01", tz="UTC"), variant="v", version="1",
                              score=0.5, latency_ms=1.0, error=False)
    with pytest.raises(DataError, match="pseudonyms"):
        store.write_records(base.assign(admission_pseudonym=base[S.ADMISSION_ID]))
    with pytest.raises(DataError, match="90"):
        store.write_records(base.assign(age=[95, 40]))
    with pytest.raises(DataError, match="zip3"):
        store.write_records(base.assign(age=[50, 40], zip3=base["zip_code"]))
    assert objects(store) == []


def test_errored_predictions_without_score_count_in_error_rate_not_in_auc(tmp_path, raw, ps, new_store, objects):
    store = new_store()
    part = raw.head(40)
    scores = scores_for(part)
    scores[:4] = np.nan
    errors = np.zeros(40, dtype=bool)
    errors[:4] = True
    store.append(part, scores, version="1", variant="v", latency_ms=2, ts="2024-03-01",
                 pseudonymizer=ps, error=errors)
    part[[S.ADMISSION_ID, S.LABEL]].to_csv(tmp_path / "l.csv", index=False)
    store.ingest_labels(tmp_path / "l.csv", ps)
    s = store.variant_stats()["v"]
    assert s["error_rate"] == pytest.approx(0.1) and s["n_labels"] == 36
    assert s["auc"] == pytest.approx(roc_auc_score(part[S.LABEL].iloc[4:], scores[4:]))
    assert len(store.labelled()) == 40  # the join keeps them; filter on `error` / score if needed


def targeted_world(store: PredictionStore, raw: pd.DataFrame, ps, tmp: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Routed (untargeted) predictions for blue and green with informative scores, plus targeted
    predictions on green whose scores are exactly wrong; every admission labelled. Returns the
    routed and the targeted rows as sent (admission id, variant, score, label)."""
    n = len(raw) // 3
    routed, targeted = raw.iloc[:2 * n], raw.iloc[2 * n:3 * n]
    sent = []
    for variant, part in (("blue", routed.iloc[:n]), ("green", routed.iloc[n:])):
        scores = scores_for(part, seed=len(sent))
        store.append(part.drop(columns=[S.LABEL]), scores, version="1.0.0", variant=variant, latency_ms=3.0,
                     ts="2024-03-01T10:00:00Z", pseudonymizer=ps)
        sent.append(pd.DataFrame({S.ADMISSION_ID: part[S.ADMISSION_ID].to_numpy(), "variant": variant,
                                  "score": scores, S.LABEL: part[S.LABEL].to_numpy()}))
    wrong = 1.0 - targeted[S.LABEL].to_numpy(dtype=float)
    store.append(targeted.drop(columns=[S.LABEL]).assign(**{predstore.TARGETED: True}), wrong, version="1.0.0",
                 variant="green", latency_ms=3.0, ts="2024-03-01T11:00:00Z", pseudonymizer=ps)
    raw.iloc[:3 * n][[S.ADMISSION_ID, S.LABEL]].to_csv(tmp / "labels.csv", index=False)
    store.ingest_labels(tmp / "labels.csv", ps)
    return (pd.concat(sent, ignore_index=True),
            pd.DataFrame({S.ADMISSION_ID: targeted[S.ADMISSION_ID].to_numpy(), "variant": "green", "score": wrong,
                          S.LABEL: targeted[S.LABEL].to_numpy()}))


def test_targeted_rows_are_left_out_of_labelled_and_the_canary_interval(tmp_path, raw, ps, new_store, objects):
    from retrainer.rollout import window_stats
    from retrainer.rollout.statistics import auc_difference_ci

    store = new_store()
    routed, targeted = targeted_world(store, raw, ps, tmp_path)
    assert int(store.read()[predstore.TARGETED].eq(True).sum()) == len(targeted)

    joined = store.labelled()
    assert len(joined) == len(routed) and not joined[predstore.TARGETED].eq(True).any()
    assert len(store.labelled(include_targeted=True)) == len(routed) + len(targeted)  # the explicit opt-in

    day = datetime(2024, 3, 1, tzinfo=timezone.utc)
    stats, ci = window_stats(store, day, day + pd.Timedelta(days=1))
    g, b = routed[routed["variant"] == "green"], routed[routed["variant"] == "blue"]
    want = auc_difference_ci(g[S.LABEL].to_numpy(), g["score"].to_numpy(), b[S.LABEL].to_numpy(), b["score"].to_numpy())
    assert ci == pytest.approx(want)  # the DeLong inputs are the routed rows only
    assert ci["auc_candidate"] == pytest.approx(roc_auc_score(g[S.LABEL], g["score"]))
    assert stats["green"]["n_labels"] == len(g) and stats["green"]["n_predictions"] == len(g)
    assert stats["green"]["auc"] == pytest.approx(ci["auc_candidate"])


def test_targeted_rows_are_left_out_of_the_triggers_windows(tmp_path, raw, ps, new_store, objects):
    from types import SimpleNamespace

    from retrainer.errors import RetrainerError
    from retrainer.settings import Settings
    from retrainer.triggers import collect_inputs, parse_triggers

    store = new_store()
    routed, _ = targeted_world(store, raw, ps, tmp_path)
    prod = SimpleNamespace(version="1.0.0", metrics={"candidate": {"auc": 0.9}}, created_at="2024-01-01T00:00:00+00:00")

    def no_profile(version):
        raise RetrainerError("no profile in this test")

    registry = SimpleNamespace(production=lambda: prod, list=lambda: [prod], verify=no_profile)
    config = parse_triggers({"retraining_triggers": [
        {"name": "perf", "type": "performance_degradation", "priority": 1, "threshold": 0.7, "window": "1d",
         "consecutive_windows": 1, "min_labels": 10},
        {"name": "concept", "type": "concept_drift", "priority": 2, "min_drop": 0.05, "window": "1d", "min_labels": 10},
        {"name": "drift", "type": "data_drift", "priority": 3}]})
    now = datetime(2024, 3, 2, tzinfo=timezone.utc)
    inputs = collect_inputs(config, registry, store, Settings(home=tmp_path / "home"), now)
    want = roc_auc_score(routed[S.LABEL], routed["score"])
    for window in (inputs.performance_windows["perf"][0], inputs.concept_windows["concept"]):
        assert window.n == len(routed) and window.auc == pytest.approx(want)
    assert inputs.drift_window_rows == len(routed)


def _scored(new_store, raw, ps, n=20, ts="2024-03-01T10:00:00Z"):
    store = new_store("store")
    part = raw.head(n)
    store.append(part, scores_for(part), version="1", variant="v", latency_ms=1, ts=ts, pseudonymizer=ps)
    return store, part


def test_conflicting_duplicate_labels_are_refused(tmp_path, raw, ps, new_store, objects):
    store, part = _scored(new_store, raw, ps)
    ids = part[S.ADMISSION_ID].tolist()
    pd.DataFrame({S.ADMISSION_ID: [ids[0], ids[1], ids[0]], S.LABEL: [0, 1, 1]}).to_csv(tmp_path / "l.csv", index=False)
    want = r"1 admission\(s\) listed more than once with different labels \(lines 2, 4\)"
    with pytest.raises(DataError, match=want) as e:
        store.ingest_labels(tmp_path / "l.csv", ps)
    assert ids[0] not in str(e.value) and label_files(objects, store) == []


def test_labels_for_admissions_never_scored(tmp_path, raw, ps, new_store, objects):
    store, part = _scored(new_store, raw, ps, n=10)
    labels = raw.iloc[:14][[S.ADMISSION_ID, S.LABEL]]  # 4 admissions were never scored
    labels.to_csv(tmp_path / "l.csv", index=False)
    with pytest.raises(DataError, match="4 of 14 admission.s. have no prediction in the store") as e:
        store.ingest_labels(tmp_path / "l.csv", ps)
    assert not any(a in str(e.value) for a in labels[S.ADMISSION_ID]) and label_files(objects, store) == []
    assert store.ingest_labels(tmp_path / "l.csv", ps, unknown="skip") == 10
    assert store.ingest_labels(tmp_path / "l.csv", ps, unknown="keep") == 14
    with pytest.raises(DataError, match="use refuse, skip or keep"):
        store.ingest_labels(tmp_path / "l.csv", ps, unknown="maybe")


def test_an_outcome_known_before_its_prediction_is_refused(tmp_path, raw, ps, new_store, objects):
    store, part = _scored(new_store, raw, ps, n=5, ts="2024-03-01T10:00:00Z")
    base = part[[S.ADMISSION_ID, S.LABEL]].copy()
    base.assign(outcome_at=["2024-03-20T00:00:00Z"] * 4 + ["2024-02-28T00:00:00Z"]).to_csv(tmp_path / "a.csv",
                                                                                          index=False)
    with pytest.raises(DataError, match="1 outcome.s. known before their admission's first prediction"):
        store.ingest_labels(tmp_path / "a.csv", ps)
    base.assign(outcome_at=["2999-01-01T00:00:00Z"] * 5).to_csv(tmp_path / "b.csv", index=False)
    with pytest.raises(DataError, match="5 outcome_at time.s. lie in the future"):
        store.ingest_labels(tmp_path / "b.csv", ps)
    base.assign(outcome_at=["yesterday-ish"] * 5).to_csv(tmp_path / "c.csv", index=False)
    with pytest.raises(DataError, match="outcome_at must be a time"):
        store.ingest_labels(tmp_path / "c.csv", ps)
    assert label_files(objects, store) == []
    base.assign(outcome_at=["2024-03-01T10:00:00Z"] * 5).to_csv(tmp_path / "ok.csv", index=False)  # same instant
    assert store.ingest_labels(tmp_path / "ok.csv", ps) == 5

# -- compaction -----------------------------------------------------------------------------------

def _sorted(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sort_values(["ts", deid.ADMISSION_PSEUDONYM, "variant"], kind="stable").reset_index(drop=True)


def test_compaction_merges_small_files_without_changing_what_is_read(tmp_path, raw, ps, new_store, objects):
    store = new_store()
    with BufferedPredictionWriter(store, pseudonymizer=ps, flush_rows=3, flush_seconds=None) as writer:
        for i in range(60):  # small files, as the endpoint's capture writes them
            writer.add(raw.iloc[[i]], [i / 100], version="1", variant="blue", latency_ms=1.0,
                       ts=f"2024-03-0{1 + i % 2}T{i % 24:02d}:00:00Z")
    raw.head(60)[[S.ADMISSION_ID, S.LABEL]].to_csv(tmp_path / "l.csv", index=False)
    store.ingest_labels(tmp_path / "l.csv", ps)
    before, stats_before = _sorted(store.read()), store.variant_stats()
    small = len(data_files(objects(store)))
    assert small >= 20

    report = store.compact(max_rows=25, row_group_rows=10)
    assert report["days"] == ["2024-03-01", "2024-03-02"] and report["files_in"] == small
    assert report["rows"] == 60 and report["files_out"] == 4  # 30 rows a day, at most 25 per file
    names = [rel.rsplit("/", 1)[-1] for rel in data_files(objects(store))]
    assert len(names) == 4 and all(n.startswith("compact-") for n in names)
    pd.testing.assert_frame_equal(_sorted(store.read()), before)
    assert store.variant_stats() == stats_before
    assert len(store.labelled()) == 60
    # nothing left to merge: a second run changes nothing
    again = store.compact(max_rows=25)
    assert again["files_in"] == 0 and len(data_files(objects(store))) == 4


def test_a_compaction_stopped_before_deleting_its_inputs_double_counts_nothing(raw, ps, new_store, objects):
    """The compact file is written first, listing what it replaces; a crash before the deletes
    leaves the old files, which readers skip and the next compaction deletes."""
    store = new_store()
    for i in range(5):
        store.append(raw.iloc[[i]], [0.1 * i], version="1", variant="blue", latency_ms=1.0,
                     ts=f"2024-03-01T0{i}:00:00Z", pseudonymizer=ps)
    kept = {rel: data for rel, data in objects(store)}
    before = _sorted(store.read())
    store.compact()
    # put the deleted inputs back, as if the compaction had stopped before deleting them
    for rel, data in kept.items():
        day, name = rel.split("/")[1:]
        store.location.fs.create_dir(store.location.path(f"predictions/{day}"), recursive=True)
        with store.location.fs.open_output_stream(store.location.path(rel)) as out:
            out.write(data)
    assert len(data_files(objects(store))) == 6
    fresh = PredictionStore(store.location)  # another process: no cache of what was replaced
    pd.testing.assert_frame_equal(_sorted(fresh.read()), before)
    assert fresh.compact()["leftovers_deleted"] == 5
    assert len(data_files(objects(store))) == 1
    pd.testing.assert_frame_equal(_sorted(fresh.read()), before)


def test_compaction_keeps_rows_of_different_pseudonym_keys_apart(tmp_path, raw, ps, new_store, objects):
    store = new_store()
    other = deid.Pseudonymizer(b"another-key-for-the-rotation-0123")
    for i, key in enumerate([ps, ps, other, other, ps]):
        store.append(raw.iloc[[i]], [0.5], version="1", variant="blue", latency_ms=1.0,
                     ts="2024-03-01T10:00:00Z", pseudonymizer=key)
    assert store.compact()["files_out"] == 2
    fingerprints = sorted(pq.read_schema(io.BytesIO(data)).metadata[b"retrainer.key_fingerprint"].decode()
                          for _, data in objects(store))
    assert fingerprints == sorted([ps.fingerprint, other.fingerprint])
    assert len(store.read()) == 5


def test_scan_streams_the_same_rows_as_read(raw, ps, new_store):
    store = new_store()
    fill(store, raw, ps)
    store.append(raw.head(6).assign(**{predstore.TARGETED: True}), [0.9] * 6, version="1.0.0", variant="production",
                 latency_ms=1.0, ts="2024-03-02T12:00:00Z", pseudonymizer=ps)
    stream = store.scan("2024-03-02", "2024-03-05", where=predstore.traffic_filter("1.0.0"), batch_rows=7)
    batches = list(stream.batches(["ts", "score", "version"]))
    assert len(batches) > 1 and all(b.num_rows <= 7 for b in batches)
    got = pa.Table.from_batches(batches).to_pandas().sort_values(["ts", "score"]).reset_index(drop=True)
    frame = store.read("2024-03-02", "2024-03-05")
    want = frame[(frame["version"] == "1.0.0") & ~frame[predstore.TARGETED].fillna(False).astype(bool)]
    want = want[["ts", "score", "version"]].sort_values(["ts", "score"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(got, want)
    assert stream.count() == len(want) > 0
    assert store.scan("2030-01-01").count() == 0


def test_check_passes_on_a_writable_store_and_leaves_nothing(new_store, objects):
    store = new_store()
    store.check()
    assert objects(store) == []
