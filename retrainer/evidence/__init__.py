"""Evidence for automatic decisions: what was measured, on how many rows and positives, with what
interval, and the rule that decided.

- `auc`: paired and unpaired DeLong intervals of an AUC difference, and a bootstrap clustered on
  the pseudonym;
- `rule`: the non-inferiority rule (promote / rollback / inconclusive), `Evidence`, pooling;
- `guardrails`: error rate, p95 latency and output guardrails as one-sided tests;
- `power`: the matured labelled rows the rule needs, and when traffic will supply them;
- `cbpe`: a label-free AUC estimate from calibrated scores (NannyML's CBPE), for calibrated models
  only, which can roll a canary back but never promote one.

Plain Python, no Prefect: the gate, the canary, the deferred verdict and `retrainer compare` all
decide through these functions.
"""
from .auc import (
    AUCDelta,
    auc_of,
    clustered_bootstrap_paired,
    clustered_bootstrap_unpaired,
    delong_auc_variance,
    has_repeats,
    paired_delong,
    unpaired_delong,
    z_two_sided,
)
from .cbpe import (
    AUCEstimate,
    Calibration,
    CBPEComparison,
    calibration_check,
    estimate_auc,
    estimate_difference,
    expected_auc,
)
from .guardrails import (
    GuardrailResult,
    clopper_pearson,
    clopper_pearson_lower,
    clopper_pearson_upper,
    count_bad_scores,
    error_rate_guardrail,
    latency_guardrail,
    output_guardrail,
    relative_latency_guardrail,
)
from .power import PowerStatement, power_statement, required_labels
from .rule import (
    MIN_NEGATIVES,
    MIN_POSITIVES,
    VERDICTS,
    Counts,
    Evidence,
    Verdict,
    compare_paired,
    compare_unpaired,
    decide,
    pool,
)

__all__ = [
    "AUCDelta", "Counts", "Evidence", "MIN_NEGATIVES", "MIN_POSITIVES", "VERDICTS", "Verdict", "auc_of",
    "clustered_bootstrap_paired", "clustered_bootstrap_unpaired", "compare_paired", "compare_unpaired", "decide",
    "delong_auc_variance", "has_repeats", "paired_delong", "pool", "unpaired_delong", "z_two_sided",
    "GuardrailResult", "clopper_pearson", "clopper_pearson_lower", "clopper_pearson_upper", "count_bad_scores",
    "error_rate_guardrail", "latency_guardrail", "output_guardrail", "relative_latency_guardrail",
    "PowerStatement", "power_statement", "required_labels",
    "AUCEstimate", "CBPEComparison", "Calibration", "calibration_check", "estimate_auc", "estimate_difference",
    "expected_auc",
]
