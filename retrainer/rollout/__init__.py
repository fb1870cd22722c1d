"""Rollout: how a candidate reaches production, or does not.

- `plan`: the strategy and stages (traffic share, duration, check interval, criteria), from YAML
  files under rollout-plans/ or their dict form;
- `policy`: the decision rule a check applies (`check`, `manual`, `Decision`, `LiveEvidence`);
- `live`: the live evidence a check decides on, read from the store and the registry (`gather`);
- `statistics`: the DeLong interval of the AUC difference;
- `operations`: registry status and endpoint weights changed together (start, traffic, promote,
  reject, production rollback) and the live statistics of a running canary.

No Prefect here: the flows in `flows/canary.py` and `flows/rollback.py` call these through thin
tasks, and the CLI calls the operations directly.
"""
from .live import gather, power_at_start
from .operations import (
                         canary_variants,
                         pick_candidate,
                         promote_canary,
                         reject_canary,
                         rollback_production,
                         rollback_target,
                         set_canary_traffic,
                         shadow_variants,
                         start_canary,
                         status,
                         steady_variants,
                         window_stats,
)
from .plan import CRITERIA, STRATEGIES, RolloutPlan, Stage, format_duration
from .policy import (
                         ACTIONS,
                         POLICY_ACTOR,
                         Action,
                         ArmStats,
                         Decision,
                         LiveEvidence,
                         arms_from_stats,
                         check,
                         checks_planned,
                         manual,
                         max_extensions,
)
from .statistics import auc_difference_ci, ci_from_labelled, delong_auc_variance

__all__ = [
    "ACTIONS", "POLICY_ACTOR", "Action", "ArmStats", "Decision", "LiveEvidence", "RolloutPlan", "Stage",
    "arms_from_stats", "auc_difference_ci", "canary_variants", "check", "checks_planned", "ci_from_labelled",
    "delong_auc_variance", "gather", "max_extensions", "power_at_start",
    "format_duration", "manual", "pick_candidate", "promote_canary", "reject_canary", "rollback_production",
    "rollback_target", "set_canary_traffic", "shadow_variants", "start_canary",
    "CRITERIA", "STRATEGIES", "status", "steady_variants", "window_stats",
]
