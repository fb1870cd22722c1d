"""Every built-in training entry point: train, save, load, check the artifact's sha256, score the
same after reload, and score the same through the serving scorer (compiled for the
HistGradientBoosting classifier, the model's own predict for XGBoost). Bad entry points give one
line and write nothing."""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from retrainer import spec as specs
from retrainer import training
from retrainer.datagen import GenerationSpec, generate
from retrainer.scoring import FastScorer, PipelineScorer
from retrainer.spec import SpecError

REPO = Path(__file__).resolve().parents[2]


def _sha(d: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(d.iterdir()):
        h.update(f.name.encode() + f.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def leads(tmp_path_factory) -> pd.DataFrame:
    from examples.lead_scoring.datagen import generate as gen

    files = gen(tmp_path_factory.mktemp("leads"), periods=6, rows_per_period=500, seed=2)
    return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)


@pytest.fixture(scope="module")
def admissions(tmp_path_factory) -> pd.DataFrame:
    files = generate(tmp_path_factory.mktemp("adm"), GenerationSpec(months=2, rows_per_month=1500, seed=4))
    return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)


def _lead_spec(entry: str, tmp_path: Path) -> specs.ModelSpec:
    doc = yaml.safe_load((REPO / "models" / "lead-scoring.yaml").read_text())
    doc["training"] = {"entry_point": entry, "params": {"n_estimators": 40, "max_depth": 4}}
    if entry.endswith("ranker"):
        doc["task"] = "ranking"
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(doc))
    return specs.load_spec(path)


CASES = ["retrainer.training:hist_gradient_boosting_classifier", "retrainer.training:xgboost_regressor",
         "retrainer.training:xgboost_ranker"]


