"""No raw identifier or free text reaches Prefect: a retrain on a batch with a duplicated planted
admission id and planted free text in a category field fails validation, and then every table of
the Prefect server's database (artifacts, logs, states, events, event resources...; SQLite, or
PostgreSQL under RETRAINER_TEST_DB=postgres) and the server log are scanned for the planted values."""
from __future__ import annotations

import time

from retrainer import schema as S
from retrainer.dataio import load_batch
from tests.helpers import run_cli

PLANTED_ID = "ZZQ-PLANTED-4417-ADM"
PLANTED_TEXT = "Planted Freetext Mrs Okonkwo-Vale"


def wait_until_recorded(server, needles: list[str], timeout_s: float = 90) -> list[str]:
    """Prefect writes logs and events asynchronously: wait until the run's failure is recorded. A
    needle "table:text" must be in a row of that table (a log line is written after the state
    that carries the same message, so finding the text elsewhere is not enough)."""
    deadline = time.monotonic() + timeout_s

    def found(needle: str, rows: list[str]) -> bool:
        table, sep, want = needle.partition(":")
        if sep and table in ("log", "artifact"):
            return any(r.startswith(f"{table}:") and want in r for r in rows)
        return needle in "\n".join(rows)

    while True:
        rows = server.dump_database()
        if all(found(n, rows) for n in needles) or time.monotonic() > deadline:
            return rows
        time.sleep(1)


def test_planted_identifiers_never_reach_the_prefect_database(prefect_api, home, monthly_data, tmp_path):
    batch = load_batch(monthly_data)
    batch.loc[:3, S.ADMISSION_ID] = PLANTED_ID                # a duplicated admission id
    batch.loc[10:12, "discharge_disposition"] = PLANTED_TEXT  # free text in a category field
    path = tmp_path / "batch" / "admissions.parquet"
    path.parent.mkdir()
    batch.to_parquet(path, index=False)

    code, out = run_cli("retrain", "--data", str(path))
    assert code == 3, out

    rows = wait_until_recorded(prefect_api, ["artifact:values must be unique (4 rows share a value",
                                             "prefect.flow-run.Failed", "log:data failed validation"])
    text = "\n".join(rows)
    # the scan sees what the run published: the validation artifact, the failure in logs/states/events
    assert any(r.startswith("artifact:") and "values must be unique (4 rows share a value" in r for r in rows)
    assert any(r.startswith("log:") and "data failed validation" in r for r in rows)
    assert "prefect.flow-run.Failed" in text
    server_logs = {p: p.read_text(errors="replace") for p in prefect_api.log_files()}  # + PostgreSQL's own
    for planted in (PLANTED_ID, PLANTED_TEXT):
        leaks = [r[:200] for r in rows if planted in r]
        assert not leaks, f"{planted!r} found in the Prefect database: {leaks}"
        assert not [p for p, text in server_logs.items() if planted in text], planted
    assert "admission_id: values must be unique (4 rows share a value)" in out  # what the user saw
    assert PLANTED_ID not in out and PLANTED_TEXT not in out


def test_a_passing_retrain_publishes_no_raw_identifier(prefect_api, home, monthly_data):
    """The success path publishes more (version card, champion/challenger table, lineage, events):
    none of it carries a raw identifier of the training batch."""
    batch = load_batch(monthly_data)
    sample = batch.sample(300, random_state=1)
    needles = {str(v) for col in S.IDENTIFIERS for v in sample[col].dropna()
               if len(str(v)) >= 8}  # long enough that a hit is not a coincidence
    needles |= {str(v) for v in sample[S.ADMISSION_ID]}
    assert len(needles) > 500

    code, out = run_cli("retrain", "--data", str(monthly_data))
    assert code == 0, out
    rows = wait_until_recorded(prefect_api, ["version card", "prefect.flow-run.Completed"])
    text = "\n".join(rows)
    assert "prefect.flow-run.Completed" in text and any(r.startswith("artifact:") for r in rows)
    leaks = sorted(n for n in needles if n in text)
    assert not leaks, f"raw identifiers in the Prefect database: {leaks[:5]}"
    assert not [n for n in needles if n in out]
