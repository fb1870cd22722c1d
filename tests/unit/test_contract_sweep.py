"""Every module answers for the ACTIVE model's contract at call time (issue 12): request parsing,
de-identification, the prediction store's label schema and the drift profile follow
`retrainer.spec.using("lead-scoring")`, while the readmission model's behaviour is unchanged."""
from __future__ import annotations

import importlib.util
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.dummy import DummyRegressor
from sklearn.pipeline import Pipeline

from examples.lead_scoring import datagen as lead_datagen
from retrainer import datagen, deid, predstore, spec
from retrainer import schema as S
from retrainer.drift.profile import fit_reference_profile
from retrainer.serving import parsing
from retrainer.settings import load_settings

KEY = b"test-key-0123456789abcdef"
REPO = Path(__file__).resolve().parents[2]
LEAD_IDENTIFIERS = ("contact_name", "contact_email", "contact_phone", "ip_address")
# The commit before the sweep: its deid.py bound the readmission names at import time.
BEFORE_SWEEP = "8266672"


@pytest.fixture(scope="module")
def leads(tmp_path_factory) -> pd.DataFrame:
    out = tmp_path_factory.mktemp("leads")
    with spec.using("lead-scoring"):
        paths = lead_datagen.generate(out, periods=2, rows_per_period=60, seed=5)
    return pd.concat([pd.read_parquet(p) for p in paths], ignore_index=True)


@pytest.fixture(scope="module")
def admissions(tmp_path_factory) -> pd.DataFrame:
    out = tmp_path_factory.mktemp("admissions")
    paths = datagen.generate(out, datagen.GenerationSpec(months=1, rows_per_month=120, seed=3))
    return pd.concat([pd.read_parquet(p) for p in paths], ignore_index=True)


def _json_record(row: pd.Series, columns) -> dict:
    rec = {}
    for c in columns:
        v = row[c]
        if v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA:
            rec[c] = None
        elif isinstance(v, (np.bool_, bool)):
            rec[c] = bool(v)
        elif isinstance(v, np.integer):
            rec[c] = int(v)
        elif isinstance(v, np.floating):
            rec[c] = float(v)
        else:
            rec[c] = str(v)
    return rec


# -- request parsing --------------------------------------------------------------------------------

def test_parsing_follows_the_active_model(leads, admissions):
    with spec.using("lead-scoring"):
        assert len(S.FEATURES) == 51
        lead = _json_record(leads.iloc[0], [*S.FEATURES, "lead_id", "account_id"])
        assert parsing.validate_records([lead], 10) is None
        assert {"lead_id", "account_id", "lead_ts"} <= set(parsing.OPTIONAL_FIELDS)
        err = parsing.validate_records([_json_record(admissions.iloc[0], [
            c for c in admissions.columns if c not in ("readmitted_30d",)])], 10)
        assert err is not None and "unknown field" in err
        short = dict(lead)
        del short["weekend_activity"]
        assert "missing required field(s): weekend_activity" in parsing.validate_records([short], 10)
        bad = dict(lead, company_size_log=99.0)  # the lead spec's range is [0, 14]
        assert "company_size_log" in parsing.validate_records([bad], 10)
    # back outside: the readmission contract again, and the lead request is refused
    ra_features = [c for c in S.FEATURES]
    assert "age" in ra_features and "company_size_log" not in ra_features
    assert parsing.validate_records([_json_record(admissions.iloc[0], ra_features)], 10) is None
    err = parsing.validate_records([lead], 10)
    assert err is not None and "unknown field" in err


# -- de-identification ------------------------------------------------------------------------------

def test_lead_scoring_deid_pseudonymises_the_spec_keys_and_drops_its_identifiers(leads):
    ps = deid.Pseudonymizer(KEY)
    with spec.using("lead-scoring"):
        out = deid.deidentify(leads, ps)
        features = set(S.FEATURES)
        expected_row = ps.pseudonymize(leads["lead_id"], "lead_id")
        expected_entity = ps.pseudonymize(leads["account_id"], "account_id")
        for name in ("contact_email", "account_id", "lead_id", "lead_ts"):
            with pytest.raises(ValueError, match="refusing to keep identifier"):
                deid.deidentify(leads, ps, keep=[name])
    assert out[deid.ADMISSION_PSEUDONYM].notna().all() and out[deid.PATIENT_PSEUDONYM].notna().all()
    assert out[deid.ADMISSION_PSEUDONYM].tolist() == expected_row.tolist()
    assert out[deid.PATIENT_PSEUDONYM].tolist() == expected_entity.tolist()
    # leads of one account share the entity pseudonym, distinct leads get distinct row pseudonyms
    assert out[deid.PATIENT_PSEUDONYM].nunique() == leads["account_id"].nunique()
    assert out[deid.ADMISSION_PSEUDONYM].nunique() == leads["lead_id"].nunique()
    # only the allow-list passes: no identifier, key or timestamp column, no raw identifier value
    assert not set(out.columns) & {*LEAD_IDENTIFIERS, "lead_id", "account_id", "lead_ts"}
    assert set(out.columns) <= set(deid.PSEUDONYM_COLUMNS) | features | set(deid.DERIVED_COLUMNS) | {"lead_score"}
    assert features <= set(out.columns) and "lead_score" in out.columns
    raw = set()
    for c in (*LEAD_IDENTIFIERS, "lead_id", "account_id"):
        raw.update(leads[c].dropna().astype(str))
    cells = set(out.astype(str).to_numpy().ravel())
    assert not raw & cells
    # no readmission-only coarsening: the lead model has no age feature
    assert deid.AGE_90_PLUS not in out.columns
    # the lead_ts is the model's timestamp: coarsened to a year like admission_ts is for readmission
    assert out[deid.ADMISSION_YEAR].tolist() == pd.to_datetime(leads["lead_ts"], utc=True).dt.year.tolist()


