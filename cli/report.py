"""`retrainer report VERSION [--open] [--json]`: where a rollout's evidence package is and what it
holds. No Prefect, no matplotlib: it reads the package's manifest. The registry is read only to
tell an unknown version from one that was never rolled out."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from retrainer.errors import RolloutError

from .common import print_json


def _settings():
    from retrainer.settings import load_settings  # noqa: PLC0415 - heavy: pydantic

    return load_settings()


def _missing(settings, version: str) -> RolloutError:
    """Unknown version (UnknownVersion from the registry) or a version with no package."""
    from retrainer.backends import get_backend  # noqa: PLC0415 - heavy: pandas

    get_backend(settings).registry.get(version)  # raises UnknownVersion, one line, exit 2
    return RolloutError(f"no evidence package for {version}: it has not finished a rollout "
                        f"(looked in {settings.home / 'evidence' / version})")


def opener() -> list[str] | None:
    """The OS command that opens a folder, if one is available."""
    if sys.platform == "darwin":
        name = "open"
    elif sys.platform.startswith("win"):
        return ["explorer"] if shutil.which("explorer") else None
    else:
        name = "xdg-open"
    return [shutil.which(name)] if shutil.which(name) else None


def cmd_report(a) -> int:
    from retrainer.report import read_manifest  # noqa: PLC0415 - light, but keeps `--help` lean

    settings = _settings()
    manifest = read_manifest(settings.home, a.version)
    if manifest is None:
        raise _missing(settings, a.version)
    path = manifest["path"]
    if a.json:
        print_json(manifest)
    else:
        print(f"evidence package of {manifest['version']} (vs {manifest.get('production') or '-'}, "
              f"{manifest.get('strategy')}): {path}")
        print(f"decision: {manifest.get('decision') or '-'}: {manifest.get('reason') or '-'}")
        tally = manifest.get("checklist") or {}
        print("checklist: " + (", ".join(f"{n} {k}" for k, n in tally.items()) or "-"))
        print(f"written at {manifest.get('written_at')}")
        for name, meta in sorted((manifest.get("files") or {}).items()):
            print(f"  {name:<26} {meta.get('bytes', 0):>9,} B  {meta.get('what', '')}")
        missing = (manifest.get("sources") or {}).get("test_rows_missing")
        if missing:
            print(f"note: ROC and calibration are placeholders: {missing}")
        if not (manifest.get("sources") or {}).get("drift_report"):
            print("note: no drift report: psi.png is a placeholder")
    if a.open:
        cmd = opener()
        if cmd is None:
            print(f"no opener (xdg-open/open) found: the package is at {path}")
        else:
            try:  # xdg-open/open hand the folder to the desktop and return at once
                done = subprocess.run([*cmd, path], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                      stdin=subprocess.DEVNULL, timeout=15, check=False)
                ok, why = done.returncode == 0, f"exit {done.returncode}"
            except (OSError, subprocess.TimeoutExpired) as exc:
                ok, why = False, type(exc).__name__
            print(f"opened {path}" if ok else f"{Path(cmd[0]).name} could not open it ({why}): the package is "
                                                f"at {path}")
    return 0


def add_report(sub) -> None:
    """`retrainer report VERSION [--open] [--json]`."""
    p = sub.add_parser("report", help="where a rollout's evidence package is and what it holds")
    p.add_argument("version")
    p.add_argument("--open", action="store_true", help="open the package folder with the OS opener")
    p.add_argument("--json", action="store_true", help="print the package's manifest as JSON")
    p.set_defaults(func=cmd_report)
