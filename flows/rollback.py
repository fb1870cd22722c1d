"""Production rollback to one of the two kept previous versions: the endpoint switches (a weight
change, the target is already loaded as a standby), then the registry records it.

`rollback_now(...)` is the same operation without Prefect (for `retrainer rollback`, where the
Prefect import alone would cost seconds); the flow adds a run record and an artifact.
"""
from __future__ import annotations

from typing import Any

from prefect import flow

from tasks.rollout import rollback_production
from tasks.runtime import backend_for, install_log_filter, settings_for


def rollback_now(to: str | None = None, reason: str = "manual rollback", actor: str = "operator",
                 home: str | None = None) -> dict[str, Any]:
    """Plain Python. Returns {"version", "replaced", "switch_ms", "total_ms", "endpoint"};
    RolloutError (one line) when the target is not a kept previous version or is production."""
    from retrainer.backends import get_backend
    from retrainer.rollout import rollback_production as do_rollback
    from retrainer.settings import load_settings

    settings = load_settings(**({"home": home} if home else {}))
    backend = get_backend(settings)
    return do_rollback(backend.registry, backend.endpoint, to, actor=actor, reason=reason)


@flow(name="rollback", log_prints=True)
def rollback(to: str | None = None, reason: str = "manual rollback", actor: str = "operator",
             home: str | None = None) -> dict[str, Any]:
    install_log_filter()
    settings = settings_for(home)
    backend = backend_for(settings)
    result = rollback_production(backend, to, actor, reason)
    print(f"rolled back to {result['version']} (was {result['replaced']}); command to 100% traffic "
          f"{result['switch_ms']:.1f} ms, registry recorded at {result['total_ms']:.1f} ms")
    return result


if __name__ == "__main__":
    rollback()
