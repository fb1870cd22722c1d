"""The synthetic admissions generator: deterministic, realistic, drifting on request."""
import pandas as pd

from retrainer import schema as S
from retrainer import triggers as T
from retrainer.datagen import GenerationSpec, generate
from retrainer.dataio import load_batch
from retrainer.drift import ReferenceProfile
from retrainer.settings import DriftSettings


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


def test_drift_moves_three_features_above_020_and_fires_the_protocol_24_trigger(tmp_path):
    """Protocol 24's data-drift trigger (3 features, PSI > 0.20 and above the family-wise floor) fires
    on a drifted month at 5,000 rows and not on a month before `drift_from`."""
    paths = generate(tmp_path / "d", GenerationSpec(months=5, rows_per_month=5000, seed=7, drift_from=5))
    plain = generate(tmp_path / "p", GenerationSpec(months=4, rows_per_month=5000, seed=7))
    for a, b in zip(paths[:4], plain):  # the months before drift_from do not depend on it
        pd.testing.assert_frame_equal(load_batch(a), load_batch(b))
    reference = pd.concat([load_batch(p) for p in paths[:3]], ignore_index=True)
    profile = ReferenceProfile.fit(reference[list(S.FEATURES)], features=list(S.FEATURES))
    trigger = T.parse_triggers({"retraining_triggers": [
        {"name": "data-drift", "type": "data_drift", "priority": 1}]}).retraining_triggers[0]
    assert trigger.min_features == 3 and trigger.psi_threshold == 0.20
    settings = DriftSettings(psi_threshold=trigger.psi_threshold, min_window=trigger.min_window,
                             features_required=trigger.min_features)
    before = profile.score(load_batch(paths[3])[list(S.FEATURES)], settings)
    after = profile.score(load_batch(paths[4])[list(S.FEATURES)], settings)
    assert sum(r.psi > 0.20 for r in after) >= 3
    assert sum(r.psi > 0.20 for r in before) == 0
    assert T.evaluate_data_drift(trigger, after).fired
    assert not T.evaluate_data_drift(trigger, before).fired
