"""Training: the model's spec names a training entry point; one standalone `train` runs it with
file inputs and a model-directory output.

The same function runs locally (the default backend) and as a SageMaker script-mode job:
`python -m retrainer.training` reads SageMaker's container contract (SM_MODEL_DIR,
SM_CHANNEL_TRAIN, SM_CHANNEL_VALIDATION, SM_HPS, whose `model_spec` carries the spec) and calls
`train()`.

An entry point (`training.entry_point: "package.module:function"` in `models/<name>.yaml`) is
called as `fn(data: TrainingData, params: dict)` and returns a fitted scikit-learn-compatible
estimator or pipeline: `predict_proba` for a classifier, `predict` for regression and ranking.
Built in:

* `hist_gradient_boosting_classifier`: a ColumnTransformer that selects the contract's features
  (identifiers are dropped before anything else) and ordinal-encodes categoricals with fixed
  category lists, then a HistGradientBoostingClassifier (the readmission model);
* `xgboost_regressor`: the same encoding, then xgboost's XGBRegressor, its output clipped to the
  spec's prediction range (the business rule, e.g. scores in [1, 5]);
* `xgboost_ranker`: the same encoding, then XGBRanker with one query per day of the timestamp.

Deterministic for given data and parameters. Nothing is written to the model directory unless
the entry point returned a model that predicts.

On a multi-instance SageMaker job (SM_HOSTS names more than one host) the XGBoost entry points
train distributed: each host reads its shard of the train channel, the hosts join XGBoost's
collective group for the fit (`retrainer.distributed`), and only the first host writes the model.
"""
from __future__ import annotations

import io
import json
import os
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .dataio import read_parquet
from .errors import DataError, RetrainerError
from .settings import ModelSettings
from .spec import DEFAULT_MODEL, Contract, ModelSpec, SpecError, active_model, contract, load_spec
from .spec import resolve_entry_point as _resolve

MODEL_FILE = "model.joblib"
META_FILE = "model.json"


def _contract_for(spec: ModelSpec) -> Contract:
    """The contract of `spec`: the shared one when it is the spec on disk, else its own (a spec
    that travelled with a SageMaker job)."""
    try:
        c = contract(spec.name)
        if c.spec == spec:
            return c
    except SpecError:
        pass
    return Contract(spec)


def drop_identifiers(df: pd.DataFrame, c: Contract | None = None) -> pd.DataFrame:
    c = c or contract(active_model())
    return df.drop(columns=[col for col in c.IDENTIFIERS if col in df.columns])


def feature_frame(df: pd.DataFrame, c: Contract | None = None) -> pd.DataFrame:
    """The model's input: identifiers dropped, then the contract's features in a fixed order."""
    c = c or contract(active_model())
    df = drop_identifiers(df, c)
    missing = [col for col in c.FEATURES if col not in df.columns]
    if missing:
        raise DataError(f"missing feature column(s): {', '.join(missing)}")
    return df[list(c.FEATURES)]


@dataclass(frozen=True)
class TrainingData:
    """What an entry point gets: the contract's feature frames and labels of the time split's
    train and validation parts, the query ids (the timestamp's day) for a ranking model (empty
    otherwise), the contract and the spec."""
    X_train: pd.DataFrame
    y_train: np.ndarray
    X_validation: pd.DataFrame
    y_validation: np.ndarray
    groups_train: np.ndarray
    groups_validation: np.ndarray
    contract: Contract
    spec: ModelSpec


