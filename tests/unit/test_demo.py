"""`retrainer demo` outside a fresh clone (the whole demo runs in tests/e2e/test_fresh_clone.py)."""
import os
import subprocess

from tests.helpers import REPO


def test_demo_refuses_a_registry_it_did_not_create_in_one_line(tmp_path):
    """A failing demo says why in its last line: here, a state directory it does not own."""
    home = tmp_path / "someone-elses"
    (home / "registry").mkdir(parents=True)
    (home / "registry" / "index.json").write_text("{}")
    proc = subprocess.run([str(REPO / ".venv" / "bin" / "retrainer"), "demo"], cwd=tmp_path,
                          env={**os.environ, "RETRAINER_HOME": str(home)},
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    last = (proc.stdout + proc.stderr).strip().splitlines()[-1]
    assert last.startswith("error: ") and "the demo did not create" in last, last
    assert (home / "registry" / "index.json").read_text() == "{}"
