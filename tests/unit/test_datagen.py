"""The synthetic admissions generator: deterministic, realistic, drifting on request."""
import pandas as pd

from retrainer import schema as S
from retrainer.datagen import GenerationSpec, generate
from retrainer.dataio import load_batch


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
