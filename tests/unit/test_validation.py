"""The Great Expectations gate: a clean generated batch passes, each kind of bad batch fails with a
clear line naming the column and the problem."""
from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pytest

from retrainer import schema as S
from retrainer.datagen import GenerationSpec, generate
from retrainer.errors import ConfigError, ValidationFailed
from retrainer.settings import ValidationSettings
from retrainer.validation import load_suite_config, validate_frame, validate_or_raise

# The clean data spans 2024-01..2024-03; validating "now" a year later keeps tests clock-independent.
NOW = datetime(2025, 1, 1)


@pytest.fixture(scope="module")
def clean(tmp_path_factory) -> pd.DataFrame:
    out = tmp_path_factory.mktemp("clean")
    paths = generate(out, GenerationSpec(months=3, rows_per_month=1000, seed=11))
    return pd.concat([pd.read_parquet(p) for p in paths], ignore_index=True)


@pytest.fixture(scope="module")
def settings() -> ValidationSettings:
    return ValidationSettings()


@pytest.fixture(scope="module")
def clean_result(clean, settings):
    return validate_frame(clean, settings, now=NOW)


def lines_about(result, column: str) -> list[str]:
    return [line for line in result.failure_lines() if column in line]


def test_suite_json_covers_the_contract(settings):
    config = load_suite_config(settings)
    by_type: dict[str, set] = {}
    for e in config["expectations"]:
        by_type.setdefault(e["type"], set()).add(e["kwargs"].get("column"))
    assert by_type["expect_column_to_exist"] == set(S.REQUIRED_COLUMNS)
    assert by_type["expect_column_values_to_be_in_type_list"] == set(S.REQUIRED_COLUMNS)
    assert by_type["expect_column_values_to_not_be_null"] == set(S.REQUIRED_COLUMNS)
    assert by_type["expect_column_values_to_be_between"] == set(S.NUMERIC_RANGES)
    assert by_type["expect_column_values_to_be_in_set"] == set(S.CATEGORIES) | {S.LABEL}
    # thresholds from settings and the clock are parameters, not literals
    text = json.dumps(config)
    for name in ("min_rows", "null_tolerance", "lab_null_tolerance", "label_rate_min",
                 "label_rate_max", "now"):
        assert json.dumps({"$PARAMETER": name}) in text


def test_clean_batch_passes(clean, clean_result):
    r = clean_result
    assert r.success, r.failure_lines()
    assert r.n_rows == len(clean) == 3000
    assert r.n_failed == 0 and r.failure_lines() == []
    assert r.n_expectations == len(r.results) > 100
    assert r.suite == "readmission-30d"  # generated from models/readmission-30d.yaml
    summary = r.summary()
    assert json.loads(json.dumps(summary)) == summary
    assert summary["success"] is True and summary["gx_version"].startswith("1.")
    assert summary["parameters"]["min_rows"] == 500
    row_count = next(x for x in r.results if x["type"] == "expect_table_row_count_to_be_between")
    assert row_count["observed"] == 3000 and row_count["kwargs"]["min_value"] == 500


def test_settings_fill_in_the_parameters(clean):
    r = validate_frame(clean, ValidationSettings(min_rows=5000), now=NOW)
    assert not r.success
    assert r.failure_lines() == ["table: 3000 rows, need at least 5000"]


def test_zero_rows(clean, settings):
    r = validate_frame(clean.iloc[:0], settings, now=NOW)
    assert not r.success
    assert "table: 0 rows, need at least 500" in r.failure_lines()


def test_missing_required_column(clean, settings):
    r = validate_frame(clean.drop(columns=["age"]), settings, now=NOW)
    assert not r.success
    lines = r.failure_lines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("missing required column 'age'")
    assert "Traceback" not in json.dumps(r.summary())
    json.dumps(r.results)  # per-expectation details are JSON-safe too


def test_wrong_column_type(clean, settings):
    bad = clean.assign(age=clean["age"].astype(str))
    r = validate_frame(bad, settings, now=NOW)
    assert not r.success
    lines = r.failure_lines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("age: wrong dtype str where an integer column belongs")
    assert "Traceback" not in lines[0]


def test_equivalent_dtypes_pass(clean, settings):
    ok = clean.assign(age=clean["age"].astype("int32"),
                      sex=clean["sex"].astype(object),            # plain Python strings
                      insurance=clean["insurance"].astype(str),   # pandas 3 "str" dtype
                      bmi=clean["bmi"].astype("float32"))
    r = validate_frame(ok, settings, now=NOW)
    assert r.success, r.failure_lines()