def feature_encoder(c: Contract):
    """The built-ins' first step, for any entry point to reuse: a ColumnTransformer that ordinal-
    encodes the contract's categoricals with their fixed category lists (unseen and missing: NaN)
    and passes numeric and boolean features through, in the contract's order."""
    from sklearn.compose import ColumnTransformer  # noqa: PLC0415 - heavy: sklearn
    from sklearn.preprocessing import OrdinalEncoder  # noqa: PLC0415 - heavy: sklearn

    cats = list(c.CATEGORICAL_FEATURES)
    encoder = OrdinalEncoder(categories=[list(c.CATEGORIES[col]) for col in cats],
                             handle_unknown="use_encoded_value", unknown_value=np.nan,
                             encoded_missing_value=np.nan, dtype=np.float64)
    return ColumnTransformer([("categorical", encoder, cats),
                              ("numeric", "passthrough", list(c.NUMERIC_FEATURES) + list(c.BOOLEAN_FEATURES))],
                             remainder="drop", verbose_feature_names_out=False)


def _params(model: type[BaseModel], params: dict[str, Any], entry: str) -> dict[str, Any]:
    try:
        return model(**params).model_dump()
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise SpecError(f"training.params.{where} for {entry}: {err['msg']}") from None


def build_pipeline(params: dict[str, Any], c: Contract | None = None):
    """The readmission pipeline: fixed categorical encoding, then HistGradientBoostingClassifier."""
    from sklearn.ensemble import HistGradientBoostingClassifier  # noqa: PLC0415 - heavy: sklearn
    from sklearn.pipeline import Pipeline  # noqa: PLC0415 - heavy: sklearn

    c = c or contract(active_model())
    clf = HistGradientBoostingClassifier(
        learning_rate=params["learning_rate"], max_iter=params["max_iter"],
        max_leaf_nodes=params["max_leaf_nodes"], min_samples_leaf=params["min_samples_leaf"],
        l2_regularization=params["l2_regularization"], random_state=params["random_state"],
        categorical_features=list(range(len(c.CATEGORICAL_FEATURES))), early_stopping=False)
    return Pipeline([("features", feature_encoder(c)), ("model", clf)])


def hist_gradient_boosting_classifier(data: TrainingData, params: dict[str, Any]):
    """Built-in entry point: today's readmission model (parameters: `settings.ModelSettings`)."""
    p = _params(ModelSettings, params, "hist_gradient_boosting_classifier")
    pipe = build_pipeline(p, data.contract)
    return pipe.fit(data.X_train, data.y_train)


class XGBoostParams(BaseModel):
    """Parameters of the built-in XGBoost entry points (xgboost's names and meanings)."""
    model_config = ConfigDict(extra="forbid")
    n_estimators: int = Field(300, ge=1, le=20_000)
    max_depth: int = Field(6, ge=1, le=32)
    learning_rate: float = Field(0.08, gt=0, le=1)
    subsample: float = Field(1.0, gt=0, le=1)
    colsample_bytree: float = Field(1.0, gt=0, le=1)
    min_child_weight: float = Field(1.0, ge=0)
    reg_lambda: float = Field(1.0, ge=0)
    random_state: int = 42
    n_jobs: int = Field(2, ge=1)


def _xgb_pipeline(data: TrainingData, estimator):
    from sklearn.pipeline import Pipeline  # noqa: PLC0415 - heavy: sklearn

    return Pipeline([("features", feature_encoder(data.contract)), ("model", estimator)])


def xgboost_regressor(data: TrainingData, params: dict[str, Any]):
    """Built-in entry point: categoricals ordinal-encoded with the contract's categories, then
    XGBRegressor (squared error); predictions clipped to the spec's prediction range if it has one."""
    import xgboost  # noqa: PLC0415 - heavy: xgboost

    from .estimators import ClippedRegressor  # noqa: PLC0415 - heavy: sklearn

    p = _params(XGBoostParams, params, "xgboost_regressor")
    est = xgboost.XGBRegressor(objective="reg:squarederror", tree_method="hist", **p)
    lo, hi = data.spec.predictions.min, data.spec.predictions.max
    if lo is not None or hi is not None:
        est = ClippedRegressor(est, -np.inf if lo is None else lo, np.inf if hi is None else hi)
    return _xgb_pipeline(data, est).fit(data.X_train, data.y_train)


