"""`retrainer serve`: the local HTTP endpoint (SageMaker container contract). No Prefect.

The serving stack is imported inside the command (`# noqa: PLC0415`): it pulls in pandas and the
scorers, which cost seconds that `retrainer --help` should not pay.
"""
from __future__ import annotations

import sys

from retrainer.errors import RegistryError


def cmd_serve(a) -> int:
    """Serve production (and any canary) until Ctrl-C; refuses when there is no registry."""
    from retrainer.serving import serve  # noqa: PLC0415 - heavy: fastapi
    from retrainer.serving.contract import check_serving_settings, exposure_warning  # noqa: PLC0415 - heavy: fastapi
    from retrainer.settings import load_settings  # noqa: PLC0415 - heavy: pydantic

    settings = load_settings()
    check_serving_settings(settings.serving)  # ConfigError (exit 2): no, empty, default or short admin token
    if not settings.registry_dir.exists():
        raise RegistryError(f"no registry under {settings.home}; train a model first (retrainer retrain)")
    port = a.port or settings.serving.port
    warning = exposure_warning(settings.serving.host, port)
    if warning:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"serving on http://{settings.serving.host}:{port} (Ctrl-C to stop)")
    serve(settings, port=a.port, capture=not a.no_capture)
    return 0


def add_serve(sub) -> None:
    """`retrainer serve [--port N] [--no-capture]`."""
    sv = sub.add_parser("serve", help="run the local HTTP endpoint (SageMaker container contract)")
    sv.add_argument("--port", type=int, default=None)
    sv.add_argument("--no-capture", action="store_true", help="do not store predictions for monitoring")
    sv.set_defaults(func=cmd_serve)