def test_nan_labels(clean, settings):
    bad = clean.copy()
    bad.loc[:4, S.LABEL] = np.nan
    r = validate_frame(bad, settings, now=NOW)
    assert not r.success
    assert f"{S.LABEL}: must not be null (5 null values, 0.2%)" in r.failure_lines()


def test_out_of_set_labels(clean, settings):
    bad = clean.copy()
    bad.loc[:4, S.LABEL] = 2
    r = validate_frame(bad, settings, now=NOW)
    assert not r.success
    assert r.failure_lines() == [f"{S.LABEL}: 5 values not in {{0, 1}} (0.17% of rows), e.g. 2"]


@pytest.mark.parametrize("label_rate_min", [0.05, 0.0])
def test_single_class_label(clean, label_rate_min):
    r = validate_frame(clean.assign(**{S.LABEL: 0}), ValidationSettings(label_rate_min=label_rate_min),
                       now=NOW)
    assert not r.success
    lines = lines_about(r, S.LABEL)
    assert any("single-class batch" in line and "missing {1}" in line for line in lines), lines
    mean_fails = any("mean 0 outside [0.05, 0.35]" in line for line in lines)
    assert mean_fails == (label_rate_min > 0)


def test_label_rate_out_of_bounds(clean, settings):
    bad = clean.copy()
    bad.loc[: len(bad) // 2, S.LABEL] = 1
    r = validate_frame(bad, settings, now=NOW)
    assert not r.success
    assert any(line.startswith(f"{S.LABEL}: mean 0.5") and "outside [0.05, 0.35]" in line
               for line in r.failure_lines()), r.failure_lines()


def test_out_of_range_values(clean, settings):
    bad = clean.copy()
    bad.loc[:9, "age"] = 150
    bad.loc[3, "sodium_mmol_l"] = 20.0
    r = validate_frame(bad, settings, now=NOW)
    assert not r.success
    assert r.failure_lines() == [
        "age: 10 values outside [18, 110] (0.33% of rows), e.g. 150",
        "sodium_mmol_l: 1 values outside [100, 180] (0.03% of rows), e.g. 20",
    ]


def test_unknown_category(clean, settings):
    bad = clean.copy()
    bad.loc[:2, "sex"] = "X"
    r = validate_frame(bad, settings, now=NOW)
    assert r.failure_lines() == ["sex: 3 values not in {'F', 'M'} (0.10% of rows)"]  # no example: free text


def test_duplicated_ids(clean, settings):
    bad = clean.copy()
    bad.loc[:36, S.ADMISSION_ID] = "A202401-000003"
    r = validate_frame(bad, settings, now=NOW)
    assert not r.success
    assert r.failure_lines() == [f"{S.ADMISSION_ID}: values must be unique (37 rows share a value)"]


def test_future_timestamps(clean, settings):
    bad = clean.copy()
    bad.loc[5, S.TIMESTAMP] = pd.Timestamp("2030-06-01")
    r = validate_frame(bad, settings)  # default now: the real clock
    assert not r.success
    lines = r.failure_lines()
    assert len(lines) == 1 and lines[0].startswith(f"{S.TIMESTAMP}: latest value is in the future (now = "), lines
    assert "2030" not in json.dumps(r.summary()) + r.to_markdown() + r.message()


def test_now_is_honoured(clean, settings):
    latest = clean[S.TIMESTAMP].max().to_pydatetime()
    before = validate_frame(clean, settings, now=latest - timedelta(seconds=1))
    assert not before.success
    assert [line for line in before.failure_lines() if "in the future" in line]
    assert validate_frame(clean, settings, now=latest).success
    aware = (latest + timedelta(hours=1)).replace(tzinfo=timezone.utc).astimezone(timezone(timedelta(hours=5)))
    assert validate_frame(clean, settings, now=aware).success


def test_heavy_nulls(clean, settings):
    bad = clean.copy()
    bad.loc[:599, "hemoglobin_g_dl"] = np.nan  # always drawn: at most 2% may be null
    bad.loc[:599, "bmi"] = np.nan              # a lab (6% missing already): at most 30%
    r = validate_frame(bad, settings, now=NOW)
    assert not r.success
    assert r.failure_lines() == ["hemoglobin_g_dl: 20.0% null (600 rows), at most 2% allowed"]
    bad.loc[:1199, "albumin_g_dl"] = np.nan     # 40% + the 18% already missing
    r = validate_frame(bad, settings, now=NOW)
    assert any(line.startswith("albumin_g_dl: ") and "at most 30% allowed" in line
               for line in r.failure_lines()), r.failure_lines()


def test_gx_prints_nothing(clean, settings, capfd, caplog):
    capfd.readouterr()
    bad = clean.drop(columns=["sex"]).assign(age=clean["age"].astype(str))
    with caplog.at_level(logging.DEBUG):
        r = validate_frame(bad, settings, now=NOW)
    assert not r.success
    out, err = capfd.readouterr()
    assert out == "" and err == ""
    assert [rec.getMessage() for rec in caplog.records if rec.name.startswith("great_expectations")] == []


def test_to_markdown(clean, settings, clean_result):
    bad = clean.copy()
    bad.loc[:36, S.ADMISSION_ID] = "A202401-000003"
    md = validate_frame(bad, settings, now=NOW).to_markdown()
    assert "FAILED" in md.splitlines()[0]
    assert "- admission_id: values must be unique (37 rows share a value" in md
    fail_rows = [row for row in md.splitlines() if row.startswith("| **FAIL**")]
    assert len(fail_rows) == 1 and "column_values_to_be_unique | admission_id" in fail_rows[0]
    ok = clean_result.to_markdown()
    assert "PASSED" in ok.splitlines()[0] and "**FAIL**" not in ok
    assert ok.count("\n| pass |") == clean_result.n_expectations


def test_validate_or_raise(clean, settings, clean_result):
    assert validate_or_raise(clean, settings, now=NOW).success
    bad = clean.drop(columns=["sex"])
    bad.loc[:9, "age"] = 150
    with pytest.raises(ValidationFailed) as info:
        validate_or_raise(bad, settings, now=NOW)
    msg = str(info.value)
    assert "\n" not in msg
    n = info.value.result.n_failed
    assert msg.startswith(f"data failed validation: {n} of {clean_result.n_expectations} expectations failed: ")
    assert "missing required column 'sex'" in msg and "age: 10 values outside [18, 110]" in msg
    assert info.value.result.success is False


def test_missing_or_broken_suite_is_a_config_error(clean, tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        validate_frame(clean, ValidationSettings(expectations_dir=tmp_path, suite="nowhere"), now=NOW)
    (tmp_path / "broken.json").write_text(json.dumps(
        {"name": "broken", "expectations": [{"type": "expect_no_such_thing", "kwargs": {}}]}))
    with pytest.raises(ConfigError, match="not a valid GX suite"):
        validate_frame(clean, ValidationSettings(expectations_dir=tmp_path, suite="broken"), now=NOW)


PLANTED_ID = "ZZPLANTED-ID-7731"
PLANTED_TEXT = "Jane Q Planted called 555-0199 re discharge"


def test_identifier_and_free_text_values_never_reported(clean, settings):
    """A duplicated admission id, free text in a category, planted patient ids and a future
    timestamp: every report the result makes (lines, summary, message, markdown, per-expectation
    dicts) carries counts only, never one of the values."""
    bad = clean.copy()
    bad.loc[:9, S.ADMISSION_ID] = PLANTED_ID
    bad.loc[:4, "discharge_disposition"] = PLANTED_TEXT
    bad.loc[:2, "patient_id"] = None
    bad.loc[7, S.TIMESTAMP] = pd.Timestamp("2031-07-04 13:37:00")
    r = validate_frame(bad, settings, now=NOW)
    assert not r.success
    lines = r.failure_lines()
    assert f"{S.ADMISSION_ID}: values must be unique (10 rows share a value)" in lines
    assert "discharge_disposition: 5 values not in" in " ".join(lines)
    reports = [json.dumps(r.summary()), r.message(), r.to_markdown(), json.dumps(r.results, default=str)]
    for text in reports:
        for planted in (PLANTED_ID, PLANTED_TEXT, "555-0199", "2031-07-04", "13:37"):
            assert planted not in text
    ts = next(x for x in r.results if x["type"] == "expect_column_max_to_be_between")
    assert ts["observed"] is None and ts["withheld"] is True
    with pytest.raises(ValidationFailed) as info:
        validate_or_raise(bad, settings, now=NOW)
    assert PLANTED_ID not in str(info.value) and PLANTED_TEXT not in str(info.value)


def test_numeric_examples_are_still_shown(clean, settings):
    bad = clean.copy()
    bad.loc[:1, "age"] = 150
    r = validate_frame(bad, settings, now=NOW)
    assert r.failure_lines() == ["age: 2 values outside [18, 110] (0.07% of rows), e.g. 150"]
