"""RETRAINER_TEST_DB picks the session Prefect server's database: sqlite (unset or "sqlite") or
postgres. Anything else, or postgres without PostgreSQL's binaries, stops pytest at once with one
line and no traceback."""
from __future__ import annotations

import os
import stat
import subprocess
import sys

import pytest

from tests.helpers import REPO, db_variant, pg_bindir


@pytest.mark.parametrize("value, kind", [(None, "sqlite"), ("", "sqlite"), ("sqlite", "sqlite"),
                                         ("postgres", "postgres"), (" Postgres ", "postgres")])
def test_the_variant_is_read_from_the_environment(monkeypatch, value, kind):
    if value is None:
        monkeypatch.delenv("RETRAINER_TEST_DB", raising=False)
    else:
        monkeypatch.setenv("RETRAINER_TEST_DB", value)
    assert db_variant() == kind


@pytest.mark.parametrize("value", ["mysql", "postgresql", "1"])
def test_any_other_variant_is_refused_by_name(monkeypatch, value):
    monkeypatch.setenv("RETRAINER_TEST_DB", value)
    with pytest.raises(ValueError, match=f"RETRAINER_TEST_DB must be sqlite or postgres, not '{value}'"):
        db_variant()


def test_missing_binaries_name_the_debian_package(tmp_path):
    with pytest.raises(RuntimeError, match=r"not found: install Debian's postgresql package \(apt-get install "
                                           r"postgresql\)"):
        pg_bindir(lib=tmp_path / "none", path=str(tmp_path))


def test_the_newest_complete_versioned_folder_is_chosen(tmp_path):
    def tools(folder, names=("initdb", "pg_ctl", "psql")):
        folder.mkdir(parents=True)
        for n in names:
            (folder / n).write_text("#!/bin/sh\n")
            (folder / n).chmod(stat.S_IRWXU)
        return folder

    tools(tmp_path / "13" / "bin")
    newest = tools(tmp_path / "16" / "bin")
    tools(tmp_path / "17" / "bin", names=("psql",))  # a client-only install is skipped
    assert pg_bindir(lib=tmp_path, path="") == newest
    on_path = tools(tmp_path / "elsewhere")
    assert pg_bindir(lib=tmp_path / "none", path=str(on_path)) == on_path


def test_pytest_stops_with_one_line():
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--collect-only",
                           "tests/unit/test_layering.py"], cwd=REPO, env={**os.environ, "RETRAINER_TEST_DB": "mysql"},
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 4, proc.stdout + proc.stderr
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    assert lines == ["ERROR: RETRAINER_TEST_DB must be sqlite or postgres, not 'mysql'"], lines
