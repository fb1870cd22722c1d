"""The evidence package of a rollout as a Prefect task: `publish_evidence_package` writes
`<home>/evidence/<version>/` (`retrainer.report.write_package`) and publishes the same content as
artifacts: a markdown artifact (comparison, checklist, the pictures' paths), a table artifact of
the checklist and a link to the folder. The canary flow calls it after its final decision."""
from __future__ import annotations

from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact

from retrainer.errors import RetrainerError
from retrainer.report import package
from retrainer.rollout.journal import RolloutJournal
from retrainer.settings import Settings

from .runtime import ONCE_PER_RUN, artifact_key, backend_for, per_run


def _plain(x: Any) -> Any:
    return x.to_dict() if hasattr(x, "to_dict") else x


@task(name="evidence-package", cache_key_fn=per_run("evidence"), **ONCE_PER_RUN)
def publish_evidence_package(version: str, production: str | None, plan: Any, decisions: list[Any],
                             result: dict[str, Any] | None = None, *, settings: Settings, backend=None,
                             ab_results: Any = None, drift_report: Any = None,
                             test_frame=None) -> dict[str, Any]:
    """Write the evidence package of `version`'s rollout against `production` and publish it.

    `plan`: a `RolloutPlan` or its dict; `decisions`: the flow's `Decision`s (or their dicts), in
    order; `result`: the canary flow's result dict (its `evidence` stands in for decisions given
    without theirs); `backend`: the flow's (default: `backend_for(settings)`). The journal record
    is read from `settings.home`. Returns {"path", "files", "decision"}; a failure to write the
    package is logged and returned as {"path": None, "error": ...}: the rollout's decision is
    already applied and stands."""
    logger = get_run_logger()
    backend = backend or backend_for(settings)
    try:
        rec = RolloutJournal(settings.home).get(version)
    except RetrainerError as exc:
        logger.warning("evidence package %s: rollout journal unreadable: %s", version, exc)
        rec = None
    try:
        path = package.write_package(
            settings.home, version, registry=backend.registry, plan=_plain(plan),
            decisions=[_plain(d) for d in decisions], journal_record=rec.to_dict() if rec else None,
            triggers_file=settings.triggers_file, production=production, result=result, ab_results=ab_results,
            drift_report=drift_report, test_frame=test_frame)
    except Exception as exc:  # noqa: BLE001 - the package is a record of a decision already applied
        logger.error("evidence package %s not written: %s: %s", version, type(exc).__name__, exc)
        return {"path": None, "error": f"{type(exc).__name__}: {exc}"}
    manifest = package.read_manifest(settings.home, version) or {}
    create_markdown_artifact(markdown=package.package_markdown(path), key=artifact_key("evidence", version),
                             description=f"evidence package of {version}: {path}")
    create_table_artifact(table=package.checklist_table(path), key=artifact_key("evidence-checklist", version),
                          description=f"deployment checklist of {version}")
    create_link_artifact(link=path.resolve().as_uri(), link_text=f"evidence package {version}",
                         key=artifact_key("evidence-folder", version), description=str(path))
    logger.info("evidence package %s: %s (%d files)", version, path, len(manifest.get("files") or {}))
    return {"path": str(path), "files": sorted(manifest.get("files") or {}), "decision": manifest.get("decision")}