def xgboost_ranker(data: TrainingData, params: dict[str, Any]):
    """Built-in entry point: the same encoding, then XGBRanker (pairwise) with one query per day."""
    import xgboost  # noqa: PLC0415 - heavy: xgboost

    p = _params(XGBoostParams, params, "xgboost_ranker")
    est = xgboost.XGBRanker(objective="rank:pairwise", tree_method="hist", **p)
    order = np.argsort(data.groups_train, kind="stable")  # XGBRanker wants each query's rows together
    return _xgb_pipeline(data, est).fit(data.X_train.iloc[order], data.y_train[order],
                                        model__qid=data.groups_train[order])


def _xy(df: pd.DataFrame, spec: ModelSpec, c: Contract) -> tuple[pd.DataFrame, np.ndarray]:
    if c.LABEL not in df.columns:
        raise DataError(f"missing label column {c.LABEL}")
    y = df[c.LABEL].to_numpy()
    if spec.task == "binary_classification":
        if len(np.unique(y)) < 2:
            raise DataError(f"{c.LABEL} has a single class; cannot train")
        return feature_frame(df, c), y.astype(np.int64)
    y = pd.to_numeric(df[c.LABEL], errors="coerce").to_numpy(dtype=np.float64)
    if not np.isfinite(y).all():
        raise DataError(f"{c.LABEL} has missing or non-numeric values; cannot train")
    if len(np.unique(y)) < 2:
        raise DataError(f"{c.LABEL} is constant; cannot train")
    return feature_frame(df, c), y


def _groups(df: pd.DataFrame, c: Contract) -> np.ndarray:
    """Query ids for ranking: the day of each row's timestamp (days since 1970)."""
    if c.TIMESTAMP not in df.columns:
        return np.zeros(len(df), dtype=np.int64)
    return pd.to_datetime(df[c.TIMESTAMP]).to_numpy().astype("datetime64[D]").astype(np.int64)


def _read(paths) -> pd.DataFrame:
    if isinstance(paths, pd.DataFrame):
        return paths
    frames = [read_parquet(p) for p in ([paths] if isinstance(paths, (str, Path)) else paths)]
    return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]


def scores_of(model, X: pd.DataFrame, task: str) -> np.ndarray:
    """What a fitted model answers: P(positive) for a classifier, its prediction otherwise."""
    if task == "binary_classification":
        return np.asarray(model.predict_proba(X), dtype=np.float64)[:, 1]
    return np.asarray(model.predict(X), dtype=np.float64).reshape(-1)


def validation_metric(task: str, metric: str, y: np.ndarray, s: np.ndarray) -> float | None:
    """The spec's primary metric on the validation rows (model.json records it)."""
    if metric == "auc":
        from sklearn.metrics import roc_auc_score  # noqa: PLC0415 - heavy: sklearn

        return float(roc_auc_score(y, s)) if len(np.unique(y)) == 2 else None
    if metric == "spearman":
        from scipy.stats import spearmanr  # noqa: PLC0415 - heavy: scipy

        r = spearmanr(y, s).statistic
        return None if not np.isfinite(r) else float(r)
    if metric == "mae":
        return float(np.mean(np.abs(y - s)))
    if metric == "rmse":
        return float(np.sqrt(np.mean((y - s) ** 2)))
    if metric == "brier":
        return float(np.mean((s - y) ** 2))
    return None


def _check_model(model, task: str, entry: str) -> None:
    if model is None:
        raise SpecError(f"training entry point {entry} returned None, not a fitted model")
    need = "predict_proba" if task == "binary_classification" else "predict"
    if not callable(getattr(model, need, None)):
        raise SpecError(f"training entry point {entry} returned a {type(model).__name__}, which has no "
                        f"{need}() (a {task} model must have one)")


