"""Backtest a retraining policy as a flow: the replay of `retrainer backtest` (never retrain vs
retrain every month vs the triggers in a `triggers.yaml`) with its month-by-month table and its
summary published as Prefect artifacts (`backtest`, `backtest-summary`). `retrainer backtest`
runs the same replay without Prefect."""
from __future__ import annotations

from typing import Any

from prefect import flow

from tasks.backtest import publish, replay
from tasks.runtime import install_log_filter, settings_for


@flow(name="backtest", log_prints=True)
def backtest(data: str, policy: str | None = None, warmup: int = 3, max_iter: int = 100, canary_rows: int = 1000,
             home: str | None = None, model: str | None = None) -> dict[str, Any]:
    """Replay the monthly Parquet files in `data`; returns {"summary", "table", "retrains"}."""
    install_log_filter()
    settings = settings_for(home, model)
    result = replay(data, settings, policy, warmup, max_iter, canary_rows)
    publish(result)
    print(result.format_summary())
    out = result.to_dict()
    return {"summary": out["summary"], "table": out["table"], "retrains": out["retrains"]}


if __name__ == "__main__":
    import sys

    backtest(*sys.argv[1:2])
