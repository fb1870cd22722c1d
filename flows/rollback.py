"""Production rollback to one of the two kept previous versions: the endpoint switches (a weight
change, the target is already loaded as a standby), then the registry records it.

`retrainer rollback` calls `retrainer.rollout.rollback_production` directly, without Prefect (its
import alone costs seconds); this flow is the same operation with a run record and an artifact,
for the `rollback` deployment and the Prefect UI.
"""
from __future__ import annotations

from typing import Any

from prefect import flow

from tasks.rollout import rollback_production
from tasks.runtime import backend_for, install_log_filter, settings_for


@flow(name="rollback", log_prints=True)
def rollback(to: str | None = None, reason: str = "manual rollback", actor: str = "operator",
             home: str | None = None, model: str | None = None) -> dict[str, Any]:
    """Return production to `to` (default: the most recent kept previous version).

    Returns {"version", "replaced", "switch_ms", "total_ms", "endpoint"}; fails with a one-line
    RolloutError when the target is not a kept previous version or is already production.
    """
    install_log_filter()
    settings = settings_for(home, model)
    backend = backend_for(settings)
    result = rollback_production(backend, to, actor, reason)
    print(f"rolled back to {result['version']} (was {result['replaced']}); command to 100% traffic "
          f"{result['switch_ms']:.1f} ms, registry recorded at {result['total_ms']:.1f} ms")
    return result


if __name__ == "__main__":
    rollback()
