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
from retrainer.spec import DEFAULT_MODEL, active_model, load_spec

from . import (
    backtest,
    compare,
    data,
    deployments,
    lifecycle,
    models,
    notify,
    registry,
    report,
    retention,
    rollout,
    serve,
    status,
)

EXIT_BUG = 1
EXIT_INTERRUPTED = 130

# The commands in the order `retrainer --help` lists them.
COMMANDS = (data.add_data, data.add_validate, lifecycle.add_retrain, lifecycle.add_approve, lifecycle.add_monitor,
            lifecycle.add_triggers, lifecycle.add_demo, registry.add_registry, lifecycle.add_drift, data.add_labels,
            serve.add_serve, rollout.add_canary, rollout.add_rollout, rollout.add_rollback, compare.add_compare,
            backtest.add_backtest, notify.add_notify, report.add_report,
            retention.add_retention, status.add_status, models.add_models, deployments.add_deployments)


def build_parser() -> argparse.ArgumentParser:
    """The `retrainer` parser with every command; each sets `func`, the function that runs it."""
    p = argparse.ArgumentParser(prog="retrainer", description="Retrain, validate, version and roll out "
                                "production models (one spec per model in models/) with Prefect.")
    p.add_argument("--model", metavar="NAME", default=None,
                   help="the model to work on: a spec in models/ (default: RETRAINER_MODEL_NAME, else "
                        f"{DEFAULT_MODEL}); also accepted after the command")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in COMMANDS:
        add(sub)
    _model_option_everywhere(sub)
    return p


def _model_option_everywhere(sub: argparse._SubParsersAction) -> None:
    """`--model NAME` after any command or sub-command too (`retrainer retrain --model X`)."""
    for parser in set(sub.choices.values()):
        if not any("--model" in a.option_strings for a in parser._actions):
            parser.add_argument("--model", metavar="NAME", default=argparse.SUPPRESS,
                                help="the model to work on (a spec in models/)")
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                _model_option_everywhere(action)


def select_model(name: str | None) -> str:
    """Make `name` the model of this command (and of every process it starts): its spec is read
    first, so an unknown model is one error line before anything runs."""
    if name:
        load_spec(name)
        os.environ["RETRAINER_MODEL_NAME"] = name
    return active_model()


def main(argv: list[str] | None = None) -> int:
    """Parse `argv` (default: sys.argv), run the command and return its exit code."""
    old_umask = restrict_umask()
    old_model = os.environ.get("RETRAINER_MODEL_NAME")
    try:
        return _run(argv)
    finally:  # both matter only when main() is called in process (tests)
        os.umask(old_umask)
        if old_model is None:
            os.environ.pop("RETRAINER_MODEL_NAME", None)
        else:
            os.environ["RETRAINER_MODEL_NAME"] = old_model


def _run(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    try:
        select_model(getattr(args, "model", None))
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
