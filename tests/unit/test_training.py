"""Training and evaluation: deterministic, identifiers dropped, metrics per slice."""
import numpy as np

from retrainer import schema as S
from retrainer.dataio import load_batch, time_split
from retrainer.evaluation import evaluate
from retrainer.settings import ModelSettings, SplitSettings
from retrainer.training import feature_frame, load_model, train


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
