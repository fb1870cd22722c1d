"""The embedded default: on-disk registry, in-process scikit-learn training."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from ..registry import LocalRegistry
from ..settings import Settings
from ..training import train
from . import Backend


class LocalTrainer:
    def fit(self, train_df: pd.DataFrame, validation: pd.DataFrame, params: dict[str, Any],
            workdir: Path) -> Path:
        model_dir = Path(workdir) / "model"
        train(train_df, validation, model_dir, params)
        return model_dir


def build(settings: Settings) -> Backend:
    from ..predstore import PredictionStore
    from ..serving import LocalEndpoint

    return Backend(name="local", registry=LocalRegistry(settings.registry_dir, settings.model_name),
                   trainer=LocalTrainer(), settings=settings, endpoint=LocalEndpoint(settings),
                   predictions=PredictionStore(settings.home))
