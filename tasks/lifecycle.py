"""Tasks of the retrain lifecycle. Each is a thin wrapper over one domain step."""
from __future__ import annotations

import contextlib
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd
from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
from prefect.concurrency.sync import concurrency
from prefect.context import FlowRunContext
from prefect.events import emit_event
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

from retrainer import clock, evaluation, lifecycle, triggers
from retrainer.backends import Backend
from retrainer.dataio import Split, load_batch, parquet_files, time_split
from retrainer.errors import ValidationFailed
from retrainer.registry import ModelRecord
from retrainer.settings import Settings
from retrainer.training import load_model
from retrainer.validation import validate_frame

from .runtime import IN_PROCESS, artifact_key


@task(name="load-data", **IN_PROCESS)
def load_data(path: str) -> tuple[pd.DataFrame, list[str]]:
    return load_batch(path), [str(p) for p in parquet_files(path)]


@task(name="validate-data", **IN_PROCESS)
def validate_data(frame: pd.DataFrame, settings: Settings) -> dict[str, Any]:
    """Great Expectations gate. On failure: a markdown artifact with what failed, then the run
    stops before training (the registry is never touched)."""
    result = validate_frame(frame, settings.validation)
    create_markdown_artifact(markdown=result.to_markdown(), key="data-validation",
                             description="Great Expectations result of the training batch")
    if not result.success:
        lines = result.failure_lines()
        raise ValidationFailed(f"data failed validation: {result.n_failed} of {result.n_expectations} "
                               f"expectations failed: " + "; ".join(lines[:3])
                               + (f"; and {len(lines) - 3} more" if len(lines) > 3 else ""), result)
    return result.summary()


@task(name="time-split", **IN_PROCESS)
def split_data(frame: pd.DataFrame, settings: Settings) -> Split:
    return time_split(frame, settings.split)


@task(name="train-candidate", **IN_PROCESS)
def train_candidate(backend: Backend, split: Split, settings: Settings) -> str:
    workdir = Path(tempfile.mkdtemp(prefix="retrainer-train-"))
    return str(backend.trainer.fit(split.train, split.validation, settings.model.model_dump(), workdir))


@task(name="evaluate", **IN_PROCESS)
def evaluate_models(backend: Backend, model_dir: str, split: Split,
                    settings: Settings | None = None) -> evaluation.Comparison:
    """Score the candidate and the current production model on the same held-out test set, with
    their paired comparison under `settings.gate` (the scores stay in memory, never stored)."""
    return lifecycle.evaluate_against_production(backend.registry, model_dir, split.test,
                                                 settings.gate if settings is not None else None)


@task(name="register-model", **IN_PROCESS)
def register_model(backend: Backend, model_dir: str, frame: pd.DataFrame, files: list[str], split: Split,
                   metrics: evaluation.Comparison, validation: dict[str, Any], trigger: triggers.Trigger,
                   settings: Settings, actor: str, context: dict[str, Any] | None) -> ModelRecord:
    return lifecycle.register_candidate(backend.registry, model_dir, frame=frame, files=files, split=split,
                                        metrics=metrics, validation=validation, trigger=trigger,
                                        settings=settings, actor=actor, context=context)


@task(name="publish-report", **IN_PROCESS)
def publish_report(record: ModelRecord) -> None:
    m = record.metrics
    prod_version = (m.get("production") or {}).get("version")
    create_table_artifact(
        table=evaluation.comparison_table(m["candidate"], m.get("production"), record.version, prod_version),
        key="champion-challenger", description=f"{record.version} vs production {prod_version or '-'}")
    create_markdown_artifact(markdown=lifecycle.version_card(record),
                             key=artifact_key("model", record.version), description="version card")


REGISTERED_EVENT = "retrainer.model.registered"


def registered_payload(record: ModelRecord, trigger: str | None = None) -> dict[str, Any]:
    """What `retrainer.model.registered` carries: the version, its status, the gate's evidence
    summary (method, n, positives, delta, interval, needs_approval) and the trigger."""
    gate = record.gate or {}
    ev = gate.get("evidence") or {}
    return {"version": record.version, "status": str(record.status), "trigger": trigger or record.trigger,
            "gate": {"policy": gate.get("policy"), "eligible": gate.get("eligible"),
                     "needs_approval": bool(gate.get("needs_approval")), "reason": gate.get("reason"),
                     "method": ev.get("method"), "n": ev.get("n_candidate"), "positives": ev.get("pos_candidate"),
                     "delta": ev.get("delta"), "interval": [ev.get("low"), ev.get("high")] if ev else None,
                     "level": ev.get("level")}}


@task(name="emit-registered", **IN_PROCESS)
def emit_registered(record: ModelRecord, settings: Settings) -> str | None:
    """Emit `retrainer.model.registered` on resource retrainer.model.<model_name> (the monitor's
    convention), with the version's status as a resource label too, so the rollout automation
    matches candidates only; rejected versions are announced as well. Returns the event id."""
    resource = {"prefect.resource.id": triggers.config.resource_id(settings.model_name),
                "prefect.resource.name": settings.model_name,
                "retrainer.version": record.version, "retrainer.status": str(record.status)}
    event = emit_event(event=REGISTERED_EVENT, resource=resource, payload=registered_payload(record))
    return str(event.id) if event else None


# ---- triggers: reference profile, duplicate protection, one retrain at a time per model ---------

@task(name="reference-profile", **IN_PROCESS)
def build_reference_profile(model_dir: str, split: Split, settings: Settings, trigger: triggers.Trigger) -> str:
    """Fit the drift reference (training + validation features and the model's score) and store it
    in the model directory BEFORE registration, so the artifact sha256 covers it."""
    profile = triggers.fit_reference_profile(
        load_model(model_dir), split.train, split.validation, settings,
        meta={"model_name": settings.model_name, "trigger": trigger, "months": split.months})
    path = profile.save(Path(model_dir) / triggers.PROFILE_FILE)
    return str(path)


@task(name="check-duplicate", **IN_PROCESS)
def check_duplicate(backend: Backend, split: Split, settings: Settings, trigger: triggers.Trigger,
                    run_created_at: datetime | None) -> triggers.DuplicateDecision:
    """Skip work another run already did: same training data and settings registered after this
    run was created, or (automatic triggers) within the debounce window."""
    policy = triggers.load_triggers(settings.triggers_file).policy
    fp = lifecycle.fingerprint(split.train, settings.model.model_dump())
    return triggers.duplicate_decision(
        schema_hash=fp.schema_hash, data_hash=fp.data_hash, params_hash=fp.params_hash,
        records=backend.registry.list(), run_created_at=run_created_at,
        now=clock.utcnow(), window=policy.dedupe_window, trigger=trigger)


def current_run_created_at() -> datetime | None:
    ctx = FlowRunContext.get()
    return getattr(ctx.flow_run, "created", None) if ctx and ctx.flow_run else None


def ensure_concurrency_limit(name: str, limit: int = 1) -> None:
    """Create the global concurrency limit if it does not exist (an existing one is left as is)."""
    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            try:
                client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=limit))
            except ObjectAlreadyExists:
                pass


@contextlib.contextmanager
def retrain_slot(settings: Settings, timeout_s: float = 6 * 3600):
    """Hold the model's `retrain-<model_name>` global concurrency slot (limit 1): a second retrain
    of the same model, from any deployment or the CLI, waits here until the first one is done."""
    name = triggers.concurrency_limit_name(settings.model_name)
    ensure_concurrency_limit(name)
    with concurrency(name, occupy=1, timeout_seconds=timeout_s, strict=True):
        yield name