def train(train_data, validation_data, model_dir: str | Path, params: dict[str, Any],
          spec: ModelSpec | None = None, cluster=None) -> dict[str, Any]:
    """Fit the spec's entry point on `train_data`, score `validation_data`, write the model to
    `model_dir` (only once the model is fitted and predicts).

    `train_data`/`validation_data` are Parquet paths (file or folder) or DataFrames; `spec`
    defaults to the active model's. `cluster` (a `retrainer.distributed.Cluster`): `train_data`
    is this host's shard, the fit runs in the hosts' XGBoost group, and only the first host writes.
    Returns the metadata written to model.json (model, task, entry point, schema, params, the
    validation value of the primary metric, timings)."""
    import joblib  # noqa: PLC0415 - heavy: joblib
    import sklearn  # noqa: PLC0415 - heavy: sklearn

    spec = spec or load_spec(active_model())
    c = _contract_for(spec)
    entry = spec.training.entry_point
    if cluster is not None:
        from .distributed import check_distributable  # noqa: PLC0415 - only on multi-host jobs

        check_distributable(entry, cluster.size, spec.name)
    fn = _resolve(entry, "training entry point")
    tr, va = _read(train_data), _read(validation_data)
    X, y = _xy(tr, spec, c)
    Xv, yv = _xy(va, spec, c)
    ranking = spec.task == "ranking"  # query ids only where they are used (a pass over every timestamp)
    no_groups = np.zeros(0, dtype=np.int64)
    data = TrainingData(X, y, Xv, yv, _groups(tr, c) if ranking else no_groups,
                        _groups(va, c) if ranking else no_groups, c, spec)
    distributed: dict[str, Any] | None = None
    if cluster is not None:
        from .distributed import communicator  # noqa: PLC0415 - only on multi-host jobs

        group = communicator(cluster)
    else:
        group = nullcontext()
    t0 = time.perf_counter()
    with group as g:
        if g is not None:  # every host's shard size, before the fit (also proves the group works)
            distributed = {"hosts": list(cluster.hosts), "train_rows": [int(n) for n in g.per_host(len(tr))],
                           "join_seconds": round(time.perf_counter() - t0, 3)}
            t0 = time.perf_counter()
        try:
            model = fn(data, dict(params))
        except RetrainerError:
            raise
        except Exception as exc:  # the user's code failed: one line, nothing written
            msg = str(exc).splitlines()[0] if str(exc) else ""
            raise SpecError(f"training entry point {entry} failed: {type(exc).__name__}: {msg}") from None
    fit_s = time.perf_counter() - t0
    _check_model(model, spec.task, entry)
    try:
        sv = scores_of(model, Xv, spec.task)
    except Exception as exc:
        raise SpecError(f"the model from {entry} cannot score the validation rows: {type(exc).__name__}: "
                        f"{str(exc).splitlines()[0] if str(exc) else ''}") from None
    metric = spec.metrics.primary
    value = validation_metric(spec.task, metric, yv, sv)
    writes = cluster is None or cluster.is_first  # the hosts hold one model: the first one saves it
    model_dir = Path(model_dir)
    blob = io.BytesIO()
    try:  # serialised before anything is written: a model that cannot be saved leaves no trace
        joblib.dump(model, blob)
    except Exception as exc:
        raise SpecError(f"the model from {entry} cannot be saved: {type(exc).__name__}: "
                        f"{str(exc).splitlines()[0] if str(exc) else ''}") from None
    if writes:
        model_dir.mkdir(parents=True, exist_ok=True)
        (model_dir / MODEL_FILE).write_bytes(blob.getvalue())
    schema = c.feature_schema()
    last = model.steps[-1][1] if hasattr(model, "steps") else model
    meta = {
        "model": spec.name,
        "task": spec.task,
        "entry_point": entry,
        "features": list(c.FEATURES),
        "feature_schema": schema,
        "schema_hash": c.schema_hash(schema),
        "params": params,
        "train_rows": int(len(tr)) if distributed is None else sum(distributed["train_rows"]),
        "validation_rows": int(len(va)),
        "validation_metric": {"name": metric, "value": None if value is None else round(value, 6)},
        f"validation_{metric}": None if value is None else round(value, 6),
        "fit_seconds": round(fit_s, 3),
        "sklearn_version": sklearn.__version__,
    }
    if type(last).__name__ == "ClippedRegressor":  # retrainer.estimators (not imported unless used)
        meta["clip"] = [last.low, last.high]
    if distributed is not None:
        meta["distributed"] = distributed
    if writes:
        (model_dir / META_FILE).write_text(json.dumps(meta, indent=2))
    return meta


