"""The Great Expectations gate: validate one training batch against the readmission suite.

The expectation list lives in one place, `expectations/<suite>.json` (GX 1.x suite JSON). Thresholds
that depend on settings or on the clock are GX suite parameters (`{"$PARAMETER": "min_rows"}`) and
are filled in at validation time from `ValidationSettings` and `now` (`runtime_parameters`).

Each call builds a fresh ephemeral GX context (no files, nothing shared between calls), with
progress bars off and GX's logging and warnings silenced. Great Expectations is imported lazily:
importing it costs several seconds, and only the validation step needs it.

Failures come back as data (`ValidationResult`), one readable line per failed expectation; a
missing column, a wrong dtype or an empty batch is a failure, never a GX traceback.

No values of identifier, key, timestamp or free-text columns leave this module: for those columns
the result, its lines, summary, markdown and error message carry counts only (GX's unexpected
examples and observed values are dropped here, where the GX result is read), because the result is
published to Prefect (artifacts, state messages, logs, events). Example values are kept only for
numeric and boolean feature columns and the label (`shows_values`).
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from . import schema as S
from .clock import utcnow
from .errors import ConfigError, DataError, ValidationFailed
from .settings import ValidationSettings

_INDEX_KEY = "retrainer_index"  # injected into each expectation's meta to restore suite order
_EXAMPLES = 3
# Columns whose values are never reported: identifiers, join keys, timestamps.
_VALUE_KINDS = ("int", "float", "bool")


def sensitive_columns() -> frozenset[str]:
    """Columns whose values are never reported: the active model's identifiers, keys, timestamp."""
    return frozenset((*S.IDENTIFIERS, *S.KEYS, S.TIMESTAMP))


def shows_values(column: str | None) -> bool:
    """Whether values of `column` may appear in a report: only numeric and boolean schema columns
    that are not identifiers, keys or timestamps. Identifier, timestamp and string columns
    (categories can hold free text) and columns outside the schema report counts only."""
    return (column is not None and column not in sensitive_columns()
            and S.COLUMN_TYPES.get(column) in _VALUE_KINDS)


# ---------------------------------------------------------------------------------------------
# Suite and runtime parameters


def suite_path(settings: ValidationSettings) -> Path:
    """The suite's file, or, for the suite generated from the active model's spec, its spec."""
    if settings.suite is None:
        from .spec import spec_path  # noqa: PLC0415 - cycle: spec -> settings

        return spec_path(S.MODEL)
    return Path(settings.expectations_dir) / f"{settings.suite}.json"


def load_suite_config(settings: ValidationSettings) -> dict:
    """The suite as a dict (`gx.ExpectationSuite(**config)` builds it): generated from the active
    model's spec plus `expectations/<model>.extra.json` (settings.suite None, the default), or the
    JSON file `<expectations_dir>/<suite>.json` when settings.suite names one."""
    if settings.suite is None:
        from .spec.suite import extra_path, generate_suite, load_extras  # noqa: PLC0415 - cycle

        config = generate_suite(S.contract().spec, S.contract())
        config["expectations"] += load_extras(extra_path(settings.expectations_dir, S.MODEL))
        return config
    path = suite_path(settings)
    try:
        config = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"expectation suite {path} does not exist (validation.suite / "
                          "validation.expectations_dir)") from None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"expectation suite {path} is not readable JSON ({exc})") from None
    if not isinstance(config, dict) or not isinstance(config.get("expectations"), list):
        raise ConfigError(f"expectation suite {path} has no 'expectations' list")
    config.setdefault("name", settings.suite)
    return config


def suite_parameter_names(config: dict) -> set[str]:
    """Names of the `{"$PARAMETER": name}` placeholders used by a suite config."""
    names: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("$PARAMETER"), str):
                names.add(node["$PARAMETER"])
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(config.get("expectations", []))
    return names


