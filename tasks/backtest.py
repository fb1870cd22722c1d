"""Tasks of the backtest flow: the replay (`retrainer.backtest.run_backtest`) and its artifacts."""
from __future__ import annotations

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from retrainer import backtest
from retrainer.settings import Settings
from retrainer.triggers.config import load_triggers

from .runtime import IN_PROCESS


@task(name="backtest-replay", **IN_PROCESS)
def replay(data: str, settings: Settings, policy: str | None, warmup: int, max_iter: int,
           canary_rows: int) -> backtest.BacktestResult:
    """Replay the months in `data` for never / every month / the triggers in `policy`
    (default: settings.triggers_file)."""
    policy = policy or str(settings.triggers_file)
    return backtest.run_backtest(data, settings, load_triggers(policy), policy_file=policy, warmup=warmup,
                                 max_iter=max_iter, canary_rows=canary_rows, progress=print)


@task(name="publish-backtest", **IN_PROCESS)
def publish(result: backtest.BacktestResult) -> None:
    """A table artifact (one row per replayed month) and a markdown artifact (summary, retrains)."""
    create_table_artifact(table=result.table_rows(), key="backtest",
                          description=f"backtest of {result.data}: AUC and decisions per month and policy")
    create_markdown_artifact(markdown=result.summary_markdown(), key="backtest-summary",
                             description="backtest summary: mean AUC and retrains per policy")
