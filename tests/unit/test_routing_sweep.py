"""Temp files of routing.json writes killed before their rename (kill -9 between `atomic_write_text`'s
create and rename) are removed when the serving state starts and before the next routing write;
only that file's temp pattern, only in its directory, and only once no live write can own them."""
from __future__ import annotations

import os
import time
from pathlib import Path

from retrainer.registry import LocalRegistry
from retrainer.serving import create_app, routing_path, write_routing
from retrainer.settings import Settings

TOKEN = "routing-sweep-test-admin-token-0123456789"
HOUR = 3600.0


def plant(path: Path, age_s: float = 0.0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text('{"variants": [')  # half a routing file
    if age_s:
        old = time.time() - age_s
        os.utime(path, (old, old))
    return path


def test_serving_start_sweeps_stale_routing_temp_files(tmp_path):
    settings = Settings(home=tmp_path / "home", serving={"admin_token": TOKEN})
    path = routing_path(settings)
    stale = [plant(path.with_name(f".{path.name}.{'ab' * 16}.tmp"), HOUR),
             plant(path.with_name(f".{path.name}.0123.tmp"), HOUR)]
    kept = [plant(path.with_name(f".{path.name}.{'cd' * 16}.tmp")),  # young: another process may be writing it
            plant(path.with_name(".index.json.0123.tmp"), HOUR),  # another file's temp pattern
            plant(path.with_name("notes.txt"), HOUR),
            plant(tmp_path / "home" / f".{path.name}.0123.tmp", HOUR)]  # not routing.json's directory
    create_app(settings, LocalRegistry(tmp_path / "registry"))
    assert [p for p in stale if p.exists()] == []
    assert [p for p in kept if not p.exists()] == []


def test_routing_write_sweeps_stale_temp_files_too(tmp_path):
    path = tmp_path / "serving" / "routing.json"
    stale = plant(path.with_name(f".{path.name}.{'ef' * 16}.tmp"), HOUR)
    write_routing(path, {"variants": [{"variant": "blue", "version": "1.0.0", "weight": 1.0}], "generation": 1})
    assert not stale.exists() and sorted(p.name for p in path.parent.iterdir()) == ["routing.json"]