@dataclass
class LoadedModel:
    pipeline: Any
    meta: dict[str, Any]

    @property
    def model_name(self) -> str:
        return self.meta.get("model", DEFAULT_MODEL)  # artifacts from before model specs: readmission

    @property
    def task(self) -> str:
        return self.meta.get("task", "binary_classification")

    def predict(self, df: pd.DataFrame) -> np.ndarray:
        """Scores for rows of `df` (identifiers may be present; they are dropped): readmission risk
        for a classifier, the predicted value for regression and ranking. Uses the contract of
        the model the artifact was trained for, whatever model is active."""
        return scores_of(self.pipeline, feature_frame(df, contract(self.model_name)), self.task)


def load_model(model_dir: str | Path) -> LoadedModel:
    import joblib  # noqa: PLC0415 - heavy: joblib

    model_dir = Path(model_dir)
    try:
        meta = json.loads((model_dir / META_FILE).read_text())
        return LoadedModel(joblib.load(model_dir / MODEL_FILE), meta)
    except FileNotFoundError as exc:
        raise DataError(f"{model_dir}: not a model directory ({Path(exc.filename).name} missing)") from None


def main(argv: list[str] | None = None) -> int:
    """SageMaker script-mode entry point (also runnable locally with the same environment)."""
    model_dir = os.environ.get("SM_MODEL_DIR", "/opt/ml/model")
    train_dir = os.environ.get("SM_CHANNEL_TRAIN", "/opt/ml/input/data/train")
    val_dir = os.environ.get("SM_CHANNEL_VALIDATION", "/opt/ml/input/data/validation")
    hps = json.loads(os.environ.get("SM_HPS", "{}") or "{}")
    # The job names its model; its spec travels in the source directory (models/*.yaml beside the
    # package: backends/sagemaker/trainer.py `source_files`).
    name = hps.pop("model_name", None) or DEFAULT_MODEL
    from .distributed import HYPERPARAMETER, Cluster, tracker  # noqa: PLC0415 - light, but only here

    options = hps.pop(HYPERPARAMETER, None)  # reserved: the tracker's port and the group's timeout
    try:
        cluster = Cluster.from_env(os.environ, options)  # None: one host
        spec = load_spec(name)
        if cluster is not None:  # refused before the tracker starts, as train() would
            from .distributed import check_distributable  # noqa: PLC0415 - only on multi-host jobs

            check_distributable(spec.training.entry_point, cluster.size, spec.name)
        with tracker(cluster):  # the first host listens before reading its data
            meta = train(train_dir, val_dir, model_dir, hps, spec=spec, cluster=cluster)
    except RetrainerError as exc:
        # SageMaker surfaces /opt/ml/output/failure as the job's FailureReason.
        out = Path(os.environ.get("SM_OUTPUT_DATA_DIR", "/opt/ml/output/data")).parent
        try:
            out.mkdir(parents=True, exist_ok=True)
            (out / "failure").write_text(str(exc))
        except OSError:
            pass
        print(f"error: {exc}", file=sys.stderr)
        return 2
    metric = meta["validation_metric"]
    line = {f"validation_{metric['name']}": metric["value"], "train_rows": meta["train_rows"]}
    if cluster is not None:
        line.update(host=cluster.current, rank=cluster.rank, wrote_model=cluster.is_first,
                    host_train_rows=meta["distributed"]["train_rows"][cluster.rank])
    print(json.dumps(line))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
