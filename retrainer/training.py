"""Training: one standalone entry point with file inputs and a model-directory output.

The same function runs locally (the default backend) and as a SageMaker script-mode job:
`python -m retrainer.training` reads SageMaker's container contract (SM_MODEL_DIR,
SM_CHANNEL_TRAIN, SM_CHANNEL_VALIDATION, SM_HPS) and calls `train()`.

The model is a scikit-learn Pipeline: a ColumnTransformer that selects the contract's features
(identifiers are dropped before anything else) and ordinal-encodes categoricals with fixed
category lists, then a HistGradientBoostingClassifier. Deterministic for given data and settings.
"""
from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from . import schema as S
from .dataio import read_parquet
from .errors import DataError
from .settings import ModelSettings

MODEL_FILE = "model.joblib"
META_FILE = "model.json"


def drop_identifiers(df: pd.DataFrame) -> pd.DataFrame:
    return df.drop(columns=[c for c in S.IDENTIFIERS if c in df.columns])


def feature_frame(df: pd.DataFrame) -> pd.DataFrame:
    """The model's input: identifiers dropped, then the contract's features in a fixed order."""
    df = drop_identifiers(df)
    missing = [c for c in S.FEATURES if c not in df.columns]
    if missing:
        raise DataError(f"missing feature column(s): {', '.join(missing)}")
    return df[list(S.FEATURES)]


def build_pipeline(params: dict[str, Any]):
    from sklearn.compose import ColumnTransformer  # noqa: PLC0415 - heavy: sklearn
    from sklearn.ensemble import HistGradientBoostingClassifier  # noqa: PLC0415 - heavy: sklearn
    from sklearn.pipeline import Pipeline  # noqa: PLC0415 - heavy: sklearn
    from sklearn.preprocessing import OrdinalEncoder  # noqa: PLC0415 - heavy: sklearn

    cats = list(S.CATEGORICAL_FEATURES)
    encoder = OrdinalEncoder(categories=[list(S.CATEGORIES[c]) for c in cats],
                             handle_unknown="use_encoded_value", unknown_value=np.nan,
                             encoded_missing_value=np.nan, dtype=np.float64)
    pre = ColumnTransformer([("categorical", encoder, cats),
                             ("numeric", "passthrough", list(S.NUMERIC_FEATURES) + list(S.BOOLEAN_FEATURES))],
                            remainder="drop", verbose_feature_names_out=False)
    clf = HistGradientBoostingClassifier(
        learning_rate=params["learning_rate"], max_iter=params["max_iter"],
        max_leaf_nodes=params["max_leaf_nodes"], min_samples_leaf=params["min_samples_leaf"],
        l2_regularization=params["l2_regularization"], random_state=params["random_state"],
        categorical_features=list(range(len(cats))), early_stopping=False)
    return Pipeline([("features", pre), ("model", clf)])


def _xy(df: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray]:
    if S.LABEL not in df.columns:
        raise DataError(f"missing label column {S.LABEL}")
    y = df[S.LABEL].to_numpy()
    if len(np.unique(y)) < 2:
        raise DataError(f"{S.LABEL} has a single class; cannot train")
    return feature_frame(df), y.astype(np.int64)


def _read(paths) -> pd.DataFrame:
    if isinstance(paths, pd.DataFrame):
        return paths
    frames = [read_parquet(p) for p in ([paths] if isinstance(paths, (str, Path)) else paths)]
    return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]


def train(train_data, validation_data, model_dir: str | Path, params: dict[str, Any]) -> dict[str, Any]:
    """Fit on `train_data`, score `validation_data`, write the model to `model_dir`.

    `train_data`/`validation_data` are Parquet paths (file or folder) or DataFrames.
    Returns the metadata written to model.json (schema, params, validation AUC, timings).
    """
    import joblib  # noqa: PLC0415 - heavy: joblib
    import sklearn  # noqa: PLC0415 - heavy: sklearn
    from sklearn.metrics import roc_auc_score  # noqa: PLC0415 - heavy: sklearn

    tr, va = _read(train_data), _read(validation_data)
    X, y = _xy(tr)
    Xv, yv = _xy(va)
    pipe = build_pipeline(params)
    t0 = time.perf_counter()
    pipe.fit(X, y)
    fit_s = time.perf_counter() - t0
    val_auc = float(roc_auc_score(yv, pipe.predict_proba(Xv)[:, 1]))
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    joblib.dump(pipe, model_dir / MODEL_FILE)
    schema = S.feature_schema()
    meta = {
        "features": list(S.FEATURES),
        "feature_schema": schema,
        "schema_hash": S.schema_hash(schema),
        "params": params,
        "train_rows": int(len(tr)),
        "validation_rows": int(len(va)),
        "validation_auc": round(val_auc, 6),
        "fit_seconds": round(fit_s, 3),
        "sklearn_version": sklearn.__version__,
    }
    (model_dir / META_FILE).write_text(json.dumps(meta, indent=2))
    return meta


@dataclass
class LoadedModel:
    pipeline: Any
    meta: dict[str, Any]

    def predict(self, df: pd.DataFrame) -> np.ndarray:
        """Readmission risk scores for rows of `df` (identifiers may be present; they are dropped)."""
        return self.pipeline.predict_proba(feature_frame(df))[:, 1]


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
    params = ModelSettings(**{k: v for k, v in hps.items() if k in ModelSettings.model_fields}).model_dump()
    try:
        meta = train(train_dir, val_dir, model_dir, params)
    except DataError as exc:
        # SageMaker surfaces /opt/ml/output/failure as the job's FailureReason.
        out = Path(os.environ.get("SM_OUTPUT_DATA_DIR", "/opt/ml/output/data")).parent
        try:
            out.mkdir(parents=True, exist_ok=True)
            (out / "failure").write_text(str(exc))
        except OSError:
            pass
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({"validation_auc": meta["validation_auc"], "train_rows": meta["train_rows"]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
