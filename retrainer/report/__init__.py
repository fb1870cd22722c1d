"""Evidence packages: one folder per rollout under `<home>/evidence/<version>/` with the triggers in
force, the plan, the champion/challenger comparison, the deployment checklist, the A/B results and
the pictures (ROC, calibration, PSI, the canary's metrics per check, traffic per stage).

- `package`: `write_package`, `read_manifest`, `list_packages`, `save_drift_report`;
- `content`: the markdown and the checklist rows from plain dicts;
- `plots`: one function per PNG (matplotlib, imported only when a plot is drawn).

Plain Python: `tasks/report.py` publishes the same content as Prefect artifacts.
"""
from .package import (
    EVIDENCE_DIR,
    FILES,
    MANIFEST,
    list_packages,
    package_dir,
    read_manifest,
    save_drift_report,
    write_package,
)

__all__ = ["EVIDENCE_DIR", "FILES", "MANIFEST", "list_packages", "package_dir", "read_manifest",
           "save_drift_report", "write_package"]
