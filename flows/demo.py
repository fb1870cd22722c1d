"""`retrainer demo`: the lifecycle on generated data, time compressed, on embedded defaults."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from retrainer.datagen import GenerationSpec, generate
from retrainer.errors import ConfigError
from tasks.runtime import install_log_filter, settings_for

from .retrain import retrain

MARKER = ".retrainer-demo"


def prepare_home(home: Path) -> None:
    """The demo owns its state directory: it resets one it created before, refuses any other."""
    if home.exists() and any(home.iterdir()) and not (home / MARKER).exists():
        raise ConfigError(f"{home} holds a registry the demo did not create; point RETRAINER_HOME "
                          "at an empty directory to run the demo")
    if home.exists():
        shutil.rmtree(home)
    home.mkdir(parents=True)
    (home / MARKER).write_text("state written by `retrainer demo`; safe to delete\n")


@task(name="generate-data", cache_policy=NO_CACHE, persist_result=False)
def generate_data(workdir: Path, rows_per_month: int) -> dict[str, str]:
    months = generate(workdir / "months", GenerationSpec(months=9, rows_per_month=rows_per_month, seed=7))
    batches = {"first": months[:6], "second": months[:9]}
    out = {}
    for name, files in batches.items():
        folder = workdir / f"batch-{name}"
        folder.mkdir(parents=True, exist_ok=True)
        for f in files:
            target = folder / f.name
            if not target.exists():
                os.link(f, target)
        out[name] = str(folder)
    return out


@flow(name="demo", log_prints=True)
def demo(workdir: str = ".retrainer/demo-data", rows_per_month: int = 4000) -> list[dict]:
    install_log_filter()
    settings = settings_for()
    prepare_home(settings.home)
    work = Path(workdir)
    shutil.rmtree(work, ignore_errors=True)
    batches = generate_data(work, rows_per_month)

    print("== 1. first model: months 1-6 (train 1-4, validate 5, test 6) ==")
    first = retrain(data=batches["first"], trigger="manual", actor="demo")
    print("== 2. monthly retrain on months 1-9: evaluated against production on the same test month ==")
    second = retrain(data=batches["second"], trigger="scheduled", actor="demo")

    from retrainer.backends import get_backend

    registry = get_backend(settings).registry
    print("\n== registry ==")
    for r in registry.list():
        print(f"  {r.version:<8} {r.status:<11} AUC {r.metrics['candidate']['auc']:.4f}  "
              f"trigger={r.trigger:<9} bump={r.bump} ({r.bump_reason})")
    print(f"\nsecond retrain: candidate {second['version']} AUC {second['auc']:.4f} vs production "
          f"{second['production_version']} AUC {second['production_auc']:.4f} on the same test month -> "
          f"{second['status']}")
    print(f"state: {settings.home.resolve()} (try: retrainer registry list; retrainer registry show "
          f"{second['version']})")
    return [first, second]
