"""`retrainer backtest --data DIR [--policy triggers.yaml]`: replay past months with their labels and
set a trigger policy against never retraining and retraining every month
(`retrainer.backtest.run_backtest`). Prints the month-by-month table, every retrain's gate and canary
decision with its evidence, and the summary; `--json` for scripts, `--plot FILE` for a PNG of the
AUC over time. No Prefect (`flows/backtest.py` runs the same replay as a flow with artifacts).
"""
from __future__ import annotations

import argparse
import sys

from .common import print_json

DEFAULT_WARMUP = 3
DEFAULT_MAX_ITER = 100
DEFAULT_CANARY_ROWS = 1000


def cmd_backtest(a) -> int:
    """Replay the months in `a.data`; exit 0 when the replay ran, 2 on bad input."""
    from retrainer import backtest  # noqa: PLC0415 - heavy: scikit-learn
    from retrainer.settings import load_settings  # noqa: PLC0415 - heavy: pydantic-settings
    from retrainer.triggers.config import load_triggers  # noqa: PLC0415 - heavy: pydantic

    settings = load_settings()
    policy = a.policy or str(settings.triggers_file)
    config = load_triggers(policy)
    progress = None if a.json else (lambda line: print(f"  {line}", file=sys.stderr, flush=True))
    result = backtest.run_backtest(a.data, settings, config, policy_file=policy, warmup=a.warmup,
                                   max_iter=a.max_iter, canary_rows=a.canary_rows, progress=progress)
    plotted = backtest.plot(result, a.plot) if a.plot else None
    if a.json:
        out = result.to_dict()
        out["plot"] = str(plotted) if plotted else None
        print_json(out)
    else:
        print(result.format_text())
        if plotted:
            print(f"plot: {plotted}")
    return 0


def add_backtest(sub) -> None:
    """`retrainer backtest --data DIR [--policy FILE] [--warmup N] [--max-iter N] [--json] [--plot FILE]`."""
    c = sub.add_parser(
        "backtest", help="replay past months: a trigger policy vs never retraining vs retraining every month",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Replay labelled monthly data. The first model trains on the first --warmup months; for "
                    "every later month, each policy's production model scores the month (its AUC is recorded), "
                    "then the policy decides whether to retrain:\n"
                    "  never        never retrains;\n"
                    "  every-month  retrains after every month;\n"
                    "  triggers     retrains when a trigger of --policy fires on the month (data drift on the "
                    "whole month,\n"
                    "               performance and concept drift on their AUC windows, volume, schedule).\n"
                    "A retrain trains on every month so far (time split: train / validation / test = this month), "
                    "must pass the\nregistration gate on the test month and the canary's non-inferiority rule on "
                    "the first --canary-rows\nrows of the next month; the candidate serves from the next month "
                    "when both pass.",
        epilog="exit status: 0 when the replay ran; 2 for bad input (missing or empty folder, too few months, "
               "a bad policy file or setting), one line `error: ...`.")
    c.add_argument("--data", required=True, metavar="DIR", help="Parquet file or folder of monthly Parquet files")
    c.add_argument("--policy", metavar="FILE", help="trigger config to replay (default: settings.triggers_file)")
    c.add_argument("--warmup", type=int, default=DEFAULT_WARMUP,
                   help=f"months the first model trains on (default {DEFAULT_WARMUP})")
    c.add_argument("--max-iter", type=int, default=DEFAULT_MAX_ITER,
                   help=f"cap on the model's boosting iterations, for speed (default {DEFAULT_MAX_ITER})")
    c.add_argument("--canary-rows", type=int, default=DEFAULT_CANARY_ROWS,
                   help=f"labelled rows of the next month the canary compares on (default {DEFAULT_CANARY_ROWS})")
    c.add_argument("--plot", metavar="FILE", help="write a PNG of the AUC over time for the three policies")
    c.add_argument("--json", action="store_true", help="print the whole result as JSON")
    c.set_defaults(func=cmd_backtest)