@pytest.mark.parametrize("entry", CASES)
def test_builtin_entry_point_round_trip(entry, tmp_path, leads, admissions):
    if "hist_gradient" in entry:
        spec, frame = specs.load_spec("readmission-30d"), admissions
        params = {"learning_rate": 0.1, "max_iter": 30, "max_leaf_nodes": 15, "min_samples_leaf": 20,
                  "l2_regularization": 1.0, "random_state": 1}
    else:
        spec, frame = _lead_spec(entry, tmp_path), leads
        params = dict(spec.training.params)
    tr, va = frame.iloc[: len(frame) * 2 // 3], frame.iloc[len(frame) * 2 // 3:]
    meta = training.train(tr, va, tmp_path / "m", params, spec=spec)
    assert meta["entry_point"] == entry and meta["task"] == spec.task and meta["model"] == spec.name
    assert meta["validation_metric"]["name"] == spec.metrics.primary
    assert meta["validation_metric"]["value"] > 0.3  # it learnt something
    digest = _sha(tmp_path / "m")
    loaded = training.load_model(tmp_path / "m")
    assert _sha(tmp_path / "m") == digest  # loading changes nothing on disk
    s1 = loaded.predict(va)
    s2 = training.load_model(tmp_path / "m").predict(va)
    np.testing.assert_array_equal(s1, s2)
    assert s1.shape == (len(va),) and np.isfinite(s1).all()
    if spec.task == "binary_classification":
        assert ((s1 >= 0) & (s1 <= 1)).all()
    elif spec.task == "regression":  # the business rule: clipped to [1, 5]
        assert meta["clip"] == [1, 5] and s1.min() >= 1 and s1.max() <= 5
    # the serving scorer gives the same scores from request records
    with specs.using("readmission-30d" if spec.task == "binary_classification" else "lead-scoring"):
        scorer = FastScorer.from_model(loaded)
        records = va.head(40).to_dict("records")
        fast = scorer.predict(records)
    assert scorer.mode == ("compiled" if "hist_gradient" in entry else "sklearn")
    assert scorer.compiled is ("hist_gradient" in entry)
    np.testing.assert_allclose(fast, s1[:40], rtol=1e-6, atol=1e-9)


def test_a_pipeline_the_scorer_cannot_take_apart_falls_back_to_the_models_own_predict(tmp_path, leads):
    spec = _lead_spec("tests.unit.test_model_formats:plain_regressor", tmp_path)
    tr, va = leads.iloc[:2000], leads.iloc[2000:2400]
    training.train(tr, va, tmp_path / "m", {}, spec=spec)
    loaded = training.load_model(tmp_path / "m")
    scorer = FastScorer.from_model(loaded)
    assert isinstance(scorer, PipelineScorer) and scorer.mode == "pipeline" and scorer.compiled is False
    np.testing.assert_allclose(scorer.predict(va.head(25).to_dict("records")), loaded.predict(va.head(25)))


def plain_regressor(data, params):
    """A user's entry point without the built-ins' ColumnTransformer."""
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer

    pick = FunctionTransformer(numeric_matrix, kw_args={"columns": list(data.contract.NUMERIC_FEATURES)})
    return make_pipeline(pick, Ridge()).fit(data.X_train, data.y_train)


def numeric_matrix(X, columns):
    return X[columns].fillna(0).to_numpy(dtype=float)


def unpicklable(data, params):
    model = plain_regressor(data, params)
    model.steps[0][1].func = lambda X, columns: numeric_matrix(X, columns)  # a lambda cannot be pickled
    return model


def returns_none(data, params):
    return None


def returns_no_predictor(data, params):
    return {"weights": [1, 2, 3]}


def raises(data, params):
    raise RuntimeError("out of memory in the user's code")


@pytest.mark.parametrize("entry, message", [
    ("no_such_package.module:fit", "cannot be imported: ModuleNotFoundError"),
    ("tests.unit.test_model_formats:nope", "has no function 'nope'"),
    ("tests.unit.test_model_formats:returns_none", "returned None, not a fitted model"),
    ("tests.unit.test_model_formats:returns_no_predictor", "returned a dict, which has no predict()"),
    ("tests.unit.test_model_formats:raises", "failed: RuntimeError: out of memory in the user's code"),
    ("tests.unit.test_model_formats:unpicklable", "cannot be saved: PicklingError"),
])
def test_a_bad_entry_point_is_one_line_and_writes_nothing(entry, message, tmp_path, leads):
    spec = _lead_spec(entry, tmp_path)
    out = tmp_path / "model"
    with pytest.raises(SpecError) as err:
        training.train(leads.iloc[:600], leads.iloc[600:900], out, {}, spec=spec)
    assert message in str(err.value) and "\n" not in str(err.value)
    assert not out.exists()


def test_builtin_params_are_validated_in_one_line(tmp_path, leads):
    spec = _lead_spec("retrainer.training:xgboost_regressor", tmp_path)
    with pytest.raises(SpecError, match=r"training.params.max_depht for xgboost_regressor: Extra inputs"):
        training.train(leads.iloc[:600], leads.iloc[600:900], tmp_path / "m", {"max_depht": 3}, spec=spec)
    assert not (tmp_path / "m").exists()


def random_forest(data, params):
    """The README's "Bring your own model" entry point, verbatim."""
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.pipeline import make_pipeline

    from retrainer.training import feature_encoder

    model = make_pipeline(feature_encoder(data.contract), RandomForestClassifier(**params))
    return model.fit(data.X_train, data.y_train)


def test_the_readmes_own_entry_point_trains_registers_and_serves(tmp_path, admissions):
    doc = yaml.safe_load((REPO / "models" / "readmission-30d.yaml").read_text())
    doc["training"] = {"entry_point": "tests.unit.test_model_formats:random_forest",
                       "params": {"n_estimators": 30, "random_state": 0}}
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(doc))
    spec = specs.load_spec(tmp_path / "spec.yaml")
    meta = training.train(admissions.iloc[:2000], admissions.iloc[2000:], tmp_path / "m", doc["training"]["params"],
                          spec=spec)
    assert meta["validation_metric"]["name"] == "auc" and meta["validation_metric"]["value"] > 0.6
    loaded = training.load_model(tmp_path / "m")
    scorer = FastScorer.from_model(loaded)
    assert scorer.mode == "sklearn"  # not compiled: the scorer uses the forest's own predict_proba
    np.testing.assert_allclose(scorer.predict(admissions.tail(20).to_dict("records")),
                               loaded.predict(admissions.tail(20)), rtol=1e-9)
