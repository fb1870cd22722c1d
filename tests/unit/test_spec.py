"""Model specs (retrainer.spec): validation with one-line errors, the contract they imply, the
active model, settings from the spec, the time split by unit, namespacing, and `--model`."""
from __future__ import annotations

import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from retrainer import schema as S
from retrainer import spec
from retrainer.dataio import time_split
from retrainer.errors import DataError
from retrainer.settings import Settings, SplitSettings, load_settings

REPO = Path(__file__).resolve().parents[2]
READMISSION = REPO / "models" / "readmission-30d.yaml"


def _write(tmp_path: Path, doc: dict | str, name: str = "m.yaml") -> Path:
    p = tmp_path / name
    p.write_text(doc if isinstance(doc, str) else yaml.safe_dump(doc, sort_keys=False))
    return p


def _base() -> dict:
    return yaml.safe_load(READMISSION.read_text())


def test_both_example_specs_load_and_imply_their_contracts():
    r = spec.contract("readmission-30d")
    assert (r.LABEL, r.TIMESTAMP, r.ADMISSION_ID, r.ENTITY) == ("readmitted_30d", "admission_ts", "admission_id",
                                                               "patient_id")
    assert len(r.FEATURES) == 30 and r.FEATURES[:2] == ("age", "length_of_stay_days")
    assert r.FEATURES[-1] == "lives_alone" and r.KEYS == ("admission_id", "patient_id")
    assert "date_of_birth" in r.IDENTIFIERS and r.COLUMN_TYPES["date_of_birth"] == "datetime"
    assert list(r.COLUMN_TYPES)[-1] == "readmitted_30d"
    lead = spec.contract("lead-scoring")
    assert lead.TASK == "regression" and lead.LABEL == "lead_score" and len(lead.FEATURES) == 51
    assert "weekend_activity" in lead.FEATURES and "weekend_activity" not in lead.MONITORED_FEATURES
    assert spec.load_spec("lead-scoring").prediction_range == (1, 5)
    assert spec.load_spec("readmission-30d").prediction_range == (0, 1)


def test_schema_answers_for_the_active_model_and_falls_back_to_the_default():
    assert S.LABEL == "readmitted_30d"
    with spec.using("lead-scoring") as c:
        assert S.LABEL == "lead_score" == c.LABEL
        assert S.FEATURES == c.FEATURES
        with spec.using("readmission-30d"):
            assert S.LABEL == "readmitted_30d"
        assert S.LABEL == "lead_score"
    assert S.LABEL == "readmitted_30d"
    with pytest.raises(AttributeError):
        S.not_a_name  # noqa: B018


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d["columns"].pop("label"), "columns.label: Field required"),
    (lambda d: d.update(task="clustering"), "task: Input should be 'binary_classification', 'regression' or 'ranking'"),
    (lambda d: d["features"].update(readmitted_30d={"type": "bool"}), "also listed as a feature"),
    (lambda d: d["features"].update(mrn={"type": "bool"}), "listed as both a feature and an identifier"),
    (lambda d: d["features"]["age"].pop("range"), "needs 'range"),
    (lambda d: d["features"]["sex"].update(values=[]), "needs 'values'"),
    (lambda d: d["metrics"].update(primary="spearman"), "does not apply to a binary_classification model"),
    (lambda d: d["training"].update(entry_point="no colon here"), "is not 'package.module:function'"),
    (lambda d: d.update(label_delay="-3d"), "is not a duration"),
    (lambda d: d.update(colour="blue"), "colour: Extra inputs are not permitted"),
])
def test_a_bad_spec_is_one_line_naming_file_and_key(tmp_path, mutate, message):
    doc = _base()
    mutate(doc)
    path = _write(tmp_path, doc)
    with pytest.raises(spec.SpecError) as err:
        spec.load_spec(path)
    text = str(err.value)
    assert message in text and str(path) in text and "\n" not in text


def test_a_feature_listed_twice_is_refused_not_silently_overwritten(tmp_path):
    sex = "  sex: {type: category, values: [F, M]}\n"
    text = READMISSION.read_text().replace(sex, sex + "  age: {type: int, range: [0, 9]}\n")
    path = _write(tmp_path, text)
    with pytest.raises(spec.SpecError, match=r"'age' is listed twice \(line \d+\)"):
        spec.load_spec(path)


def test_unknown_model_names_the_specs_that_exist():
    with pytest.raises(spec.SpecError, match="unknown model 'nope'.*lead-scoring, readmission-30d"):
        spec.load_spec("nope")
    with pytest.raises(spec.SpecError):
        spec.activate("nope")


def test_entry_points_resolve_or_fail_in_one_line():
    assert callable(spec.resolve_entry_point("retrainer.dataio:time_split"))
    with pytest.raises(spec.SpecError, match="cannot be imported: ModuleNotFoundError"):
        spec.resolve_entry_point("no_such_pkg.mod:fit")
    with pytest.raises(spec.SpecError, match="has no function 'nope'"):
        spec.resolve_entry_point("retrainer.dataio:nope")


