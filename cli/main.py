"""`retrainer` command line: the console entry point. Each module adds its own sub-parsers;
this one composes them, runs the chosen command and turns errors into one line.

Commands that only read or compute (data, validate, labels, registry, drift, triggers check,
serve, rollback) never import Prefect; commands that run the lifecycle (retrain, approve, monitor,
canary, demo) run Prefect flows, on Prefect's ephemeral API unless PREFECT_API_URL points at a
server.

Every expected failure prints one line `error: ...` on stderr and exits with the error's
`exit_code` (2 unless the error says otherwise; 3 failed validation, 4 drift with
--fail-on-drift, 5 rejected manual retrain); an unexpected one exits 1, still in one line unless
RETRAINER_DEBUG is set; Ctrl-C exits 130. No tracebacks.

Every command runs with umask 0o077 (`retrainer.perms.restrict_umask`): what it creates -- the
registry, Prefect's database and logs under PREFECT_HOME (an ephemeral server is started by this
process), generated data -- is readable by its owner only.
"""
from __future__ import annotations

import argparse
import os
import sys

from retrainer.errors import RetrainerError
from retrainer.perms import restrict_umask

from . import backtest, compare, data, lifecycle, notify, registry, report, retention, rollout, serve, status

EXIT_BUG = 1
EXIT_INTERRUPTED = 130

# The commands in the order `retrainer --help` lists them.
COMMANDS = (data.add_data, data.add_validate, lifecycle.add_retrain, lifecycle.add_approve, lifecycle.add_monitor,
            lifecycle.add_triggers, lifecycle.add_demo, registry.add_registry, lifecycle.add_drift, data.add_labels,
            serve.add_serve, rollout.add_canary, rollout.add_rollout, rollout.add_rollback, compare.add_compare,
            backtest.add_backtest, notify.add_notify, report.add_report,
            retention.add_retention, status.add_status)


def build_parser() -> argparse.ArgumentParser:
    """The `retrainer` parser with every command; each sets `func`, the function that runs it."""
    p = argparse.ArgumentParser(prog="retrainer", description="Retrain, validate, version and roll out "
                                "a readmission risk model with Prefect.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in COMMANDS:
        add(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    """Parse `argv` (default: sys.argv), run the command and return its exit code."""
    old_umask = restrict_umask()
    try:
        return _run(argv)
    finally:
        os.umask(old_umask)  # matters only when main() is called in process (tests)


def _run(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except RetrainerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:  # a bug: still one line unless asked for the traceback
        if os.environ.get("RETRAINER_DEBUG"):
            raise
        print(f"error: unexpected {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''} "
              "(set RETRAINER_DEBUG=1 for the traceback)", file=sys.stderr)
        return EXIT_BUG


if __name__ == "__main__":
    raise SystemExit(main())
