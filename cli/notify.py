"""`retrainer notify test [--kind KIND] [--block NAME ...]` and `retrainer notify kinds`: check the
notification channels end to end, and list the event catalogue.

`test` sends one notice, marked TEST, through every configured block (settings.notify.blocks) or
the blocks given, and prints one line per block. Exit 0 when every block delivered it (or none is
configured and the notice went to the log), 5 when any block failed.
"""
from __future__ import annotations

import argparse

from .common import print_json

EXIT_NOTIFY_FAILED = 5


def cmd_notify_test(a) -> int:
    from retrainer.notify import test_fields  # noqa: PLC0415 - the catalogue, light but only here
    from retrainer.settings import load_settings  # noqa: PLC0415 - heavy: pydantic
    from tasks.notify import notify  # noqa: PLC0415 - heavy: prefect

    settings = load_settings()
    if a.block:
        settings = settings.model_copy(update={"notify": settings.notify.model_copy(update={"blocks": a.block})})
    if a.timeout is not None:
        settings = settings.model_copy(update={"notify": settings.notify.model_copy(update={"timeout_s": a.timeout})})
    out = notify(a.kind, settings, **test_fields(a.kind), test="this is a test notice from `retrainer notify test`")
    if a.json:
        print_json(out)
    else:
        for name in out["sent"]:
            print(f"sent     {name}: {out['subject']}")
        for name, problem in out["failed"].items():
            print(f"FAILED   {name}: {problem}")
        if out["logged"] and not out["failed"]:
            print(f"logged   (no notify block configured: set notify.blocks or RETRAINER_NOTIFY__BLOCKS): "
                  f"{out['subject']}")
    return EXIT_NOTIFY_FAILED if out["failed"] else 0


def cmd_notify_kinds(a) -> int:
    from retrainer.notify import kinds_table  # noqa: PLC0415 - only here

    print(kinds_table())
    return 0


def add_notify(sub) -> None:
    """`retrainer notify test|kinds`."""
    from retrainer.notify import KINDS  # noqa: PLC0415 - plain Python, no Prefect: the choices

    p = sub.add_parser("notify", help="check notification channels; list the notice kinds")
    nsub = p.add_subparsers(dest="sub", required=True)
    t = nsub.add_parser("test", help="send a TEST notice through every configured notify block",
                        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    t.add_argument("--kind", default="model.registered", choices=sorted(KINDS), help="which notice to send")
    t.add_argument("--block", action="append", metavar="SLUG/NAME",
                   help="send through this block instead of notify.blocks (repeatable)")
    t.add_argument("--timeout", type=float, default=None, help="seconds to wait for the blocks (notify.timeout_s)")
    t.add_argument("--json", action="store_true")
    t.set_defaults(func=cmd_notify_test)
    k = nsub.add_parser("kinds", help="the notice kinds, their audience and fields")
    k.set_defaults(func=cmd_notify_kinds)
