"""The retrain flow on a real Prefect server: the happy path, artifacts, and every bad input
leaving the registry byte-identical with one clear error line."""
from __future__ import annotations

import subprocess

import numpy as np
import pandas as pd
import pytest

from retrainer import schema as S
from retrainer.dataio import load_batch
from tests.helpers import BIN, copy_months, run_cli, snapshot


@pytest.fixture
def trained_home(prefect_api, home, monthly_data, tmp_path):
    """A registry holding production 1.0.0 trained on months 1-5."""
    first = copy_months(monthly_data, tmp_path / "first", [f"admissions_2024_0{m}.parquet" for m in range(1, 6)])
    code, out = run_cli("retrain", "--data", str(first))
    assert code == 0, out
    return home


def test_retrain_registers_first_then_candidate_with_comparison(trained_home, monthly_data):
    from prefect.client.orchestration import get_client

    from retrainer.registry import LocalRegistry

    code, out = run_cli("retrain", "--data", str(monthly_data), "--trigger", "scheduled", "--json")
    assert code == 0, out
    reg = LocalRegistry(trained_home / "registry")
    versions = {r.version: r for r in reg.list()}
    assert versions["1.0.0"].status == "production"
    second = versions["1.1.0"]  # new data, same schema -> MINOR
    assert second.bump == "minor" and second.parent == "1.0.0" and second.trigger == "scheduled"
    assert second.status in ("candidate", "rejected")
    prod = second.metrics["production"]
    assert prod["version"] == "1.0.0" and prod["n"] == second.metrics["candidate"]["n"]  # same test set
    assert second.data["rows"] == 15000 and second.data["split"]["test"]["months"] == ["2024-06"]
    assert second.validation["success"] is True
    assert second.code_version and second.data_hash and second.params["max_iter"] == 250
    assert [e["to"] for e in reg.audit()] == ["production", second.status]

    with get_client(sync_client=True) as client:
        keys = {a.key for a in client.read_artifacts()}
    assert {"data-validation", "champion-challenger", "model-1-1-0", "model-1-0-0"} <= keys

    code, out = run_cli("registry", "show", "1.1.0")
    assert code == 0 and "# 1.1.0" in out and "trigger: **scheduled**" in out


def _write(df: pd.DataFrame, path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    df.to_parquet(path, index=False)
    return str(path)


def bad_inputs(base: pd.DataFrame, tmp):
    """name -> (path, expected fragment of the one-line error)."""
    cases = {}
    cases["missing file"] = (str(tmp / "nope.parquet"), "no such file")
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "empty").mkdir()
    cases["empty directory"] = (str(tmp / "empty"), "no .parquet files")
    (tmp / "text.parquet").write_text("admission_id,age\nA1,50\n")
    cases["not parquet"] = (str(tmp / "text.parquet"), "not a readable Parquet file")
    good = _write(base, tmp / "good.parquet")
    blob = open(good, "rb").read()
    (tmp / "corrupt.parquet").write_bytes(blob[: len(blob) // 2])
    cases["corrupt parquet"] = (str(tmp / "corrupt.parquet"), "not a readable Parquet file")
    cases["zero rows"] = (_write(base.iloc[:0], tmp / "zero" / "z.parquet"), "zero rows")
    cases["missing column"] = (_write(base.drop(columns=["age"]), tmp / "c1.parquet"), "age")
    wrong = base.copy()
    wrong["age"] = wrong["age"].astype(str)
    cases["wrong type"] = (_write(wrong, tmp / "c2.parquet"), "age")
    nan_label = base.copy()
    nan_label[S.LABEL] = nan_label[S.LABEL].astype(float)
    nan_label.loc[::7, S.LABEL] = np.nan
    cases["NaN labels"] = (_write(nan_label, tmp / "c3.parquet"), S.LABEL)
    out_of_set = base.copy()
    out_of_set.loc[::9, S.LABEL] = 2
    cases["label out of set"] = (_write(out_of_set, tmp / "c4.parquet"), S.LABEL)
    single = base.copy()
    single[S.LABEL] = 0
    cases["single class"] = (_write(single, tmp / "c5.parquet"), S.LABEL)
    rng = base.copy()
    rng.loc[::50, "age"] = 300
    cases["out of range"] = (_write(rng, tmp / "c6.parquet"), "age")
    dup = base.copy()
    dup.loc[1::2, S.ADMISSION_ID] = dup.loc[0::2, S.ADMISSION_ID].to_numpy()[: len(dup.loc[1::2])]
    cases["duplicated ids"] = (_write(dup, tmp / "c7.parquet"), S.ADMISSION_ID)
    fut = base.copy()
    fut.loc[len(fut) - 5:, S.TIMESTAMP] = pd.Timestamp("2099-01-01")
    cases["future timestamps"] = (_write(fut, tmp / "c8.parquet"), S.TIMESTAMP)
    nulls = base.copy()
    nulls.loc[nulls.index % 2 == 0, "hemoglobin_g_dl"] = np.nan
    cases["heavy nulls"] = (_write(nulls, tmp / "c9.parquet"), "hemoglobin_g_dl")
    return cases


def test_every_bad_input_fails_cleanly_and_changes_nothing(trained_home, monthly_data, tmp_path):
    base = load_batch(monthly_data)
    cases = bad_inputs(base, tmp_path / "bad")
    before = snapshot(trained_home)
    assert before, "the fixture registered a model"
    for name, (path, fragment) in cases.items():
        for command in (["validate", path], ["retrain", "--data", path]):
            code, out = run_cli(*command)
            errors = [line for line in out.splitlines() if line.startswith(("error:", "FAILED:"))]
            assert code != 0, f"{name} {command[0]}: exit 0\n{out}"
            assert "Traceback" not in out, f"{name} {command[0]}: traceback shown\n{out}"
            assert len(errors) == 1 and fragment in out, f"{name} {command[0]}: {out[-1500:]}"
            assert snapshot(trained_home) == before, f"{name}: registry changed"


def test_unknown_version_and_bad_settings(trained_home, monkeypatch):
    before = snapshot(trained_home)
    code, out = run_cli("registry", "show", "9.9.9")
    assert code == 2 and out.strip() == "error: unknown version 9.9.9 (registered: 1.0.0)"
    monkeypatch.setenv("RETRAINER_GATE__MIN_AUC", "2")
    code, out = run_cli("registry", "list")
    assert code == 2 and out.strip().startswith("error: bad setting gate.min_auc")
    assert snapshot(trained_home) == before


@pytest.mark.parametrize("case", ["missing file", "duplicated ids", "corrupt parquet"])
def test_cli_subprocess_prints_one_line(prefect_server, monthly_data, tmp_path, case):
    """The installed console script, as a user runs it, with Prefect's console logs: the last line
    is the error, and no traceback appears anywhere."""
    path, fragment = bad_inputs(load_batch(monthly_data), tmp_path)[case]
    env = {**prefect_server.env, "RETRAINER_HOME": str(tmp_path / "h")}
    proc = subprocess.run([str(BIN / "retrainer"), "retrain", "--data", path],
                          capture_output=True, text=True, env=env, timeout=180)
    assert proc.returncode in (2, 3), proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and fragment in last
    assert not (tmp_path / "h" / "registry").exists()
