"""Data generation, split, training and evaluation: the domain without Prefect."""
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from retrainer import schema as S
from retrainer.dataio import content_hash, load_batch, time_split
from retrainer.datagen import GenerationSpec, generate
from retrainer.errors import ConfigError, DataError
from retrainer.evaluation import evaluate, promotion_gate
from retrainer.settings import GateSettings, ModelSettings, SplitSettings, load_settings
from retrainer.training import feature_frame, load_model, train


@pytest.fixture(scope="module")
def months(tmp_path_factory):
    out = tmp_path_factory.mktemp("data")
    generate(out, GenerationSpec(months=6, rows_per_month=3000, seed=3))
    return out


def test_generator_is_deterministic_and_realistic(tmp_path, months):
    again = generate(tmp_path, GenerationSpec(months=2, rows_per_month=3000, seed=3))
    first = load_batch(months / again[0].name)
    pd.testing.assert_frame_equal(first, load_batch(again[0]))
    df = load_batch(months)
    assert 25 <= len(S.FEATURES) <= 40
    assert 0.10 <= df[S.LABEL].mean() <= 0.20
    assert set(S.IDENTIFIERS) <= set(df.columns)
    assert df[S.ADMISSION_ID].is_unique


def test_drift_shifts_features_and_label(tmp_path):
    paths = generate(tmp_path, GenerationSpec(months=4, rows_per_month=4000, seed=1, drift_from=3))
    before, after = load_batch(paths[1]), load_batch(paths[2])
    assert after["age"].mean() - before["age"].mean() > 4
    assert after[S.LABEL].mean() > before[S.LABEL].mean() + 0.02


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


def test_training_is_deterministic_and_drops_identifiers(tmp_path, months):
    sp = time_split(load_batch(months), SplitSettings())
    params = ModelSettings(max_iter=60).model_dump()
    m1 = train(sp.train, sp.validation, tmp_path / "a", params)
    m2 = train(sp.train, sp.validation, tmp_path / "b", params)
    assert m1["validation_auc"] == m2["validation_auc"]
    model = load_model(tmp_path / "a")
    scrambled = sp.test.copy()
    for c in S.IDENTIFIERS:  # identifiers carry no signal into the model
        scrambled[c] = scrambled[c].sample(frac=1, random_state=1).to_numpy()
    np.testing.assert_allclose(model.predict(sp.test), model.predict(scrambled))
    assert not set(S.IDENTIFIERS) & set(feature_frame(sp.test).columns)
    metrics = evaluate(model, sp.test)
    assert 0.68 <= metrics["auc"] <= 0.9
    assert set(metrics["slices"]["sex"]) == {"F", "M"}
    assert set(metrics["slices"]["age_band"]) >= {"45-64", "65-79"}
    assert metrics["latency"]["batch_ms_per_row"] > 0


def test_content_hash_ignores_file_layout_but_not_values(months):
    df = load_batch(months)
    assert content_hash(df) == content_hash(df.copy())
    changed = df.copy()
    changed.loc[0, "age"] = changed.loc[0, "age"] + 1
    assert content_hash(changed) != content_hash(df)


@pytest.mark.parametrize("cand,prod,eligible,why", [
    (0.80, None, True, "passes"),
    (0.65, None, False, "below the minimum"),
    (0.78, 0.80, True, "passes"),
    (0.77, 0.80, False, "more than 0.02 below"),
])
def test_promotion_gate(cand, prod, eligible, why):
    d = promotion_gate({"auc": cand}, {"auc": prod} if prod else None, GateSettings())
    assert d.eligible is eligible and why in d.reason


def test_bad_settings_are_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("RETRAINER_GATE__MIN_AUC", "1.7")
    with pytest.raises(ConfigError, match="bad setting gate.min_auc"):
        load_settings()
    monkeypatch.delenv("RETRAINER_GATE__MIN_AUC")
    cfg = tmp_path / "r.yaml"
    cfg.write_text("gate:\n  min_auc: 0.75\ncanary:\n  traffic: 0.2\n")
    monkeypatch.setenv("RETRAINER_CONFIG", str(cfg))
    s = load_settings()
    assert s.gate.min_auc == 0.75 and s.canary.traffic == 0.2 and s.drift.psi_threshold == 0.20
    cfg.write_text("gate: [unclosed\n")
    with pytest.raises(ConfigError, match="cannot read settings"):
        load_settings()
    cfg.write_text("gaet:\n  min_auc: 0.75\n")
    with pytest.raises(ConfigError, match="bad setting gaet"):
        load_settings()
    monkeypatch.setenv("RETRAINER_CONFIG", str(tmp_path / "missing.yaml"))
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings()


def test_domain_package_never_imports_prefect():
    code = ("import pkgutil, importlib, sys, retrainer\n"
            "for m in pkgutil.walk_packages(retrainer.__path__, 'retrainer.'):\n"
            "    importlib.import_module(m.name)\n"
            "bad = sorted(m for m in sys.modules if m == 'prefect' or m.startswith('prefect.'))\n"
            "print(bad)\nassert not bad, bad\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
