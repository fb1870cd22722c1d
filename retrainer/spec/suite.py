"""The Great Expectations suite a model spec implies, plus the user's extra expectations
(`expectations/<model>.extra.json`).

Generated, in this order: the minimum row count; every column of the contract exists; its type;
not-null (id, timestamp and label strictly, the rest with `mostly`: `null_tolerance`, or
`lab_null_tolerance` for the spec's nullable features); numeric ranges; category sets; the
label's domain (a binary label: {0, 1}, both present, its mean between `label_rate_min` and
`label_rate_max`; otherwise its values or range); unique row ids; no timestamp after `now`. The
`$PARAMETER` values come from settings (`retrainer.validation.runtime_parameters`), whose defaults
come from the spec's `validation` and `label.rate`.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .contract import Contract
from .model import ModelSpec

TYPE_LISTS: dict[str, list[str]] = {
    "string": ["StringDtype", "str"],
    "datetime": ["datetime64[us]", "datetime64[ns]", "datetime64[ms]", "datetime64[s]"],
    "int": ["int64", "int32", "int16", "int8", "Int64Dtype"],
    "float": ["float64", "float32", "Float64Dtype"],
    "bool": ["bool", "BooleanDtype"],
}
PARAMETERS = {
    "min_rows": "ValidationSettings.min_rows (spec: validation.min_rows)",
    "null_tolerance": "ValidationSettings.null_tolerance (mostly, always-present columns)",
    "lab_null_tolerance": "ValidationSettings.lab_null_tolerance (mostly, the spec's nullable features)",
    "label_rate_min": "ValidationSettings.label_rate_min (spec: label.rate)",
    "label_rate_max": "ValidationSettings.label_rate_max (spec: label.rate)",
    "now": "the validation clock (no admission or event in the future)",
}


def _e(kind: str, **kwargs) -> dict[str, Any]:
    return {"type": f"expect_{kind}", "kwargs": kwargs}


def _p(name: str) -> dict[str, str]:
    return {"$PARAMETER": name}


def generate_suite(spec: ModelSpec, contract: Contract | None = None) -> dict[str, Any]:
    """The suite config (`gx.ExpectationSuite(**config)` builds it) for `spec`."""
    c = contract or Contract(spec)
    cols = spec.columns
    strict = {cols.id, cols.timestamp, cols.label}
    ex: list[dict[str, Any]] = [_e("table_row_count_to_be_between", min_value=_p("min_rows"))]
    ex += [_e("column_to_exist", column=col) for col in c.REQUIRED_COLUMNS]
    ex += [_e("column_values_to_be_in_type_list", column=col, type_list=TYPE_LISTS[kind])
           for col, kind in c.COLUMN_TYPES.items()]
    for col in c.REQUIRED_COLUMNS:
        if col in strict:
            ex.append(_e("column_values_to_not_be_null", column=col))
        else:
            mostly = "lab_null_tolerance" if col in c.NULLABLE_FEATURES else "null_tolerance"
            ex.append(_e("column_values_to_not_be_null", column=col, mostly=_p(mostly)))
    ex += [_e("column_values_to_be_between", column=col, min_value=lo, max_value=hi)
           for col, (lo, hi) in c.NUMERIC_RANGES.items()]
    ex += [_e("column_values_to_be_in_set", column=col, value_set=list(values))
           for col, values in c.CATEGORIES.items()]
    label = spec.label_values
    if label is not None:
        ex.append(_e("column_values_to_be_in_set", column=cols.label, value_set=list(label)))
    elif spec.label.range is not None:
        lo, hi = spec.label.range
        ex.append(_e("column_values_to_be_between", column=cols.label, min_value=lo, max_value=hi))
    if spec.task == "binary_classification":
        ex.append(_e("column_distinct_values_to_contain_set", column=cols.label, value_set=[0, 1]))
        ex.append(_e("column_mean_to_be_between", column=cols.label, min_value=_p("label_rate_min"),
                     max_value=_p("label_rate_max")))
    ex.append(_e("column_values_to_be_unique", column=cols.id))
    ex.append(_e("column_max_to_be_between", column=cols.timestamp, max_value=_p("now")))
    return {"name": spec.name, "meta": {"description": f"Gate for one training batch of {spec.name} "
                                                       f"(generated from models/{spec.name}.yaml)",
                                        "runtime_parameters": PARAMETERS},
            "expectations": ex}


def extra_path(expectations_dir: Path, model: str) -> Path:
    return Path(expectations_dir) / f"{model}.extra.json"


def load_extras(path: Path) -> list[dict[str, Any]]:
    """The user's extra expectations: a JSON list, or {"expectations": [...]}; none if no file."""
    if not path.is_file():
        return []
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"extra expectations {path} are not readable JSON ({exc})") from None
    items = data.get("expectations") if isinstance(data, dict) else data
    if not isinstance(items, list) or not all(isinstance(e, dict) and isinstance(e.get("type"), str)
                                              for e in items):
        raise ConfigError(f"extra expectations {path}: expected a list of {{\"type\": ..., \"kwargs\": ...}}")
    return items
