"""Registry safety: the index and the audit log agree after any crash (injected faults, SIGKILL at
each point, several writers killed at random), torn audit lines, stale temp files, artifact hashes
(no empty hash, a length-prefixed scheme, legacy records still verifiable) and owner-only files."""
from __future__ import annotations

import json
import os
import random
import signal
import stat
import subprocess
import sys
import time

import pytest

from retrainer.errors import ArtifactIntegrityError
from retrainer.registry import LocalRegistry, sha256_dir
from retrainer.registry.storage import digest_matches, sha256_dir_v1
from tests.helpers import REPO, artifact, make_record, registry_with, run_cli


def replay(reg: LocalRegistry) -> None:
    """Replaying the audit log from nothing gives exactly the index's statuses: every change the
    index holds has its audit line, and every audit line describes a change the index holds."""
    state: dict[str, str] = {}
    for e in reg.audit():
        assert state.get(e["version"]) == e["from"], (e, state)
        state[e["version"]] = e["to"]
    assert state == {r.version: r.status for r in reg.list()}


def audit_lines(reg: LocalRegistry) -> list[str]:
    return (reg.root / "audit.jsonl").read_text().splitlines()


def crash_at(point):
    def hook(where):
        if where == point:
            raise OSError(f"simulated crash at {where}")
    return hook


def run_killed(root, point: str, call: str) -> None:
    """Run `call` on a LocalRegistry in a subprocess that SIGKILLs itself at fault point `point`."""
    code = f"""
import os, signal
from retrainer.registry import LocalRegistry
def hook(where):
    if where == {point!r}:
        os.kill(os.getpid(), signal.SIGKILL)
reg = LocalRegistry({str(root)!r}, fault_hook=hook)
reg.{call}
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, cwd=REPO)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()


# ---- index and audit agree after a crash ---------------------------------------------------------

def test_crash_between_index_and_audit_is_recovered(tmp_path):
    reg = registry_with(tmp_path, ["1.0.0", "1.1.0"])
    lines_before = audit_lines(reg)
    with pytest.raises(OSError, match="after-index"):
        LocalRegistry(reg.root, fault_hook=crash_at("after-index")).promote("1.0.0", actor="t", reason="x")
    assert reg.production().version == "1.0.0"          # the index changed...
    assert audit_lines(reg) == lines_before             # ...and its lines were not appended,
    assert [e["to"] for e in reg.audit()[-2:]] == ["previous", "production"]  # yet readers see them
    replay(reg)
    reg.set_status("1.1.0", "production", actor="t", reason="back")  # the next writer appends them
    assert len(audit_lines(reg)) == len(lines_before) + 4
    assert len(reg.audit()) == len(audit_lines(reg))    # each once
    replay(reg)


@pytest.mark.parametrize("point", ["after-index", "mid-audit"])
def test_sigkill_between_or_during_the_audit_append(tmp_path, point):
    reg = registry_with(tmp_path, ["1.0.0", "1.1.0"])
    run_killed(reg.root, point, 'promote("1.0.0", actor="t", reason="x")')
    assert reg.production().version == "1.0.0"
    log = reg.audit_log()
    assert log.skipped == (1 if point == "mid-audit" else 0)  # the torn half line
    replay(reg)
    reg.register(make_record("1.2.0"), artifact(tmp_path, "c"), actor="t")
    assert reg.audit_log().skipped == 0                 # trimmed, then completed from the index
    assert all(json.loads(line) for line in audit_lines(reg))
    replay(reg)


WRITER = """
import sys
from pathlib import Path
from retrainer.registry import LocalRegistry
from tests.helpers import artifact, make_record
root, major, rnd = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
reg = LocalRegistry(root)
work = Path(root).parent / f"w{major}-{rnd}"
for i in range(10_000):
    v = f"{major}.{rnd * 10_000 + i}.0"
    reg.register(make_record(v), artifact(work, str(i % 3)), actor=f"w{major}")
    reg.set_status(v, "canary", actor=f"w{major}", reason="start")
    reg.set_status(v, "candidate", actor=f"w{major}", reason="stop")
