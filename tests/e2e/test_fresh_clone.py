"""The README's first command, run as a newcomer would: `./dev demo` in a fresh clone.

The clone reuses this checkout's installed .venv (installing takes minutes; CI's own run of
`./dev test` on a clean checkout covers installation) but imports the clone's code."""
from __future__ import annotations

import subprocess

from tests.helpers import REPO


def test_readme_demo_command_from_a_fresh_clone(prefect_server, tmp_path):
    readme = (REPO / "README.md").read_text()
    assert "./dev demo" in readme.split("\n## ")[0] and "./dev test" in readme.split("\n## ")[0]
    import hashlib

    stamp = REPO / ".venv" / ".installed"
    want = hashlib.sha256((REPO / "pyproject.toml").read_bytes()).hexdigest()[:16]
    # The clone shares this .venv: ./dev must not (re)install into it from the clone's path.
    assert stamp.is_file() and stamp.read_text().strip() == want, \
        "the .venv is not installed from the current pyproject.toml: run ./dev test, which installs it"
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
    # The working tree may hold changes not committed yet: test what is here, not only HEAD.
    for rel in subprocess.run(["git", "ls-files", "-m", "-o", "--exclude-standard"], cwd=REPO,
                              capture_output=True, text=True, check=True).stdout.split():
        src, dst = REPO / rel, clone / rel
        if src.is_file():
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.write_bytes(src.read_bytes())
    (clone / ".venv").symlink_to(REPO / ".venv")
    env = {**prefect_server.env, "PYTHONPATH": str(clone)}
    env.pop("RETRAINER_HOME", None)
    proc = subprocess.run(["./dev", "demo"], cwd=clone, env=env, capture_output=True, text=True,
                          timeout=900)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert "Traceback" not in out
    assert "setting up .venv" not in out
    assert (clone / ".retrainer" / "registry" / "index.json").is_file()
    listing = subprocess.run([str(clone / ".venv" / "bin" / "retrainer"), "registry", "list", "--json"],
                             cwd=clone, env=env, capture_output=True, text=True, timeout=120)
    assert listing.returncode == 0, listing.stderr
    statuses = sorted(v["status"] for v in __import__("json").loads(listing.stdout))
    # The demo ends after a promotion and a forced rollback: production plus two kept versions.
    assert statuses == ["previous", "previous", "production"], statuses
    assert "drift.detected" in out and "traffic switched in" in out
    # Everything the demo wrote is under its state directory (RETRAINER_HOME, here ./.retrainer).
    written = subprocess.run(["git", "status", "--porcelain", "--ignored", "--untracked-files=all"], cwd=clone,
                             capture_output=True, text=True, check=True).stdout.split("\n")
    outside = [line for line in written if line.strip() and not line[3:].startswith((".retrainer/", ".venv"))
               and "__pycache__" not in line and ".egg-info" not in line]
    assert outside == [], outside
    assert (clone / ".retrainer" / "demo-data" / "periods").is_dir()

