"""Backends behind small Protocols. `get_backend(settings)` is the one place that picks them;
flows only ever see a `Backend`."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol

import pandas as pd

from ..registry import Registry
from ..settings import Settings


class Trainer(Protocol):
    def fit(self, train: pd.DataFrame, validation: pd.DataFrame, params: dict[str, Any],
            workdir: Path) -> Path:
        """Train and return a local directory holding model.joblib and model.json."""
        ...


class Endpoint(Protocol):
    """Serving side: which versions take which share of traffic."""

    def set_variants(self, variants: list, *, actor: str | None = None, reason: str | None = None) -> dict[str, Any]:
        """Apply [(variant, version, weight), ...]; `actor` and `reason` go into the audit record."""
        ...
    def state(self) -> dict[str, Any]: ...


@dataclass
class Backend:
    name: str
    registry: Registry
    trainer: Trainer
    settings: Settings
    endpoint: Endpoint
    predictions: Any  # retrainer.predstore.PredictionStoreProtocol


def _local(settings: Settings) -> Backend:
    from .local import build  # noqa: PLC0415 - cycle: local imports this package

    return build(settings)


def _sagemaker(settings: Settings) -> Backend:
    from .sagemaker import build  # noqa: PLC0415 - imported only when chosen: boto3/sagemaker are slow to import

    return build(settings)


BACKENDS: dict[str, Callable[[Settings], Backend]] = {"local": _local, "sagemaker": _sagemaker}


def get_backend(settings: Settings) -> Backend:
    return BACKENDS[settings.backend](settings)
