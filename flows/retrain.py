"""The retrain lifecycle: data -> Great Expectations -> time split -> train -> evaluate against
production -> semver registry."""
from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger

from tasks.lifecycle import (evaluate_models, load_data, publish_report, register_model,
                             split_data, train_candidate, validate_data)
from tasks.runtime import backend_for, install_log_filter, settings_for

TRIGGERS = ("manual", "scheduled", "drift", "volume", "performance", "concept")


@flow(name="retrain", log_prints=True)
def retrain(data: str, trigger: str = "manual", actor: str = "retrainer",
            context: dict[str, Any] | None = None, home: str | None = None) -> dict[str, Any]:
    install_log_filter()
    if trigger not in TRIGGERS:
        from retrainer.errors import ConfigError

        raise ConfigError(f"unknown trigger {trigger!r} (one of {', '.join(TRIGGERS)})")
    settings = settings_for(home)
    backend = backend_for(settings)

    frame, files = load_data(data)
    validation = validate_data(frame, settings)
    split = split_data(frame, settings)
    model_dir = train_candidate(backend, split, settings)
    metrics = evaluate_models(backend, model_dir, split)
    record = register_model(backend, model_dir, frame, files, split, metrics, validation,
                            trigger, settings, actor, context)
    publish_report(record)

    prod = metrics["production"]
    print(f"registered {record.version} as {record.status}: {record.gate['reason']}")
    return {"version": record.version, "status": record.status, "bump": record.bump,
            "auc": metrics["candidate"]["auc"], "production_version": prod and prod["version"],
            "production_auc": prod and prod["auc"], "gate": record.gate["reason"]}
