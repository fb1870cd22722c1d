"""The Great Expectations suite generated from a model spec: the readmission suite holds exactly
the expectations of the hand-written expectations/readmission_batch.json; the lead-scoring suite
passes its generated data and catches bad batches; extra expectations; the hand-written file
still works when named."""
from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pandas as pd
import pytest

from retrainer import spec as specs
from retrainer.errors import ConfigError
from retrainer.settings import ValidationSettings, load_settings
from retrainer.spec.suite import generate_suite
from retrainer.validation import load_suite_config, validate_frame

REPO = Path(__file__).resolve().parents[2]


def _canon(expectations) -> list[str]:
    return sorted(json.dumps({"type": e["type"], "kwargs": e["kwargs"]}, sort_keys=True) for e in expectations)


def test_generated_readmission_suite_equals_the_hand_written_one():
    hand = json.loads((REPO / "expectations" / "readmission_batch.json").read_text())["expectations"]
    generated = generate_suite(specs.load_spec("readmission-30d"))["expectations"]
    assert len(generated) == len(hand) == 152
    missing, extra = set(_canon(hand)) - set(_canon(generated)), set(_canon(generated)) - set(_canon(hand))
    assert not missing and not extra, (sorted(missing)[:3], sorted(extra)[:3])
    assert _canon(generated) == _canon(hand)  # and no expectation twice


@pytest.fixture(scope="module")
def leads() -> pd.DataFrame:
    import tempfile

    from examples.lead_scoring.datagen import generate

    with tempfile.TemporaryDirectory() as d:
        files = generate(d, periods=3, rows_per_period=400, seed=5)
        return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)


NOW = datetime(2024, 4, 1)


def _lead_settings() -> ValidationSettings:
    return load_settings(model_name="lead-scoring").validation


def test_lead_scoring_batches_pass_and_bad_ones_fail_on_the_right_expectation(leads):
    with specs.using("lead-scoring"):
        vs = _lead_settings()
        assert vs.lab_null_tolerance == 0.5  # the spec's nullable_tolerance
        ok = validate_frame(leads, vs, now=NOW)
        assert ok.success, ok.failure_lines()
        # 59 columns (exist, type, not-null), 31 ranges, 8 category sets, label, unique ids, no future
        assert ok.suite == "lead-scoring" and ok.n_expectations == 1 + 3 * 59 + 31 + 8 + 1 + 2
        bad = leads.copy()
        bad.loc[0, "lead_score"] = 6                       # outside the label's domain
        bad.loc[1, "company_tier"] = "Startup"             # not in the category set
        bad.loc[2, "lead_id"] = bad.loc[3, "lead_id"]      # duplicate id
        bad.loc[4, "lead_ts"] = pd.Timestamp("2030-01-01")  # in the future
        bad.loc[5, "intent_score"] = 140.0                 # outside its range
        r = validate_frame(bad, vs, now=NOW)
        failed = {(x["type"], x["column"]) for x in r.results if not x["success"]}
        assert failed == {("expect_column_values_to_be_in_set", "lead_score"),
                          ("expect_column_values_to_be_in_set", "company_tier"),
                          ("expect_column_values_to_be_unique", "lead_id"),
                          ("expect_column_max_to_be_between", "lead_ts"),
                          ("expect_column_values_to_be_between", "intent_score")}
        # identifiers and ids never show their values in the report
        assert not any("L0000" in line for line in r.failure_lines())


def test_extra_expectations_are_appended_and_a_bad_file_is_one_line(tmp_path, leads):
    with specs.using("lead-scoring"):
        vs = _lead_settings().model_copy(update={"expectations_dir": tmp_path})
        base = len(load_suite_config(vs)["expectations"])
        (tmp_path / "lead-scoring.extra.json").write_text(json.dumps([
            {"type": "expect_column_mean_to_be_between", "kwargs": {"column": "lead_score", "min_value": 2.5,
                                                                    "max_value": 4.0}}]))
        assert len(load_suite_config(vs)["expectations"]) == base + 1
        r = validate_frame(leads, vs, now=NOW)
        assert r.success and r.n_expectations == base + 1
        (tmp_path / "lead-scoring.extra.json").write_text("{not json")
        with pytest.raises(ConfigError, match=r"lead-scoring.extra.json are not readable JSON"):
            load_suite_config(vs)


def test_a_named_suite_file_is_still_used_as_written():
    vs = ValidationSettings(suite="readmission_batch")
    assert load_suite_config(vs)["name"] == "readmission_batch"


def _spec_file(tmp_path: Path, edit) -> Path:
    text = edit((REPO / "models" / "lead-scoring.yaml").read_text())
    p = tmp_path / "spec.yaml"
    p.write_text(text)
    return p