def _naive_utc(now: datetime | None) -> datetime:
    """Admission timestamps are naive UTC; compare them with a naive UTC `now` (the clock's by default)."""
    if now is None:
        now = utcnow()
    if isinstance(now, pd.Timestamp):
        now = now.to_pydatetime()
    if not isinstance(now, datetime):
        raise TypeError(f"now must be a datetime, not {type(now).__name__}")
    if now.tzinfo is not None:
        now = now.astimezone(timezone.utc).replace(tzinfo=None)
    return now


def runtime_parameters(settings: ValidationSettings, now: datetime | None = None) -> dict[str, Any]:
    """Values for the suite's `$PARAMETER` placeholders."""
    if settings.label_rate_min > settings.label_rate_max:
        raise ConfigError(f"validation.label_rate_min ({settings.label_rate_min}) is above "
                          f"validation.label_rate_max ({settings.label_rate_max})")
    return {
        "min_rows": settings.min_rows,
        "null_tolerance": settings.null_tolerance,
        "lab_null_tolerance": settings.lab_null_tolerance,
        "label_rate_min": settings.label_rate_min,
        "label_rate_max": settings.label_rate_max,
        "now": _naive_utc(now),
    }


# ---------------------------------------------------------------------------------------------
# Result


@dataclass
class ValidationResult:
    success: bool
    n_rows: int
    n_expectations: int
    n_failed: int
    results: list[dict] = field(default_factory=list)  # one per expectation, in suite order
    suite: str = ""
    gx_version: str = ""
    parameters: dict = field(default_factory=dict)  # runtime parameter values used (JSON-safe)

    @property
    def failed(self) -> list[dict]:
        return [r for r in self.results if not r["success"]]

    def failure_lines(self) -> list[str]:
        """One readable line per failed expectation.

        Checks that could not run because their column is missing or has the wrong dtype are
        folded into that column's line instead of producing lines of their own.
        """
        failed = self.failed
        missing = {r["column"] for r in failed if r["type"] == "expect_column_to_exist"}
        wrong_type = {r["column"] for r in failed
                      if r["type"] in _TYPE_EXPECTATIONS and not r["error"]}
        folded: dict[str, int] = {}
        primary: list[dict] = []
        for r in failed:
            col = r["column"]
            if (col in missing and r["type"] != "expect_column_to_exist") or (
                    col in wrong_type and r["error"]):
                folded[col] = folded.get(col, 0) + 1
                continue
            primary.append(r)
        lines = []
        for r in primary:
            line = r["message"]
            is_root = r["type"] == "expect_column_to_exist" or (
                r["type"] in _TYPE_EXPECTATIONS and r["column"] in wrong_type)
            n = folded.pop(r["column"], 0) if is_root else 0
            if n:
                line += f" ({n} dependent check{'s' if n > 1 else ''} not evaluated)"
            lines.append(line)
        return lines

    def summary(self) -> dict:
        """A compact JSON-serialisable record for lineage."""
        return {
            "success": self.success,
            "suite": self.suite,
            "gx_version": self.gx_version,
            "n_rows": self.n_rows,
            "n_expectations": self.n_expectations,
            "n_failed": self.n_failed,
            "failures": self.failure_lines(),
            "parameters": self.parameters,
        }

    def message(self) -> str:
        """One line for an error: counts and every failure line."""
        if self.success:
            return f"data passed validation ({self.n_expectations} expectations, suite {self.suite})"
        return (f"data failed validation: {self.n_failed} of {self.n_expectations} expectations "
                f"failed: " + "; ".join(self.failure_lines()))

    def to_markdown(self) -> str:
        """A report for a Prefect markdown artifact: status line, failures, table of expectations."""
        status = "PASSED" if self.success else "FAILED"
        out = [
            f"## Data validation {status}",
            "",
            f"Suite `{self.suite}` (Great Expectations {self.gx_version}): "
            f"{self.n_expectations - self.n_failed} of {self.n_expectations} expectations passed "
            f"on {self.n_rows:,} rows.",
            "",
        ]
        if not self.success:
            out += ["### Failures", ""] + [f"- {_md(line)}" for line in self.failure_lines()] + [""]
        out += ["### Expectations", "",
                "| Result | Expectation | Column | Observed | Unexpected | Parameters |",
                "|---|---|---|---|---|---|"]
        ordered = self.failed + [r for r in self.results if r["success"]]
        for r in ordered:
            if r["error"]:
                observed = f"not evaluated: {r['error']}"
            elif r.get("withheld"):
                observed = "(value withheld)"
            else:
                observed = "" if r["observed"] is None else _fmt(r["observed"])
            unexpected = ""
            if r["unexpected_count"] is not None:
                unexpected = f"{r['unexpected_count']}"
                if r["unexpected_percent"] is not None:
                    unexpected += f" ({r['unexpected_percent']:.2f}%)"
            params = ", ".join(f"{k}={_fmt(v)}" for k, v in r["kwargs"].items())
            cells = ["pass" if r["success"] else "**FAIL**", r["type"].removeprefix("expect_"),
                     r["column"] or "(table)", observed, unexpected, params]
            out.append("| " + " | ".join(_md(str(c), 120) for c in cells) + " |")
        return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------------------------
