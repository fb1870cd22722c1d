"""Retraining triggers: configuration (`triggers.yaml`), pure evaluation, priorities, duplicates.

Every evaluation function is pure: its inputs (numbers already read from the prediction store and
the registry) and the clock (`now`) are passed in, and it returns a `TriggerEvaluation`: fired or
not, a one-line reason, the numbers it decided on, and the noise floor where one applies. A window
smaller than the configured minimum is "too small to tell" and never fires. When several triggers
fire at once, `choose` reports the one with the highest priority (lowest number; ties: the order in
the file).

Modules:
- `config`: the pydantic trigger models, `parse_triggers`/`load_triggers`, durations, and the
  shared names (`Trigger`/`RETRAIN_TRIGGERS`, `EVENTS`, `resource_id`, `PROFILE_FILE`);
- `evaluate`: the pure evaluators, `TriggerEvaluation`, window AUCs and `choose`;
- `policy`: emission cooldown, approvals, the duplicate-work decision, the concurrency limit name
  (pure as well);
- `inputs`: the I/O: `collect_inputs` reads the prediction store and the registry into
  `MonitorInputs`, and `evaluate_all` runs the evaluators on them;
- `state`: the monitor's state file (when each event was last emitted).
A new version's reference profile is fitted by `retrainer.drift.profile.fit_reference_profile`
(re-exported here).

Plain Python: this package must never import prefect.
"""
from __future__ import annotations

from ..drift.profile import fit_reference_profile
from .config import (
    EVENTS,
    PROFILE_FILE,
    RETRAIN_TRIGGERS,
    TYPE_TO_TRIGGER,
    ConceptDriftTrigger,
    DataDriftTrigger,
    Duration,
    ManualTrigger,
    PerformanceTrigger,
    Policy,
    ScheduledTrigger,
    Trigger,
    TriggersConfig,
    TriggerSpec,
    VolumeTrigger,
    as_utc,
    format_duration,
    load_triggers,
    parse_duration,
    parse_triggers,
    resource_id,
)
from .evaluate import (
    Z95,
    Z_ONE_SIDED,
    TriggerEvaluation,
    WindowAUC,
    auc_standard_error,
    auc_window,
    choose,
    concept_z,
    cron_ticks,
    evaluate_concept_drift,
    evaluate_data_drift,
    evaluate_manual,
    evaluate_performance,
    evaluate_scheduled,
    evaluate_volume,
    window_auc,
    window_bounds,
)
from .inputs import MonitorInputs, collect_inputs, evaluate_all, registered_auc
from .policy import (
    ApprovalDecision,
    DuplicateDecision,
    EmitDecision,
    approval_decision,
    concurrency_limit_name,
    duplicate_decision,
    effective_approvers,
    emit_decision,
)
from .state import last_emitted, load_state, save_state, state_path

__all__ = [
    # config
    "Trigger", "RETRAIN_TRIGGERS", "TYPE_TO_TRIGGER", "EVENTS", "PROFILE_FILE", "resource_id", "as_utc",
    "parse_duration", "format_duration", "Duration", "ScheduledTrigger", "DataDriftTrigger",
    "PerformanceTrigger", "ConceptDriftTrigger", "VolumeTrigger", "ManualTrigger", "TriggerSpec", "Policy",
    "TriggersConfig", "parse_triggers", "load_triggers",
    # evaluate
    "Z95", "Z_ONE_SIDED", "TriggerEvaluation", "WindowAUC", "auc_standard_error", "auc_window", "window_auc",
    "window_bounds", "concept_z",
    "evaluate_data_drift", "evaluate_performance", "evaluate_concept_drift", "evaluate_volume",
    "evaluate_scheduled", "cron_ticks", "evaluate_manual", "choose",
    # policy
    "EmitDecision", "emit_decision", "effective_approvers", "ApprovalDecision", "approval_decision",
    "DuplicateDecision", "duplicate_decision", "concurrency_limit_name",
    # inputs, state, profile
    "MonitorInputs", "collect_inputs", "evaluate_all", "registered_auc",
    "state_path", "load_state", "save_state", "last_emitted",
    "fit_reference_profile",
]