"""


def test_writers_killed_at_random_leave_index_and_audit_agreeing(tmp_path):
    """Four writer processes, SIGKILLed at random moments, three rounds: after each round the
    audit log replays to exactly the index."""
    reg = registry_with(tmp_path, ["1.0.0"])
    rng = random.Random(7)
    for rnd in range(3):
        procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(reg.root), str(k + 2), str(rnd)],
                                  cwd=REPO, stderr=subprocess.DEVNULL) for k in range(4)]
        time.sleep(1.0)
        for p in rng.sample(procs, len(procs)):
            time.sleep(rng.uniform(0, 0.15))
            p.send_signal(signal.SIGKILL)
        for p in procs:
            p.wait(30)
        replay(reg)
    reg.register(make_record("9.0.0"), artifact(tmp_path, "z"), actor="t")  # a writer after the carnage
    replay(reg)
    assert reg.audit_log().skipped == 0
    assert len(reg.list()) > 4, "the writers did register versions before being killed"
    assert not list(reg.root.glob(".*.tmp")) and not list((reg.root / "versions").glob(".*.partial"))


# ---- the audit log: torn and bad lines -----------------------------------------------------------

def test_torn_tail_is_skipped_then_trimmed_before_the_next_append(tmp_path):
    reg = registry_with(tmp_path, ["1.0.0", "1.1.0"])
    good = audit_lines(reg)
    with open(reg.root / "audit.jsonl", "a") as fh:
        fh.write('{"time": "2024-01-01T00:00:00Z", "actor": "x", "vers')  # a writer died here
    log = reg.audit_log()
    assert log.skipped == 1 and len(log.events) == len(good)
    reg.rollback(actor="ops", reason="r")
    lines = audit_lines(reg)
    assert lines[: len(good)] == good and len(lines) == len(good) + 2
    assert all(json.loads(line)["actor"] for line in lines)  # nothing glued onto the torn line
    assert reg.audit_log().skipped == 0
    replay(reg)


def test_cli_audit_prints_good_lines_and_one_warning(tmp_path, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("RETRAINER_HOME", str(home))
    monkeypatch.delenv("RETRAINER_CONFIG", raising=False)
    reg = registry_with(home.parent, ["1.0.0", "1.1.0"])
    (home).mkdir(parents=True, exist_ok=True)
    os.replace(reg.root, home / "registry")
    path = home / "registry" / "audit.jsonl"
    lines = path.read_text().splitlines()
    path.write_text("\n".join([lines[0], "garbage{", *lines[1:]]) + '\n{"torn')
    code, out = run_cli("registry", "audit")
    assert code == 0, out
    printed = out.splitlines()
    assert len(printed) == len(lines) + 1
    assert printed[-1] == "warning: skipped 2 unreadable audit lines"
    assert "Traceback" not in out


def test_audit_append_outside_a_transaction_is_locked_and_kept(tmp_path):
    """The serving admin route appends its own events: they go through the same lock and torn-tail
    trimming, and count as written at once."""
    reg = registry_with(tmp_path, ["1.0.0"])
    with open(reg.root / "audit.jsonl", "a") as fh:
        fh.write('{"torn')
    reg.storage.append_audit([{"time": "t", "actor": "admin", "version": "1.0.0", "from": "production",
                               "to": "production", "reason": "routing: weights 100/0"}])
    assert reg.audit()[-1]["reason"] == "routing: weights 100/0" and reg.audit_log().skipped == 0
    replay(reg)


# ---- stale temp files ----------------------------------------------------------------------------

def test_stale_temp_files_are_removed_under_the_lock(tmp_path):
    reg = registry_with(tmp_path, ["1.0.0"])
    tmp = reg.root / ".index.json.0123abcd.tmp"
    tmp.write_text('{"half": ')
    partial = reg.root / "versions" / ".1.1.0.0123abcd.partial"
    partial.mkdir()
    (partial / "model.joblib").write_bytes(b"half")
    reg.register(make_record("1.1.0"), artifact(tmp_path, "b"), actor="t")
    assert not tmp.exists() and not partial.exists()
    assert reg.verify("1.1.0")


def test_sigkill_mid_index_write_leaves_no_temp_file_after_next_write(tmp_path):
    reg = registry_with(tmp_path, ["1.0.0", "1.1.0"])
    run_killed(reg.root, "mid-write", 'promote("1.0.0", actor="t", reason="x")')
    assert list(reg.root.glob(".index.json.*.tmp"))  # the dead writer's leftover
    reg.rollback(actor="t", reason="y")
    assert not list(reg.root.glob(".index.json.*.tmp"))
    replay(reg)


# ---- artifact hashes -----------------------------------------------------------------------------

def tree(root, files: dict[str, bytes]):
    root.mkdir(parents=True)
    for name, data in files.items():
        (root / name).write_bytes(data)
    return root


def test_hash_separates_names_from_contents(tmp_path):
    a = tree(tmp_path / "a", {"a": b"bc"})
    b = tree(tmp_path / "b", {"ab": b"c"})
    assert sha256_dir_v1(a) == sha256_dir_v1(b)  # the legacy collision
    assert sha256_dir(a) != sha256_dir(b)
    assert sha256_dir(a).startswith("sha256v2:")
    c = tree(tmp_path / "c", {"x": b"1", "y": b""})
    d = tree(tmp_path / "d", {"x": b"", "y": b"1"})
    assert sha256_dir(c) != sha256_dir(d)


def set_recorded_hash(reg: LocalRegistry, version: str, value: str) -> None:
    idx = json.loads((reg.root / "index.json").read_text())
    idx["versions"][version]["artifact_sha256"] = value
    (reg.root / "index.json").write_text(json.dumps(idx))


@pytest.mark.parametrize("value", ["", "md5:abc", "sha256v2:" + "0" * 64])
def test_missing_empty_or_unknown_hash_refuses_to_load(tmp_path, value):
    reg = registry_with(tmp_path, ["1.0.0"])
    set_recorded_hash(reg, "1.0.0", value)
    (reg.artifact_dir("1.0.0") / "model.joblib").write_bytes(b"planted pickle")
    with pytest.raises(ArtifactIntegrityError, match="refusing to load"):
        reg.verify("1.0.0")


def test_legacy_hash_records_still_verify(tmp_path):
    reg = registry_with(tmp_path, ["1.0.0"])
    path = reg.artifact_dir("1.0.0")
    set_recorded_hash(reg, "1.0.0", sha256_dir_v1(path))
    assert reg.verify("1.0.0") == path
    assert digest_matches(path, sha256_dir_v1(path))
    (path / "model.joblib").write_bytes(b"tampered")
    with pytest.raises(ArtifactIntegrityError, match="do not match"):
        reg.verify("1.0.0")


# ---- permissions ---------------------------------------------------------------------------------

def modes(root):
    return {str(p.relative_to(root)): stat.S_IMODE(p.stat().st_mode) for p in [root, *root.rglob("*")]}


def test_registry_is_owner_only_whatever_the_umask(tmp_path):
    old = os.umask(0)
    try:
        reg = registry_with(tmp_path, ["1.0.0", "1.1.0"])
    finally:
        os.umask(old)
    found = modes(reg.root)
    assert {"index.json", "audit.jsonl", ".lock", "versions/1.0.0/model.joblib"} <= set(found)
    for name, mode in found.items():
        want = 0o700 if (reg.root / name).is_dir() else 0o600
        assert mode == want, (name, oct(mode))


def test_existing_world_readable_registry_is_tightened_on_next_write(tmp_path):
    reg = registry_with(tmp_path, ["1.0.0"])
    for p in [reg.root, *reg.root.rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)
    reg.register(make_record("1.1.0"), artifact(tmp_path, "b"), actor="t")
    found = modes(reg.root)
    for name in ("", "index.json", "audit.jsonl", "versions", "versions/1.1.0", "versions/1.1.0/model.joblib"):
        key = name or "."
        assert found[key] & 0o077 == 0, (key, oct(found[key]))



CLI_UMASK = """
import os
import cli.main
def probe(argv):
    inside = os.umask(0)
    os.umask(inside)
    print(oct(inside))
    return 0
cli.main._run = probe
os.umask(0o022)
cli.main.main(["registry", "list"])
print(oct(os.umask(0)))
"""


def test_cli_runs_commands_with_a_private_umask():
    proc = subprocess.run([sys.executable, "-c", CLI_UMASK], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["0o77", "0o22"]  # inside the command; restored for an in-process caller


def test_task_runtime_sets_a_private_umask():
    code = "import os; os.umask(0o022); import tasks.runtime; print(oct(os.umask(0)))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["0o77"]


def test_cli_creates_private_files(tmp_path):
    """The console script under umask 022: what a command writes is owner-only."""
    out = tmp_path / "data"
    proc = subprocess.run(["/bin/sh", "-c", f'umask 022 && "{sys.executable}" -m cli.main data generate '
                           f'--out "{out}" --months 1 --rows-per-month 50'],
                          capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr
    files = list(out.glob("*.parquet"))
    assert files
    assert all(stat.S_IMODE(f.stat().st_mode) == 0o600 for f in files)