# Validation


def validate_frame(df: pd.DataFrame, settings: ValidationSettings,
                   now: datetime | None = None) -> ValidationResult:
    """Validate a batch against the suite. Bad data gives `success=False`, never an exception.

    Raises ConfigError for a missing or unreadable suite, DataError if GX itself cannot run.
    """
    if not isinstance(df, pd.DataFrame):
        raise DataError(f"validation needs a pandas DataFrame, got {type(df).__name__}")
    dupes = sorted({str(c) for c in df.columns[df.columns.duplicated()]})
    if dupes:
        raise DataError(f"batch has duplicated column names: {', '.join(dupes)}")
    config = load_suite_config(settings)
    params = runtime_parameters(settings, now)
    used = suite_parameter_names(config)
    unknown = used - set(params)
    if unknown:
        raise ConfigError(f"expectation suite {suite_path(settings)} uses unknown parameters: "
                          f"{', '.join(sorted(unknown))}")
    # a label rate only applies to a suite that checks one (a binary label): not reported otherwise
    params = {k: v for k, v in params.items() if k in used or not k.startswith("label_rate_")}
    raw = [dict(e) for e in config["expectations"]]
    for i, e in enumerate(raw):
        e["meta"] = {**(e.get("meta") or {}), _INDEX_KEY: i}
    frame = _normalise_dtypes(df)

    with _quiet():
        import great_expectations as gx  # noqa: PLC0415 - heavy: great_expectations
        from great_expectations.data_context.types.base import ProgressBarsConfig  # noqa: PLC0415 - heavy: gx

        try:
            suite = gx.ExpectationSuite(**{**config, "expectations": raw})
        except Exception as exc:
            first = (str(exc).splitlines() or [""])[0]
            raise ConfigError(f"expectation suite {suite_path(settings)} is not a valid GX suite: "
                              f"{type(exc).__name__}: {first}") from None
        # GX silently drops expectations it cannot build (e.g. a misspelt type): refuse that.
        kept = {(e.meta or {}).get(_INDEX_KEY) for e in suite.expectations}
        dropped = [e.get("type") for i, e in enumerate(raw) if i not in kept]
        if dropped or not raw:
            why = f"unknown expectations {', '.join(map(str, dropped))}" if dropped else "no expectations"
            raise ConfigError(f"expectation suite {suite_path(settings)} is not a valid GX suite: {why}")
        try:
            ctx = gx.get_context(mode="ephemeral")
            ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
            asset = ctx.data_sources.add_pandas("retrainer").add_dataframe_asset("batch")
            batch = asset.add_batch_definition_whole_dataframe("whole").get_batch(
                batch_parameters={"dataframe": frame})
            gx_result = batch.validate(
                suite, expectation_parameters=params,
                result_format={"result_format": "SUMMARY", "partial_unexpected_count": 20})
        except Exception as exc:
            first = (str(exc).splitlines() or [""])[0]
            raise DataError(f"great expectations could not run suite {config['name']}: "
                            f"{type(exc).__name__}: {first}") from exc
        results = [_result_dict(r.to_json_dict(), raw, df) for r in gx_result.results]
        if len(results) != len(raw):
            raise DataError(f"great expectations returned {len(results)} results for "
                            f"{len(raw)} expectations of suite {config['name']}")

    results.sort(key=lambda r: r.pop("_index"))
    n_failed = sum(not r["success"] for r in results)
    return ValidationResult(
        success=bool(gx_result.success) and n_failed == 0,
        n_rows=len(df),
        n_expectations=len(results),
        n_failed=n_failed,
        results=results,
        suite=config["name"],
        gx_version=gx.__version__,
        parameters={k: v.isoformat() if isinstance(v, datetime) else v for k, v in params.items()},
    )