def _deid_before_sweep(tmp_path: Path):
    """deid.py as committed before the sweep, imported as a sibling module of the package."""
    try:
        text = subprocess.run(["git", "-C", str(REPO), "show", f"{BEFORE_SWEEP}:retrainer/deid.py"],
                              check=True, capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("git history not available")
    path = tmp_path / "deid_before.py"
    path.write_text(text)
    name = "retrainer._deid_before_sweep"
    mod_spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(mod_spec)
    sys.modules[name] = mod
    try:
        mod_spec.loader.exec_module(mod)
    finally:
        sys.modules.pop(name, None)
    return mod


def test_readmission_deid_output_is_unchanged_by_the_sweep(admissions, tmp_path):
    before = _deid_before_sweep(tmp_path)
    frame = admissions.copy()
    frame.loc[0, "age"] = 97  # the age cap still applies to readmission
    now = deid.deidentify(frame, deid.Pseudonymizer(KEY))
    then = before.deidentify(frame, before.Pseudonymizer(KEY))
    pd.testing.assert_frame_equal(now, then)
    assert now.loc[0, "age"] == 90 and bool(now.loc[0, deid.AGE_90_PLUS])
    assert {deid.ZIP3, deid.ADMISSION_YEAR} <= set(now.columns)
    # an extract that names the keys by their readmission aliases pseudonymises them the same way
    aliased = frame.drop(columns=["admission_id"]).rename(columns={"patient_id": "subject_id",
                                                                  "admission_ts": "admittime"})
    pd.testing.assert_frame_equal(deid.deidentify(aliased, deid.Pseudonymizer(KEY)),
                                  before.deidentify(aliased, before.Pseudonymizer(KEY)))
    assert deid.IDENTIFIER_ALIASES == before.IDENTIFIER_ALIASES | {"admission_ts", "admission_id"}


# -- the prediction store -----------------------------------------------------------------------------

def test_prediction_store_round_trips_lead_scoring_labels(leads, tmp_path):
    ps = deid.Pseudonymizer(KEY)
    store = predstore.PredictionStore(tmp_path / "store")
    batch = leads.head(40).reset_index(drop=True)
    with spec.using("lead-scoring"):
        assert predstore.label_schema().field("lead_score").type == "int64"
        assert "readmitted_30d" not in predstore.label_schema().names
        written = store.append(batch, np.linspace(1.0, 5.0, len(batch)), version="v1", variant="blue",
                               latency_ms=3.0, ts=pd.Timestamp("2024-03-06T12:00Z"), pseudonymizer=ps)
        assert written == len(batch)
        labels = pd.DataFrame({"lead_id": batch["lead_id"], "account_id": batch["account_id"],
                               "lead_score": batch["lead_score"]})
        labels.to_csv(tmp_path / "scores.csv", index=False)
        assert store.ingest_labels(tmp_path / "scores.csv", ps) == len(batch)
        back = store.read_labels()
        joined = store.labelled()
        bad = labels.assign(lead_score=7)
        bad.to_csv(tmp_path / "bad.csv", index=False)
        with pytest.raises(Exception, match=r"lead_score must be one of 1, 2, 3, 4, 5"):
            store.ingest_labels(tmp_path / "bad.csv", ps)
    assert back["lead_score"].dtype == np.int64
    by_row = dict(zip(back[deid.ADMISSION_PSEUDONYM], back["lead_score"]))
    expected = dict(zip(ps.pseudonymize(batch["lead_id"], "lead_id"), batch["lead_score"].astype(int)))
    assert by_row == expected
    assert set(back[deid.PATIENT_PSEUDONYM]) == set(ps.pseudonymize(batch["account_id"], "account_id"))
    assert len(joined) == len(batch) and joined["lead_score"].between(1, 5).all()
    files = list((tmp_path / "store").rglob("*.parquet"))
    label_files = [f for f in files if "label" in str(f.parent)]
    assert label_files and all(pq.read_schema(f).field("lead_score").type == "int64" for f in label_files)
    # the readmission label schema is what it always was
    assert predstore.label_schema().names == [deid.ADMISSION_PSEUDONYM, deid.PATIENT_PSEUDONYM,
                                               "readmitted_30d", predstore.INGESTED_AT]
    assert predstore.label_schema().field("readmitted_30d").type == "int64"


# -- drift ------------------------------------------------------------------------------------------

def test_drift_profile_covers_only_the_monitored_features(leads):
    settings = load_settings()
    with spec.using("lead-scoring"):
        features = list(S.FEATURES)
        monitored = list(S.MONITORED_FEATURES)
        half = len(leads) // 2
        train, validation = leads.iloc[:half], leads.iloc[half:]
        model = Pipeline([("columns", ColumnTransformer([("size", "passthrough", ["company_size_log"])])),
                          ("mean", DummyRegressor())]).fit(train, train["lead_score"])
        profile = fit_reference_profile(model, train, validation, settings)
    names = [f.name for f in profile.features if f.name != "score"]
    assert "weekend_activity" in features and "weekend_activity" not in monitored
    assert names == monitored and len(names) == len(features) - 1
    assert not set(names) & {"lead_id", "account_id", "lead_ts", "lead_score", *LEAD_IDENTIFIERS}

