"""The data contract a model spec implies: the column lists every module reads (the names
`retrainer.schema` has always exposed), derived once from the spec."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import cached_property

from .model import ModelSpec

_KIND = {"int": "int", "float": "float", "bool": "bool", "category": "string"}


@dataclass(frozen=True)
class Contract:
    spec: ModelSpec

    # ---- names -------------------------------------------------------------------------------
    @property
    def MODEL(self) -> str:
        return self.spec.name

    @property
    def TASK(self) -> str:
        return self.spec.task

    @property
    def LABEL(self) -> str:
        return self.spec.columns.label

    @property
    def TIMESTAMP(self) -> str:
        return self.spec.columns.timestamp

    @property
    def ADMISSION_ID(self) -> str:  # the row id (the name predates other models)
        return self.spec.columns.id

    @property
    def ROW_ID(self) -> str:
        return self.spec.columns.id

    @property
    def ENTITY(self) -> str | None:
        return self.spec.columns.entity

    # ---- column groups -------------------------------------------------------------------------
    @cached_property
    def IDENTIFIERS(self) -> tuple[str, ...]:
        return tuple(c for c in self.spec.identifiers if c != self.spec.columns.id)

    @cached_property
    def KEYS(self) -> tuple[str, ...]:
        c = self.spec.columns
        return (c.id,) + ((c.entity,) if c.entity else ())

    @cached_property
    def CATEGORIES(self) -> dict[str, tuple[str, ...]]:
        return {n: tuple(f.values) for n, f in self.spec.features.items() if f.type == "category"}

    @cached_property
    def NUMERIC_RANGES(self) -> dict[str, tuple[float, float]]:
        return {n: _num(f.range) for n, f in self.spec.features.items() if f.type in ("int", "float")}

    @cached_property
    def INTEGER_FEATURES(self) -> tuple[str, ...]:
        return tuple(n for n, f in self.spec.features.items() if f.type == "int")

    @cached_property
    def BOOLEAN_FEATURES(self) -> tuple[str, ...]:
        return tuple(n for n, f in self.spec.features.items() if f.type == "bool")

    @cached_property
    def NULLABLE_FEATURES(self) -> tuple[str, ...]:
        return tuple(n for n, f in self.spec.features.items() if f.nullable)

    @cached_property
    def MONITORED_FEATURES(self) -> tuple[str, ...]:
        return tuple(n for n in self.FEATURES if self.spec.features[n].monitored)

    @property
    def CATEGORICAL_FEATURES(self) -> tuple[str, ...]:
        return tuple(self.CATEGORIES)

    @property
    def NUMERIC_FEATURES(self) -> tuple[str, ...]:
        return tuple(self.NUMERIC_RANGES)

    @cached_property
    def FEATURES(self) -> tuple[str, ...]:
        """The model's inputs in a fixed order: numeric, then categorical, then boolean."""
        return self.NUMERIC_FEATURES + self.CATEGORICAL_FEATURES + self.BOOLEAN_FEATURES

    @property
    def SCORING_COLUMNS(self) -> tuple[str, ...]:
        return self.FEATURES

    @cached_property
    def COLUMN_TYPES(self) -> dict[str, str]:
        """Every column of a training batch with its dtype kind: id, timestamp, identifiers
        (datetime ones last), features, label."""
        s = self.spec
        ids = {n: i.type for n, i in s.identifiers.items() if n != s.columns.id}
        return {
            s.columns.id: "string",
            s.columns.timestamp: "datetime",
            **{n: t for n, t in ids.items() if t != "datetime"},
            **{n: t for n, t in ids.items() if t == "datetime"},
            **{n: _KIND[s.features[n].type] for n in self.FEATURES},
            s.columns.label: s.label.type,
        }

    @property
    def REQUIRED_COLUMNS(self) -> tuple[str, ...]:
        return tuple(self.COLUMN_TYPES)

    @cached_property
    def SLICES(self) -> dict[str, str]:
        return {name: sl.column for name, sl in self.spec.slices.items()}

    @cached_property
    def AGE_BANDS(self) -> tuple[tuple[float, float, str], ...]:
        sl = self.spec.slices.get("age_band")
        return tuple(tuple(b) for b in (sl.bins or [])) if sl else ()

    # ---- helpers -------------------------------------------------------------------------------
    def slice_values(self, df, name: str):
        """The slice `name` of `df` as a string Series (binned when the slice has bins)."""
        import pandas as pd  # noqa: PLC0415 - heavy: pandas; the contract is otherwise light

        sl = self.spec.slices[name]
        col = df[sl.column]
        if not sl.bins:
            return col.astype("string")
        bins = [b[0] for b in sl.bins] + [sl.bins[-1][1]]
        return pd.cut(col, bins=bins, right=False, labels=[b[2] for b in sl.bins]).astype("string")

    def age_band(self, age):
        """Vectorised age band labels (the `age_band` slice's bins) for a Series of ages."""
        import pandas as pd  # noqa: PLC0415 - heavy: pandas

        bands = self.AGE_BANDS
        bins = [b[0] for b in bands] + [bands[-1][1]]
        return pd.cut(age, bins=bins, right=False, labels=[b[2] for b in bands]).astype("string")

    def feature_schema(self, features: tuple[str, ...] | None = None) -> dict[str, str]:
        """The model's input schema: feature name -> type kind. Its hash decides MAJOR bumps."""
        return {f: self.COLUMN_TYPES[f] for f in (self.FEATURES if features is None else features)}

    @staticmethod
    def schema_hash(schema: dict[str, str]) -> str:
        blob = json.dumps(schema, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def _num(r) -> tuple[float, float]:
    lo, hi = r
    return (int(lo) if float(lo).is_integer() else lo, int(hi) if float(hi).is_integer() else hi)