def validate_or_raise(df: pd.DataFrame, settings: ValidationSettings,
                      now: datetime | None = None) -> ValidationResult:
    """Validate; raise ValidationFailed (carrying the result) if any expectation failed."""
    result = validate_frame(df, settings, now=now)
    if not result.success:
        raise ValidationFailed(result.message(), result)
    return result


@contextlib.contextmanager
def _quiet():
    """Import GX and silence it while it runs: warnings ignored, every GX logger disabled.

    Raising the level of the "great_expectations" parent is not enough: some GX modules set
    their own logger level (e.g. INFO "Created temporary directory ..." per ephemeral context).
    Everything is restored afterwards.
    """
    parent = logging.getLogger("great_expectations")
    parent_level = parent.level
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        parent.setLevel(logging.CRITICAL + 10)
        try:
            import great_expectations  # noqa: PLC0415, F401  (lazy: ~7 s; its import logs and warns)

            loggers = [lg for name, lg in list(logging.root.manager.loggerDict.items())
                       if isinstance(lg, logging.Logger) and name.split(".")[0] == "great_expectations"]
            saved = [(lg, lg.disabled) for lg in loggers]
            for lg in loggers:
                lg.disabled = True
            try:
                yield
            finally:
                for lg, disabled in saved:
                    lg.disabled = disabled
        finally:
            parent.setLevel(parent_level)


def _normalise_dtypes(df: pd.DataFrame) -> pd.DataFrame:
    """Make every pandas string dtype the one GX's type list can name ("StringDtype").

    pandas 3 has several equivalent string dtypes ("str" = StringDtype(na_value=nan), python or
    pyarrow storage); GX only matches `StringDtype()` exactly. Values are unchanged.
    """
    target = pd.StringDtype()
    cols = [c for c in df.columns if isinstance(df[c].dtype, pd.StringDtype) and df[c].dtype != target]
    if not cols:
        return df
    out = df.copy(deep=False)
    for c in cols:
        out[c] = df[c].astype(target)
    return out


# ---------------------------------------------------------------------------------------------
# Turning GX results into plain dicts and lines

_TYPE_EXPECTATIONS = ("expect_column_values_to_be_in_type_list", "expect_column_values_to_be_of_type")
_KIND_WORDS = {"int": "an integer", "float": "a float", "bool": "a boolean", "string": "a string",
               "datetime": "a datetime"}


def _exception(info: dict | None) -> str | None:
    """First line of the exception a GX expectation raised, or None."""
    if not info:
        return None
    candidates = [info] + [v for v in info.values() if isinstance(v, dict)]
    for c in candidates:
        if c.get("raised_exception"):
            msg = (c.get("exception_message") or "").strip()
            return (msg.splitlines() or ["error"])[0][:200]
    return None


