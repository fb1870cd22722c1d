"""Tasks of the retention flow: thin wrappers over `retrainer.retention` and its artifact."""
from __future__ import annotations

from datetime import datetime
from typing import Any

from prefect import task
from prefect.artifacts import create_markdown_artifact

from retrainer import retention
from retrainer.backends import Backend
from retrainer.rollout.journal import RolloutJournal
from retrainer.settings import Settings

from .runtime import IN_PROCESS


@task(name="retention-plan", **IN_PROCESS)
def plan_retention(backend: Backend, settings: Settings, now: datetime) -> retention.RetentionPlan:
    """What a run would delete and keep (changes nothing)."""
    return retention.plan(backend.predictions, backend.registry, RolloutJournal(settings.home), settings, now,
                          endpoint_versions=retention.endpoint_versions(settings, backend.endpoint))


@task(name="retention-apply", **IN_PROCESS)
def apply_retention(backend: Backend, settings: Settings, now: datetime, actor: str, reason: str) -> dict[str, Any]:
    """Registry artifacts and prediction-store partitions past retention removed (audited)."""
    return retention.apply(backend.predictions, backend.registry, RolloutJournal(settings.home), settings, now,
                           actor=actor, reason=reason,
                           endpoint_versions=retention.endpoint_versions(settings, backend.endpoint))


@task(name="retention-report", **IN_PROCESS)
def publish_retention(result: dict[str, Any], dry_run: bool) -> None:
    """The markdown artifact `retention`: what went, what was kept and why."""
    fields = retention.RetentionPlan.__dataclass_fields__
    plan = retention.RetentionPlan(**{k: v for k, v in result.items() if k in fields})
    title = "Retention (dry run: nothing deleted)" if dry_run else "Retention"
    text = plan.markdown(title)
    if not dry_run:
        text += (f"\nRegistry artifacts removed: {', '.join(result['registry_removed']) or 'none'}. "
                 f"Audit line written: {'yes' if result.get('audit') else 'no (nothing deleted)'}.\n")
    create_markdown_artifact(markdown=text, key="retention", description=title)
