"""Domain steps of a retrain that are not training or evaluation themselves: fingerprints,
version choice, the registry record. Flows call these through thin tasks."""
from __future__ import annotations

import hashlib
import json
import subprocess
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import pandas as pd

from . import schema as S
from .clock import utcnow_iso
from .dataio import Split, content_hash
from .registry import ModelRecord, Registry, Status
from .versioning import Fingerprint, VersionDecision, next_version

if TYPE_CHECKING:  # annotations only: importing `triggers` costs `registry show` its evaluators
    from .evidence import Evidence
    from .triggers.config import Trigger

PACKAGE_DIR = Path(__file__).resolve().parent

# How a retrain run ended. Not a registry status: a registered version's status (which the gate
# may have made "rejected") is the summary's `status`; "not-approved" is an approver's refusal.
Outcome = Literal["registered", "skipped", "not-approved"]


@lru_cache(maxsize=1)
def code_version() -> str:
    """Git commit (with -dirty) when in a checkout, plus a hash of the package source, so a model
    can always be traced to the code that trained it."""
    h = hashlib.sha256()
    for f in sorted(PACKAGE_DIR.rglob("*.py")):
        h.update(f.read_bytes())
    src = h.hexdigest()[:12]
    try:
        commit = subprocess.run(["git", "-C", str(PACKAGE_DIR), "rev-parse", "--short=12", "HEAD"],
                                capture_output=True, text=True, timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(PACKAGE_DIR), "status", "--porcelain", "--", "."],
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return f"git:{commit}{'-dirty' if dirty else ''} src:{src}"
    except (OSError, subprocess.SubprocessError):
        return f"src:{src}"


def params_hash(params: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:16]


def fingerprint(train_frame: pd.DataFrame, params: dict[str, Any]) -> Fingerprint:
    return Fingerprint(schema_hash=S.schema_hash(S.feature_schema()),
                       data_hash=content_hash(train_frame),
                       params_hash=params_hash(params))


def parent_of(registry: Registry) -> ModelRecord | None:
    """The version a new model is compared with: production, else the newest registered."""
    prod = registry.production()
    if prod is not None:
        return prod
    versions = registry.list()
    return versions[-1] if versions else None


def choose_version(registry: Registry, fp: Fingerprint) -> tuple[VersionDecision, ModelRecord | None]:
    parent = parent_of(registry)
    parent_fp = (Fingerprint(parent.schema_hash, parent.data_hash, parent.params_hash)
                 if parent else None)
    decision = next_version([r.version for r in registry.list()],
                            parent.version if parent else None, parent_fp, fp)
    return decision, parent


def data_summary(frame: pd.DataFrame, split: Split, files: list[str]) -> dict[str, Any]:
    ts = pd.to_datetime(frame[S.TIMESTAMP])
    return {"rows": int(len(frame)), "start": ts.min().isoformat(), "end": ts.max().isoformat(),
            "files": files, "split": split.summary()}


def build_record(*, decision: VersionDecision, parent: ModelRecord | None, fp: Fingerprint,
                 trigger: Trigger, params: dict[str, Any], metrics: dict[str, Any],
                 data: dict[str, Any], validation: dict[str, Any], gate: dict[str, Any],
                 has_production: bool, extra: dict[str, Any] | None = None) -> ModelRecord:
    """The registry record: the first model goes straight to production, later ones enter as
    candidates when the gate passes and as rejected when it does not."""
    if not has_production:
        status = Status.PRODUCTION if gate["eligible"] else Status.REJECTED
    else:
        status = Status.CANDIDATE if gate["eligible"] else Status.REJECTED
    return ModelRecord(
        version=decision.version, status=status, created_at=utcnow_iso(), trigger=trigger,
        parent=parent.version if parent else None, bump=decision.bump, bump_reason=decision.reason,
        schema_hash=fp.schema_hash, data_hash=fp.data_hash, params_hash=fp.params_hash,
        code_version=code_version(), params=params, metrics=metrics, data=data,
        validation=validation, gate=gate, extra=extra or {})


def registration_evidence(record: ModelRecord) -> Evidence | None:
    """The paired comparison with production made by the gate at registration (an
    `evidence.Evidence`), or None: a version registered before the gate kept its evidence, or one
    registered without a production model to compare with."""
    ev = (getattr(record, "gate", None) or {}).get("evidence")
    if not ev:
        return None
    from .evidence import Evidence as _Evidence  # noqa: PLC0415 - heavy: scipy, for `registry` commands

    return _Evidence.from_dict(ev)


def _gate_lines(gate: dict[str, Any]) -> list[str]:
    """The card's lines on the gate's policy, approval and evidence (none for older records)."""
    lines = []
    if gate.get("policy"):
        approval = "; **needs approval** before a canary" if gate.get("needs_approval") else ""
        lines.append(f"- gate policy: {gate['policy']}{approval}")
    ev = gate.get("evidence")
    if ev:
        p = gate.get("p_value")
        lines.append(f"- gate evidence: {ev.get('reason', '-')}"
                     + (f"; one-sided p(Δ > 0) = {p:.4g}" if p is not None else ""))
    return lines