def _result_dict(r: dict, raw: list[dict], df: pd.DataFrame) -> dict:
    cfg = r.get("expectation_config") or {}
    kwargs = dict(cfg.get("kwargs") or {})
    kwargs.pop("batch_id", None)
    column = kwargs.pop("column", None)
    index = (cfg.get("meta") or {}).get(_INDEX_KEY, len(raw))
    raw_kwargs = (raw[index].get("kwargs") or {}) if index < len(raw) else {}
    res = r.get("result") or {}
    observed = res.get("observed_value")
    withheld = False
    if cfg.get("type") in _TYPE_EXPECTATIONS and column in df.columns:
        observed = str(df[column].dtype)
    elif column is not None and not shows_values(column) and observed is not None and not (
            isinstance(observed, (int, float)) and not isinstance(observed, bool)):
        observed, withheld = None, True  # e.g. the latest admission timestamp: a value, not a count
    if column is not None and not shows_values(column):
        examples: list = []
    else:
        examples = [c["value"] for c in res.get("partial_unexpected_counts") or []] or \
            list(dict.fromkeys(_hashable(v) for v in res.get("partial_unexpected_list") or []))
    error = _exception(r.get("exception_info"))
    if error and column is not None and not shows_values(column):
        error = "an error was raised (details withheld: they may quote values)"
    d = {
        "type": cfg.get("type", "unknown"),
        "column": column,
        "success": bool(r.get("success")),
        "observed": observed,
        "unexpected_count": res.get("unexpected_count"),
        "unexpected_percent": res.get("unexpected_percent"),
        "examples": examples[:_EXAMPLES],
        "kwargs": kwargs,
        "from_parameters": {k: v["$PARAMETER"] for k, v in raw_kwargs.items()
                       if isinstance(v, dict) and "$PARAMETER" in v},
        "error": error,
        "withheld": withheld,
        "_index": index,
    }
    if cfg.get("type") == "expect_column_distinct_values_to_contain_set":
        d["missing_values"] = list(res.get("partial_missing_list") or [])
        d["unexpected_count"] = res.get("missing_count")
    d["message"] = None if d["success"] else _line(d)
    return d


def _hashable(v: Any) -> Any:
    return json.dumps(v, sort_keys=True) if isinstance(v, (list, dict)) else v


