"""The lead-scoring example generator and data generation by model (`data.generator` in the spec)."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from examples.lead_scoring.datagen import generate
from retrainer import spec
from retrainer.datagen import GenerationSpec, generate_for_model, generate_model_data
from retrainer.datagen import generate as generate_admissions
from retrainer.drift import ReferenceProfile
from retrainer.settings import DriftSettings

C = spec.contract("lead-scoring")
DTYPES = {"string": "string", "float": "float64", "int": "int64", "bool": "bool"}


def test_deterministic_and_day_k_independent_of_periods(tmp_path):
    a = generate(tmp_path / "a", periods=3, rows_per_period=200, seed=5)
    b = generate(tmp_path / "b", periods=3, rows_per_period=200, seed=5)
    c = generate(tmp_path / "c", periods=1, rows_per_period=200, seed=5, start="2024-03-06")
    for x, y in zip(a, b):
        pd.testing.assert_frame_equal(pd.read_parquet(x), pd.read_parquet(y))
    assert [p.name for p in a] == ["leads_2024_03_04.parquet", "leads_2024_03_05.parquet", "leads_2024_03_06.parquet"]
    longer = generate(tmp_path / "d", periods=5, rows_per_period=200, seed=5)
    pd.testing.assert_frame_equal(pd.read_parquet(a[2]), pd.read_parquet(longer[2]))
    other = generate(tmp_path / "e", periods=1, rows_per_period=200, seed=6)
    assert not pd.read_parquet(other[0]).equals(pd.read_parquet(a[0]))
    assert len(c) == 1


def test_contract_columns_dtypes_ranges_and_unique_ids(tmp_path):
    df = pd.concat([pd.read_parquet(p) for p in generate(tmp_path, periods=7, rows_per_period=300)],
                   ignore_index=True)
    assert list(df.columns) == list(C.COLUMN_TYPES)
    for col, kind in C.COLUMN_TYPES.items():
        if kind in DTYPES:
            assert str(df[col].dtype) == DTYPES[kind], col
    assert str(df["lead_ts"].dtype).startswith("datetime64") and df["lead_ts"].dt.tz is None
    assert len(C.FEATURES) == 51
    for col, (lo, hi) in C.NUMERIC_RANGES.items():
        s = df[col].dropna()
        assert s.between(lo, hi).all(), col
    for col, values in C.CATEGORIES.items():
        assert set(df[col].dropna()) <= set(values), col
    assert set(df["lead_score"]) == {1, 2, 3, 4, 5}
    assert df["lead_id"].is_unique
    assert df["account_id"].nunique() < len(df)  # accounts repeat across leads
    assert 0.3 < df["nps_score"].isna().mean() < 0.5
    assert df.drop(columns=["nps_score"]).notna().all().all()
    day = pd.read_parquet(generate(tmp_path / "one", periods=1, rows_per_period=50)[0])
    assert (day["lead_ts"].dt.normalize() == pd.Timestamp("2024-03-04")).all()


def test_weekend_days_have_fewer_lower_scored_leads(tmp_path):
    frames = [pd.read_parquet(p) for p in generate(tmp_path, periods=7, rows_per_period=1000)]
    weekday, weekend = pd.concat(frames[:5]), pd.concat(frames[5:])  # 2024-03-04 is a Monday
    assert [len(f) for f in frames] == [1000] * 5 + [400] * 2
    assert weekend["weekend_activity"].all() and not weekday["weekend_activity"].any()
    assert weekend["lead_score"].mean() < weekday["lead_score"].mean() - 0.4
    assert (weekend["lead_source"] == "Organic").mean() > (weekday["lead_source"] == "Organic").mean() + 0.1


def test_drift_moves_three_monitored_features_over_psi_020(tmp_path):
    paths = generate(tmp_path / "d", periods=8, rows_per_period=2000, seed=7, drift_from=8)
    plain = generate(tmp_path / "p", periods=7, rows_per_period=2000, seed=7)
    for a, b in zip(paths, plain):  # days before drift_from do not depend on it
        pd.testing.assert_frame_equal(pd.read_parquet(a), pd.read_parquet(b))
    monitored = list(C.MONITORED_FEATURES)
    assert "weekend_activity" not in monitored
    frames = [pd.read_parquet(p) for p in paths]
    profile = ReferenceProfile.fit(pd.concat(frames[:5])[monitored], features=monitored)
    settings = DriftSettings(psi_threshold=0.20)
    # day 8 is a Monday: compare weekday with weekdays; day 5 (Friday) is the undrifted control
    drifted = {r.feature: r.psi for r in profile.score(frames[7][monitored], settings)}
    control = {r.feature: r.psi for r in profile.score(frames[4][monitored], settings)}
    assert sum(v > 0.20 for v in drifted.values()) >= 3
    assert sum(v > 0.20 for v in control.values()) == 0


def test_bad_arguments_raise_value_error_and_write_nothing(tmp_path):
    with pytest.raises(ValueError, match="periods"):
        generate(tmp_path / "x", periods=0)
    with pytest.raises(ValueError, match="rows_per_period"):
        generate(tmp_path / "y", rows_per_period=0)
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_readmission_adapter_equals_the_old_generator(tmp_path):
    old = generate_admissions(tmp_path / "old", GenerationSpec(months=2, rows_per_month=300, seed=3,
                                                               start="2024-02", drift_from=2))
    new = generate_model_data(tmp_path / "new", periods=2, rows_per_period=300, seed=3, start="2024-02-01",
                              drift_from=2)
    by_model = generate_for_model("readmission-30d", tmp_path / "model", periods=2, rows_per_period=300, seed=3,
                                  start="2024-02", drift_from=2)
    assert [p.name for p in old] == [p.name for p in new] == [p.name for p in by_model]
    for a, b, c in zip(old, new, by_model):
        assert a.read_bytes() == b.read_bytes() == c.read_bytes()


def test_generate_for_model_runs_the_lead_generator_with_the_model_active(tmp_path):
    paths = generate_for_model("lead-scoring", tmp_path, periods=2, rows_per_period=40, seed=7, start=None)
    assert [p.name for p in paths] == ["leads_2024_03_04.parquet", "leads_2024_03_05.parquet"]
    assert spec.active_model() == spec.DEFAULT_MODEL  # the model is active only during the call


def test_cli_data_generate_for_lead_scoring(tmp_path):
    exe = Path(sys.executable).with_name("retrainer")
    env = {**os.environ, "RETRAINER_MODEL_NAME": "lead-scoring", "RETRAINER_HOME": str(tmp_path / "home")}
    out = tmp_path / "leads"
    run = subprocess.run([str(exe), "data", "generate", "--out", str(out), "--periods", "3",
                          "--rows-per-period", "30", "--drift-from", "3"],
                         env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "wrote 3 files of lead-scoring data (one per day)" in run.stdout
    files = sorted(out.glob("leads_*.parquet"))
    assert len(files) == 3
    assert np.array_equal(pd.read_parquet(files[0])["lead_id"].str[:5].unique(), ["L0000"])
    bad = subprocess.run([str(exe), "data", "generate", "--out", str(tmp_path / "bad"), "--periods", "0"],
                         env=env, capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and "periods must be at least 1" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1 and not (tmp_path / "bad").exists()