def version_card(rec: ModelRecord) -> str:
    """Markdown card of a version for a Prefect artifact and `registry show`."""
    m = rec.metrics.get("candidate", rec.metrics)
    if "spearman" in m and "auc" not in m:  # a regression or ranking model
        headline = f"- test Spearman: **{m.get('spearman')}**; MAE {m.get('mae')}; RMSE {m.get('rmse')}; n {m.get('n')}"
    else:
        headline = f"- test AUC: **{m.get('auc')}**; Brier {m.get('brier')}; F1 {m.get('f1')}"
    lines = [f"# {rec.version} ({rec.status})", "",
             f"- trigger: **{rec.trigger}**; parent: {rec.parent or '-'}; bump: {rec.bump} ({rec.bump_reason})",
             headline,
             f"- gate: {rec.gate.get('reason', '-')}",
             *_gate_lines(rec.gate),
             f"- data: {rec.data.get('rows')} rows, {rec.data.get('start')} .. {rec.data.get('end')}; "
             f"hash `{rec.data_hash[:16]}`",
             f"- schema hash `{rec.schema_hash}`; params hash `{rec.params_hash}`",
             f"- code: `{rec.code_version}`",
             f"- validation: {'passed' if rec.validation.get('success') else 'failed'} "
             f"({rec.validation.get('n_expectations', '?')} expectations)",
             f"- artifacts sha256 `{rec.artifact_sha256.rsplit(':', 1)[-1][:16]}`", "",
             "| parameter | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in sorted(rec.params.items())]
    return "\n".join(lines)


# ---- the evaluate and register steps (the retrain flow's tasks and the benchmark's baseline call these) ----

def evaluate_against_production(registry: Registry, model_dir: str | Path, test: pd.DataFrame, gate=None):
    """Score the candidate in `model_dir` and the current production model (its artifacts verified
    first) on the same held-out `test` set. Returns `evaluation.Comparison`, which keeps both score
    vectors, the labels and the patient ids for the paired gate (made under `gate`, a
    `GateSettings`; its defaults when None) and its paired `evidence`."""
    from .evaluation import compare_on_test, evaluate  # noqa: PLC0415 - heavy: scikit-learn, for `registry` commands
    from .training import load_model  # noqa: PLC0415 - heavy: scikit-learn

    model = load_model(model_dir)
    s_candidate = model.predict(test)
    candidate = evaluate(model, test, s_candidate)
    prod = registry.production()
    production = s_production = None
    if prod is not None:
        prod_model = load_model(registry.verify(prod.version))
        s_production = prod_model.predict(test)
        production = evaluate(prod_model, test, s_production)
        production["version"] = prod.version
    return compare_on_test(candidate, production, test, s_candidate, s_production, gate)


def calibration_on_validation(model_dir: str | Path, validation: pd.DataFrame) -> dict[str, Any]:
    """The candidate's calibration check (Hosmer-Lemeshow and expected calibration error) on the
    validation month, as stored in `record.gate["calibration"]`: the canary's label-free (CBPE)
    estimate is made only for a model that passed it. Refused (ok false, with the reason) when the
    validation month cannot tell."""
    from .evidence.cbpe import calibration_check  # noqa: PLC0415 - heavy: scipy
    from .training import load_model  # noqa: PLC0415 - heavy: scikit-learn

    if S.TASK != "binary_classification":
        return {"ok": False, "reason": f"calibration applies to classifiers; {S.MODEL} is a {S.TASK} model"}
    if validation is None or not len(validation):
        return {"ok": False, "reason": "no validation rows to check calibration on"}
    p = load_model(model_dir).predict(validation)
    try:
        return calibration_check(validation[S.LABEL].to_numpy(), p).to_dict()
    except ValueError as exc:  # too few rows or one class: the check cannot tell
        return {"ok": False, "reason": f"calibration not checked: {exc}"}


def register_candidate(registry: Registry, model_dir: str | Path, *, frame: pd.DataFrame, files: list[str],
                       split: Split, metrics, validation: dict[str, Any], trigger: "Trigger", settings,
                       actor: str, context: dict[str, Any] | None) -> ModelRecord:
    """Choose the version, apply the promotion gate (`settings.gate`, on `metrics`: an
    `evaluation.Comparison`) and register the model with its lineage; the gate's decision, with
    the paired evidence and every rule's result, is the record's `gate`."""
    from .evaluation import gate_comparison  # noqa: PLC0415 - heavy: scikit-learn, for `registry` commands

    params = settings.model.model_dump()
    fp = fingerprint(split.train, params)
    decision, parent = choose_version(registry, fp)
    gate = gate_comparison(metrics, settings.gate)  # paired on the shared test set; only the evidence is kept
    gate_dict = {**gate.to_dict(), "calibration": calibration_on_validation(model_dir, split.validation)}
    record = build_record(
        decision=decision, parent=parent, fp=fp, trigger=trigger, params=params, metrics=metrics.to_dict(),
        data=data_summary(frame, split, files), validation=validation, gate=gate_dict,
        has_production=registry.production() is not None, extra={"context": context or {}})
    return registry.register(record, Path(model_dir), actor=actor)