def _line(d: dict) -> str:
    t, col, kw = d["type"], d["column"], d["kwargs"]
    where = col if col is not None else "table"
    obs, cnt, pct = d["observed"], d["unexpected_count"], d["unexpected_percent"]
    eg = f", e.g. {', '.join(_fmt(v) for v in d['examples'])}" if d["examples"] else ""
    if t == "expect_column_to_exist":
        return f"missing required column '{col}'"
    if d["error"]:
        return f"{where}: {t.removeprefix('expect_')} could not be evaluated ({d['error']})"
    if t in _TYPE_EXPECTATIONS:
        kind = S.COLUMN_TYPES.get(col)
        allowed = kw.get("type_list") or [kw.get("type_")]
        want = f"{_KIND_WORDS[kind]} column" if kind in _KIND_WORDS else "one of the allowed types"
        return f"{col}: wrong dtype {obs} where {want} belongs (allowed: {', '.join(map(str, allowed))})"
    if t == "expect_table_row_count_to_be_between":
        return f"table: {obs} rows, {_bounds_text(kw, 'need')}"
    if t == "expect_column_values_to_not_be_null":
        mostly = kw.get("mostly", 1)
        n_null = cnt or 0
        share = f"{pct:.1f}%" if pct is not None else "?"
        if mostly >= 1:
            return f"{col}: must not be null ({n_null} null values, {share})"
        return f"{col}: {share} null ({n_null} rows), at most {_pct(1 - mostly)} allowed"
    if t == "expect_column_values_to_be_between":
        return (f"{col}: {cnt} values outside [{_fmt(kw.get('min_value'))}, "
                f"{_fmt(kw.get('max_value'))}]{_share(pct)}{eg}")
    if t == "expect_column_values_to_be_in_set":
        return f"{col}: {cnt} values not in {_fmt_set(kw.get('value_set'))}{_share(pct)}{eg}"
    if t == "expect_column_values_to_not_be_in_set":
        return f"{col}: {cnt} values in forbidden set {_fmt_set(kw.get('value_set'))}{_share(pct)}{eg}"
    if t == "expect_column_distinct_values_to_contain_set":
        missing = d.get("missing_values") or []
        present = len(kw.get("value_set") or []) - (d["unexpected_count"] or 0)
        if col == S.LABEL and present == 1:
            return (f"{col}: single-class batch, both classes {_fmt_set(kw.get('value_set'))} "
                    f"must occur, missing {_fmt_set(missing)}")
        return f"{col}: every value of {_fmt_set(kw.get('value_set'))} must occur, missing {_fmt_set(missing)}"
    if t == "expect_column_values_to_be_unique":
        return f"{col}: values must be unique ({cnt} rows share a value{eg})"
    if t in ("expect_column_mean_to_be_between", "expect_column_max_to_be_between",
             "expect_column_min_to_be_between", "expect_column_median_to_be_between",
             "expect_column_sum_to_be_between", "expect_column_stdev_to_be_between"):
        stat = t.removeprefix("expect_column_").removesuffix("_to_be_between")
        if d.get("withheld"):
            if d["from_parameters"].get("max_value") == "now":
                return f"{col}: latest value is in the future (now = {_fmt(kw.get('max_value'))})"
            return f"{col}: {stat} {_bounds_text(kw, 'must be')} (value withheld)"
        if obs is None or (isinstance(obs, float) and math.isnan(obs)) or obs == "NaT":
            return f"{col}: {stat} undefined (no values), {_bounds_text(kw, 'must be')}"
        if d["from_parameters"].get("max_value") == "now":
            return f"{col}: latest value {_fmt(obs)} is in the future (now = {_fmt(kw.get('max_value'))})"
        lo, hi = kw.get("min_value"), kw.get("max_value")
        if lo is not None and hi is not None:
            return f"{col}: {stat} {_fmt(obs)} outside [{_fmt(lo)}, {_fmt(hi)}]"
        return f"{col}: {stat} {_fmt(obs)}, {_bounds_text(kw, 'must be')}"
    detail = f"observed {_fmt(obs)}" if obs is not None else (f"{cnt} unexpected values{eg}" if cnt else "failed")
    return f"{where}: {t.removeprefix('expect_')} failed ({detail})"


def _bounds_text(kw: dict, verb: str) -> str:
    lo, hi = kw.get("min_value"), kw.get("max_value")
    if lo is not None and hi is not None:
        return f"{verb} within [{_fmt(lo)}, {_fmt(hi)}]"
    if lo is not None:
        return f"{verb} at least {_fmt(lo)}"
    if hi is not None:
        return f"{verb} at most {_fmt(hi)}"
    return "no bounds"


def _share(pct: float | None) -> str:
    return f" ({pct:.2f}% of rows)" if pct is not None else ""


def _pct(x: float) -> str:
    return f"{100 * x:.4g}%"


def _fmt(v: Any) -> str:
    if isinstance(v, str):
        return repr(v)
    if isinstance(v, bool) or v is None:
        return str(v)
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_fmt(x) for x in v) + "]"
    if isinstance(v, datetime):
        return repr(v.isoformat())
    return str(v)


def _fmt_set(values: Any) -> str:
    values = list(values or [])
    return "{" + ", ".join(_fmt(v) for v in values) + "}" if values else "{}"


def _md(text: str, limit: int | None = None) -> str:
    text = text.replace("|", "\\|").replace("\n", " ")
    if limit and len(text) > limit:
        text = text[: limit - 1] + "…"
    return text