def test_settings_take_their_defaults_from_the_spec_and_explicit_settings_win(monkeypatch, tmp_path):
    monkeypatch.delenv("RETRAINER_MODEL_NAME", raising=False)
    r = load_settings(home=str(tmp_path))
    assert r.model_name == "readmission-30d" and r.home == tmp_path
    assert r.label_delay == timedelta(days=30) and r.split.unit == "months" and r.split.train is None
    assert r.model.model_dump()["max_iter"] == 250 and r.rollout.plan == "rollout-plans/canary.yaml"
    lead = load_settings(home=str(tmp_path), model_name="lead-scoring")
    assert lead.home == tmp_path / "models" / "lead-scoring"  # namespaced; the default model is not
    assert lead.registry_dir == tmp_path / "models" / "lead-scoring" / "registry"
    assert lead.training_data == Path("data/lead-scoring/training")
    assert lead.label_delay == timedelta(days=2)
    assert (lead.split.unit, lead.split.train, lead.split.validation, lead.split.test) == ("days", 4, 1, 2)
    assert lead.model.model_dump()["n_estimators"] == 300
    assert lead.triggers_file.name == "triggers-lead-scoring.yaml"
    assert lead.rollout.plan == "rollout-plans/shadow-cutover.yaml" and lead.aws.endpoint_name == "lead-scoring"
    # explicit settings beat the spec, nested keys merge with it
    monkeypatch.setenv("RETRAINER_SPLIT__TRAIN", "3")
    monkeypatch.setenv("RETRAINER_MODEL__MAX_DEPTH", "4")
    over = load_settings(home=str(tmp_path), model_name="lead-scoring")
    assert over.split.train == 3 and over.split.unit == "days"
    assert over.model.model_dump()["max_depth"] == "4" and over.model.model_dump()["n_estimators"] == 300
    templated = load_settings(home=str(tmp_path), model_name="lead-scoring", training_data="/d/{model}/train")
    assert templated.training_data == Path("/d/lead-scoring/train")
    # re-validating already namespaced settings does not nest twice
    again = Settings(**{**over.model_dump(), "home": over.home})
    assert again.home == over.home
    monkeypatch.setenv("RETRAINER_MODEL_NAME", "nope")
    with pytest.raises(spec.SpecError, match="unknown model 'nope'"):
        load_settings()


def _frame(days: int, per_day: int = 3) -> pd.DataFrame:
    ts = pd.date_range("2024-03-04", periods=days, freq="D").repeat(per_day) + pd.Timedelta(hours=5)
    return pd.DataFrame({"admission_ts": ts, "x": np.arange(len(ts))})


def test_time_split_by_days_with_a_rolling_train_window():
    sp = time_split(_frame(10), SplitSettings(unit="days", train=4, validation=1, test=2))
    assert sp.months["test"] == ["2024-03-12", "2024-03-13"]
    assert sp.months["validation"] == ["2024-03-11"]
    assert sp.months["train"] == ["2024-03-07", "2024-03-08", "2024-03-09", "2024-03-10"]
    assert (len(sp.train), len(sp.validation), len(sp.test)) == (12, 3, 6)
    everything = time_split(_frame(10), SplitSettings(unit="days", validation=1, test=2))
    assert len(everything.train) == 21  # train: None -> every older day
    with pytest.raises(DataError, match="needs at least 7 days of data \\(4 train \\+ 1 validation \\+ 2 test\\); "
                                        "the batch covers 6"):
        time_split(_frame(6), SplitSettings(unit="days", train=4, validation=1, test=2))


def test_time_split_by_weeks_starts_weeks_on_monday():
    sp = time_split(_frame(21), SplitSettings(unit="weeks", validation=1, test=1))
    assert sp.months == {"train": ["2024-03-04"], "validation": ["2024-03-11"], "test": ["2024-03-18"]}


def test_the_old_month_names_still_configure_the_split():
    sp = SplitSettings(validation_months=2, test_months=1, min_train_months=3)
    assert (sp.unit, sp.validation, sp.test, sp.min_train) == ("months", 2, 1, 3)
    assert sp.validation_months == 2 and sp.periods_needed == 6


def test_cli_model_option_before_or_after_the_command(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "RETRAINER_HOME": str(tmp_path), "HOME": str(tmp_path)}
    exe = Path(sys.executable).parent / "retrainer"
    bad = subprocess.run([str(exe), "--model", "nope", "registry", "list"], capture_output=True, text=True,
                         env=env, timeout=120)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1
    assert bad.stderr.startswith("error: unknown model 'nope'") and "Traceback" not in bad.stderr
    for argv in (["--model", "lead-scoring", "status", "--json"], ["status", "--json", "--model", "lead-scoring"]):
        ok = subprocess.run([str(exe), *argv], capture_output=True, text=True, env=env, timeout=120)
        assert ok.returncode == 0, ok.stderr
        assert '"model_name": "lead-scoring"' in ok.stdout
