"""`retrainer backtest`: the replay of past months on generated data whose features and label
relationship drift from month 5, against never retraining and retraining every month; the CLI's
JSON and plot; one clear line for each bad input."""
import json

import numpy as np
import pytest

from retrainer import backtest, datagen
from retrainer.settings import Settings
from retrainer.triggers.config import load_triggers
from tests.helpers import copy_months, run_cli

pytestmark = pytest.mark.unit

DRIFT_FROM = 5  # 2024-05
MONTHS = 8
WARMUP = 3
# A drift-aware policy: no schedule, no volume trigger (triggers.yaml's monthly schedule would make it
# the every-month policy).
POLICY = """\
retraining_triggers:
  - {name: data-drift, type: data_drift, priority: 1, psi_threshold: 0.20, min_features: 3, min_window: 500}
  - {name: performance, type: performance_degradation, priority: 2, threshold: 0.70, window: 7d}
  - {name: concept, type: concept_drift, priority: 3, min_drop: 0.05, window: 30d}
"""


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("backtest")
    data = root / "months"
    datagen.generate(data, datagen.GenerationSpec(months=MONTHS, rows_per_month=1500, seed=11,
                                                  drift_from=DRIFT_FROM))
    policy = root / "drift-aware.yaml"
    policy.write_text(POLICY)
    result = backtest.run_backtest(data, Settings(), load_triggers(policy), policy_file=str(policy),
                                   warmup=WARMUP)
    return {"root": root, "data": data, "policy": policy, "result": result}


def _mean(values):
    return float(np.mean([v for v in values]))


def test_drift_aware_policy_retrains_after_the_drift_and_beats_never_retraining(world):
    r = world["result"]
    replayed = [m.month for m in r.months]
    drift_month = replayed.index("2024-05")
    mine = [x for x in r.retrains if x.policy == backtest.TRIGGERS]
    assert mine, "the drift-aware policy never retrained"
    assert all(x.month >= "2024-05" for x in mine), [x.month for x in mine]  # no false alarm before the drift
    assert any("data-drift" in x.why for x in mine)
    assert r.months[0].fired == []  # month 4 (no drift): nothing fires
    assert "data-drift" in r.months[drift_month].fired
    assert any(x.adopted for x in mine)
    after_never = _mean(r.aucs(backtest.NEVER)[drift_month:])
    after_policy = _mean(r.aucs(backtest.TRIGGERS)[drift_month:])
    assert after_policy > after_never + 0.01, (after_policy, after_never)
    s = r.summary()
    assert s[backtest.NEVER]["retrains"] == 0 and s[backtest.NEVER]["final_version"] == "1.0.0"
    assert s[backtest.TRIGGERS]["retrains"] == len(mine) < s[backtest.EVERY_MONTH]["retrains"]


def test_every_month_retrains_every_month_through_the_gate_and_the_canary(world):
    r = world["result"]
    replayed = [m.month for m in r.months]
    every = [x for x in r.retrains if x.policy == backtest.EVERY_MONTH]
    assert [x.month for x in every] == replayed
    for x in every:
        assert x.months["test"] == [x.month]  # the gate judges on the month just replayed
        g = x.gate["evidence"]
        assert g["n"] == 1500 and 0 < g["positives"] < 1500 and g["low"] <= g["delta"] <= g["high"]
        if x.gate["eligible"] and not x.gate["needs_approval"]:
            assert x.canary is not None and x.canary["low"] <= x.canary["delta"] <= x.canary["high"]
            assert x.adopted == (x.canary["verdict"] == "promote")
        else:
            assert x.canary is None and not x.adopted
    # the canary compares on the next month's first 1,000 rows, on the test month after the last month
    assert every[0].canary["n"] == 1000 and every[0].canary["source"].endswith(f"of {replayed[1]}")
    if every[-1].canary is not None:
        assert "no next month" in every[-1].canary["source"] and every[-1].canary["n"] == 1500


def test_table_has_one_row_per_replayed_month_and_adoptions_serve_the_next_month(world):
    r = world["result"]
    rows = r.table_rows()
    assert [row["month"] for row in rows] == [f"2024-{m:02d}" for m in range(WARMUP + 1, MONTHS + 1)]
    first = r.months[0].policies
    assert first[backtest.NEVER]["auc"] == first[backtest.EVERY_MONTH]["auc"] == first[backtest.TRIGGERS]["auc"]
    assert {row["never version"] for row in rows} == {"1.0.0"}
    for x in r.retrains:
        k = [m.month for m in r.months].index(x.month)
        if k + 1 < len(r.months):
            served = r.months[k + 1].policies[x.policy]["version"]
            assert (served == x.version) == x.adopted, (x.policy, x.month, x.version, served, x.outcome)
    text = r.format_text()
    assert "mean AUC" in text and "retrains:" in text and text.count("\n2024-") == len(rows)
    assert any(x.startswith("2024-05 data-drift: ") and "features drift" in x for x in r.fired_lines())
    assert "## Triggers that fired" in r.summary_markdown()


def test_cli_json_and_plot(world, tmp_path):
    png = tmp_path / "auc.png"
    code, out = run_cli("backtest", "--data", str(world["data"]), "--policy", str(world["policy"]),
                        "--max-iter", "40", "--json", "--plot", str(png))
    assert code == 0, out
    doc = json.loads(out)
    assert len(doc["table"]) == MONTHS - WARMUP and doc["options"]["max_iter"] == 40
    assert set(doc["summary"]) == set(backtest.POLICIES)
    assert doc["summary"]["every-month"]["retrains"] == MONTHS - WARMUP
    assert doc["plot"] == str(png) and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("case", ["missing", "empty", "too-few-months", "unknown-key", "warmup"])
def test_bad_input_is_one_line_and_exit_2(world, tmp_path, case):
    data, policy = world["data"], world["policy"]
    args = []
    if case == "missing":
        data, expect = tmp_path / "nope", "no such file or directory"
    elif case == "empty":
        (tmp_path / "empty").mkdir()
        data, expect = tmp_path / "empty", "has no .parquet files"
    elif case == "too-few-months":
        names = sorted(p.name for p in world["data"].glob("*.parquet"))[:WARMUP]
        data, expect = copy_months(world["data"], tmp_path / "three", names), "needs at least 4"
    elif case == "unknown-key":
        policy = tmp_path / "bad.yaml"
        policy.write_text(POLICY.replace("min_window: 500", "min_window: 500, psi_treshold: 0.1"))
        expect = "psi_treshold"
    else:
        args, expect = ["--warmup", "2"], "--warmup must be at least 3"
    code, out = run_cli("backtest", "--data", str(data), "--policy", str(policy), *args)
    assert code == 2, out
    lines = out.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expect in lines[0], out
    assert "Traceback" not in out
