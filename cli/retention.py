"""`retrainer retention [--dry-run] [--json]`: registry and prediction-store retention now, in
process and without Prefect (`retrainer.retention`; the `retention` deployment runs the same as a
flow, daily). `--dry-run` lists what would go and what is kept and why, and changes nothing."""
from __future__ import annotations

from .common import print_json, user


def run(dry_run: bool = False, actor: str | None = None, reason: str = "manual retention") -> dict:
    from retrainer import retention  # noqa: PLC0415 - heavy: pyarrow
    from retrainer.backends import get_backend  # noqa: PLC0415 - heavy: pandas
    from retrainer.rollout.journal import RolloutJournal  # noqa: PLC0415
    from retrainer.settings import load_settings  # noqa: PLC0415 - heavy: pydantic

    settings = load_settings()
    backend = get_backend(settings)
    journal = RolloutJournal(settings.home)
    versions = retention.endpoint_versions(settings, backend.endpoint)
    if dry_run:
        return {**retention.plan(backend.predictions, backend.registry, journal, settings,
                                 endpoint_versions=versions).to_dict(), "dry_run": True}
    return retention.apply(backend.predictions, backend.registry, journal, settings, actor=actor or user(),
                           reason=reason, endpoint_versions=versions)


def cmd_retention(args) -> int:
    result = run(args.dry_run, args.actor, args.reason)
    if args.json:
        print_json(result)
        return 0
    verb = "would delete" if result["dry_run"] else "deleted"
    parts = result["delete_partitions"]
    print(f"retention {result['retention_days']} days: horizon {result['horizon']}, cutoff {result['cutoff']}")
    print(f"{verb} {len(parts)} prediction partition(s), {result['rows']} rows "
          f"({sum(p['shadow_rows'] for p in parts)} shadow)"
          + (f": {parts[0]['day']} .. {parts[-1]['day']}" if parts else ""))
    print(f"{verb} {len(result['delete_label_files'])} label file(s), {result['label_rows']} labels")
    for p in result["kept_partitions"]:
        print(f"kept {p['day']} ({p['rows']} rows): {p['reason']}")
    for f in result["kept_label_files"]:
        print(f"kept label file {f['file']}: {f['reason']}")
    if result["registry_deferred"]:
        print(f"registry: deferred: {result['registry_deferred']}")
    else:
        done = result.get("registry_removed", result["registry_remove"])
        print(f"registry: {verb} artifacts of {', '.join(done) or 'no version'}")
    for k in result["registry_kept"]:
        print(f"registry kept {k['version']} ({k['status']}): {k['reason']}")
    if result.get("interrupted"):
        print(f"finished an interrupted run: {', '.join(result['interrupted']['partitions']) or 'label files'}")
    return 0


def add_retention(sub) -> None:
    """`retrainer retention [--dry-run] [--json] [--actor NAME] [--reason R]`."""
    p = sub.add_parser("retention", help="delete registry artifacts and prediction partitions past retention")
    p.add_argument("--dry-run", action="store_true", help="list what would go and what is kept; change nothing")
    p.add_argument("--json", action="store_true")
    p.add_argument("--actor", default=None, help="recorded in the audit logs (default: $USER)")
    p.add_argument("--reason", default="manual retention")
    p.set_defaults(func=cmd_retention)
