"""The active model's data contract, under the names every module reads: `S.LABEL`,
`S.FEATURES`, `S.IDENTIFIERS`, `S.COLUMN_TYPES`, ...

The contract itself is written in the model's spec (`models/<name>.yaml`, see `retrainer.spec`);
this module answers for the *active* model (`retrainer.spec.activate`: the model a flow run, CLI
command or server was started for; the default is readmission-30d). Read the names at call time
(`S.LABEL`), never bind them at import (`from .schema import LABEL`), or they stay the default
model's.
"""
from __future__ import annotations

from . import spec as _spec


def __getattr__(name: str):
    if name.isupper():
        return getattr(_spec.active(), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def contract():
    """The active model's `Contract`."""
    return _spec.active()


def age_band(age):
    """Vectorised age band labels for a pandas Series of ages (the `age_band` slice's bins)."""
    return _spec.active().age_band(age)


def feature_schema(features: tuple[str, ...] | None = None) -> dict[str, str]:
    """The model's input schema: feature name -> type kind. Its hash decides MAJOR bumps."""
    return _spec.active().feature_schema(features)


def schema_hash(schema: dict[str, str]) -> str:
    return _spec.Contract.schema_hash(schema)
