"""Idempotent setup of the local Prefect side of retrainer, against PREFECT_API_URL:

- the process work pool `retrainer-local` (prefect.yaml's default pool), created if missing;
- the global concurrency limit `retrain-<model>` (limit 1) of every model spec in models/, which
  keeps one retrain per model at a time, created if missing (an existing limit is left as an
  operator set it).

Run from the repo root, then deploy and start a worker:

    python deployments/setup_local.py [--pool retrainer-local] [--model-name NAME ...]
    prefect --no-prompt deploy --all
    prefect worker start --pool retrainer-local

The automations (event -> retrain) are created by `prefect deploy` from the `triggers:` of the
deployments in prefect.yaml; nothing to do for them here.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def _ensure(read, create) -> str:
    """Create something unless it exists; racing another creator counts as existing."""
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound  # noqa: PLC0415 - heavy: prefect

    try:
        read()
        return "exists"
    except ObjectNotFound:
        pass
    try:
        create()
        return "created"
    except ObjectAlreadyExists:
        return "exists"


def ensure_work_pool(name: str) -> str:
    from prefect.client.orchestration import get_client  # noqa: PLC0415 - heavy: prefect
    from prefect.client.schemas.actions import WorkPoolCreate  # noqa: PLC0415 - heavy: prefect
    from prefect.workers.process import ProcessWorker  # noqa: PLC0415 - heavy: prefect

    with get_client(sync_client=True) as client:
        return _ensure(lambda: client.read_work_pool(name), lambda: client.create_work_pool(WorkPoolCreate(
            name=name, type="process", description="retrainer: flows run as local processes",
            base_job_template=ProcessWorker.get_default_base_job_template())))


def ensure_concurrency_limit(name: str, limit: int = 1) -> str:
    from prefect.client.orchestration import get_client  # noqa: PLC0415 - heavy: prefect
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate  # noqa: PLC0415 - heavy: prefect

    with get_client(sync_client=True) as client:
        return _ensure(lambda: client.read_global_concurrency_limit_by_name(name),
                       lambda: client.create_global_concurrency_limit(
                           GlobalConcurrencyLimitCreate(name=name, limit=limit)))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pool", default="retrainer-local")
    p.add_argument("--model-name", action="append", default=None,
                   help="a model (repeatable); default: every spec in models/")
    a = p.parse_args(argv)
    from retrainer.spec import available_models  # noqa: PLC0415 - after the sys.path insert
    from retrainer.triggers import concurrency_limit_name  # noqa: PLC0415 - heavy: sklearn

    print(f"work pool {a.pool}: {ensure_work_pool(a.pool)}")
    for model in a.model_name or available_models():
        gcl = concurrency_limit_name(model)
        print(f"global concurrency limit {gcl}: {ensure_concurrency_limit(gcl)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
