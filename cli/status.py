"""`retrainer status [--json]`: production, candidates, the endpoint's routing, running rollouts
(stage, traffic, strategy, next check), pending deferred verdicts, the last monitor run and the
last retention run (`retrainer.status`). Reads files and, if the endpoint runs, its public
`GET /status`; no Prefect import, no token needed."""
from __future__ import annotations

from .common import print_json


def _endpoint(settings, backend) -> dict:
    import httpx  # noqa: PLC0415 - only here

    from retrainer import status  # noqa: PLC0415 - heavy: pandas

    if settings.backend != "local":
        try:
            st = backend.endpoint.state()
            return status.endpoint_section(st.get("variants", []), running=True, source="endpoint")
        except Exception as exc:  # noqa: BLE001 - the rest of the status still shows
            return {"running": None, "source": f"endpoint unavailable ({type(exc).__name__})", "variants": []}
    host = settings.serving.host
    host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    try:
        resp = httpx.get(f"http://{host}:{settings.serving.port}/status", timeout=2.0)
        if resp.status_code == 200 and isinstance(resp.json().get("endpoint"), dict):
            return resp.json()["endpoint"]
    except (httpx.HTTPError, ValueError):
        pass
    return status.offline_endpoint(settings, backend.registry)


def run() -> dict:
    from retrainer import status  # noqa: PLC0415 - heavy: pandas
    from retrainer.backends import get_backend  # noqa: PLC0415 - heavy: pandas
    from retrainer.rollout.journal import RolloutJournal  # noqa: PLC0415
    from retrainer.settings import load_settings  # noqa: PLC0415 - heavy: pydantic

    settings = load_settings()
    backend = get_backend(settings)
    return status.gather(settings, backend.registry, RolloutJournal(settings.home),
                         endpoint=_endpoint(settings, backend))


def cmd_status(args) -> int:
    from retrainer import status  # noqa: PLC0415 - heavy: pandas

    result = run()
    if args.json:
        print_json(result)
    else:
        print(status.text(result))
    return 0


def add_status(sub) -> None:
    """`retrainer status [--json]`."""
    p = sub.add_parser("status", help="production, candidates, rollouts, pending verdicts, last monitor run")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_status)