@pytest.mark.parametrize("edit, message", [
    (lambda t: t.replace("  label: lead_score\n", ""), "columns.label: Field required"),
    (lambda t: t.replace("  region: {", "  fit_score: {type: float, range: [0, 1]}\n  region: {"),
     "'fit_score' is listed twice"),
    (lambda t: t.replace("task: regression", "task: forecasting"), "task: Input should be"),
    (lambda t: t.replace("retrainer.training:xgboost_regressor", "lead_models.missing:fit"),
     "training entry point 'lead_models.missing:fit' cannot be imported: ModuleNotFoundError"),
])
def test_retrainer_models_check_gives_one_line_per_bad_spec(tmp_path, edit, message):
    import subprocess
    import sys

    path = _spec_file(tmp_path, edit)
    exe = Path(sys.executable).parent / "retrainer"
    out = subprocess.run([str(exe), "models", "check", str(path)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.count("\n") == 1 and message in out.stderr and "Traceback" not in out.stderr
    ok = subprocess.run([str(exe), "models", "check", "lead-scoring"], capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0 and ok.stdout.startswith("ok: lead-scoring: regression, 51 features")


def _frame_from_contract(n: int = 600, seed: int = 3) -> pd.DataFrame:
    """A valid batch built from the active contract alone (numpy; no example generator)."""
    import numpy as np

    from retrainer import schema as S

    rng = np.random.default_rng(seed)
    spec = S.contract().spec
    out: dict[str, object] = {}
    for col, kind in S.COLUMN_TYPES.items():
        if col == S.LABEL:
            out[col] = rng.choice(np.asarray(spec.label_values, dtype="int64"), n)
        elif col == S.ADMISSION_ID:
            out[col] = pd.array([f"ID{i:06d}" for i in range(n)], dtype="string")
        elif kind == "datetime":
            out[col] = pd.Timestamp("2024-03-01") + pd.to_timedelta(rng.integers(0, 7 * 86400, n), unit="s")
        elif col in S.CATEGORIES:
            out[col] = pd.array(rng.choice(list(S.CATEGORIES[col]), n), dtype="string")
        elif kind == "string":
            out[col] = pd.array([f"{col}-{i % 97}" for i in range(n)], dtype="string")
        elif kind == "bool":
            out[col] = rng.random(n) < 0.3
        else:
            lo, hi = S.NUMERIC_RANGES[col]
            out[col] = (rng.integers(int(lo), int(hi) + 1, n) if kind == "int" else rng.uniform(lo, hi, n))
    df = pd.DataFrame(out)
    for col in S.NULLABLE_FEATURES:  # a nullable feature is allowed its share of nulls
        df.loc[df.sample(frac=0.3, random_state=seed).index, col] = np.nan
    return df


def test_a_batch_built_from_the_lead_scoring_contract_passes_and_each_fault_fails():
    with specs.using("lead-scoring"):
        vs = _lead_settings()
        df = _frame_from_contract()
        ok = validate_frame(df, vs, now=NOW)
        assert ok.success, ok.failure_lines()
        # a regression label has no rate: the label_rate_* parameters are neither used nor reported
        assert "label_rate_min" not in ok.parameters and ok.parameters["min_rows"] == 500
        faults = {
            ("expect_column_values_to_be_in_set", "lead_score"): lambda d: d.assign(
                lead_score=d["lead_score"].where(d.index != 0, 0)),
            ("expect_column_values_to_be_in_set", "industry"): lambda d: d.assign(
                industry=d["industry"].where(d.index != 0, "Mining")),
            ("expect_column_values_to_be_unique", "lead_id"): lambda d: d.assign(
                lead_id=d["lead_id"].where(d.index != 1, d.loc[0, "lead_id"])),
            ("expect_column_max_to_be_between", "lead_ts"): lambda d: d.assign(
                lead_ts=d["lead_ts"].where(d.index != 0, pd.Timestamp("2024-04-02"))),
            ("expect_table_row_count_to_be_between", None): lambda d: d.head(499),
        }
        for expected, fault in faults.items():
            r = validate_frame(fault(df), vs, now=NOW)
            failed = {(x["type"], x["column"]) for x in r.results if not x["success"]}
            assert failed == {expected}, (expected, r.failure_lines())


def test_which_values_may_be_reported_follows_the_active_model():
    from retrainer.validation import sensitive_columns, shows_values

    assert shows_values("age") and not shows_values("admission_id") and not shows_values("intent_score")
    with specs.using("lead-scoring"):
        assert {"lead_id", "lead_ts", "account_id", "contact_email"} <= sensitive_columns()
        assert shows_values("intent_score") and shows_values("web_visits_7d")
        assert not shows_values("lead_id") and not shows_values("account_id") and not shows_values("age")
        assert not shows_values("industry")  # categories can hold free text: counts only
    assert "admission_id" in sensitive_columns() and "lead_id" not in sensitive_columns()
