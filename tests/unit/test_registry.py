import json
import multiprocessing as mp
import signal
import subprocess
import sys

import pytest

from retrainer.errors import RegistryError
from retrainer.registry import LocalRegistry, sha256_dir
from tests.helpers import artifact, make_record, registry_with


def snapshot(root):
    return {p.relative_to(root): p.read_bytes() for p in root.rglob("*") if p.is_file() and p.name != ".lock"}


def test_first_model_production_and_lineage_roundtrip(tmp_path):
    reg = LocalRegistry(tmp_path / "r")
    rec = make_record("1.0.0", "production", params={"lr": 0.1})
    reg.register(rec, artifact(tmp_path, "a"), actor="alice")
    got = reg.get("1.0.0")
    assert got.status == "production" and got.params == {"lr": 0.1}
    assert got.artifact_sha256 == sha256_dir(reg.artifact_dir("1.0.0"))
    assert reg.audit()[0]["actor"] == "alice" and reg.audit()[0]["to"] == "production"


def test_promotion_keeps_two_previous_and_archives_older(tmp_path):
    reg = registry_with(tmp_path, ["1.0.0", "1.1.0", "1.2.0", "1.3.0"])
    assert reg.production().version == "1.3.0"
    assert [r.version for r in reg.previous()] == ["1.2.0", "1.1.0"]
    assert reg.get("1.0.0").status == "archived"
    removed = reg.retention(actor="t")
    assert removed == ["1.0.0"]
    for v in ("1.1.0", "1.2.0", "1.3.0"):
        assert reg.artifact_dir(v).is_dir()  # retention never deletes kept versions


def test_rollback_to_previous_and_previous_two(tmp_path):
    reg = registry_with(tmp_path, ["1.0.0", "1.1.0", "1.2.0"])
    reg.rollback(actor="ops", reason="bad canary")
    assert reg.production().version == "1.1.0"
    assert [r.version for r in reg.previous()] == ["1.2.0", "1.0.0"]
    reg.rollback(to="1.0.0", actor="ops", reason="older one")
    assert reg.production().version == "1.0.0"
    assert reg.audit()[-1]["reason"].startswith("rollback: older one")


@pytest.mark.parametrize("to,message", [("9.9.9", "unknown version 9.9.9"),
                                         ("1.2.0", "already production"),
                                         ("banana", "not a MAJOR.MINOR.PATCH")])
def test_rollback_refusals_change_nothing(tmp_path, to, message):
    reg = registry_with(tmp_path, ["1.0.0", "1.1.0", "1.2.0"])
    before = snapshot(reg.root)
    with pytest.raises(RegistryError, match=message):
        reg.rollback(to=to, actor="ops", reason="x")
    assert snapshot(reg.root) == before


def test_illegal_transitions_refused(tmp_path):
    reg = registry_with(tmp_path, ["1.0.0"])
    reg.register(make_record("1.1.0", "rejected"), artifact(tmp_path, "b"), actor="t")
    with pytest.raises(RegistryError, match="rejected; it cannot become production"):
        reg.promote("1.1.0", actor="t", reason="x")
    with pytest.raises(RegistryError, match="already registered"):
        reg.register(make_record("1.1.0"), artifact(tmp_path, "c"), actor="t")
    with pytest.raises(RegistryError, match="already a production version"):
        reg.register(make_record("2.0.0", "production"), artifact(tmp_path, "d"), actor="t")


def test_tampered_artifact_detected(tmp_path):
    reg = registry_with(tmp_path, ["1.0.0"])
    (reg.artifact_dir("1.0.0") / "model.joblib").write_bytes(b"evil")
    with pytest.raises(RegistryError, match="do not match"):
        reg.verify("1.0.0")


@pytest.mark.parametrize("point", ["mid-write", "before-replace"])
def test_interrupted_write_leaves_old_index(tmp_path, point):
    reg = registry_with(tmp_path, ["1.0.0", "1.1.0"])
    before = (reg.root / "index.json").read_bytes()
    audit_before = (reg.root / "audit.jsonl").read_bytes()

    def crash(where):
        if where == point:
            raise OSError(f"simulated crash at {where}")

    broken = LocalRegistry(reg.root, fault_hook=crash)
    with pytest.raises(OSError):
        broken.promote("1.0.0", actor="t", reason="x")  # 1.0.0 is previous: a legal promotion
    assert (reg.root / "index.json").read_bytes() == before
    assert (reg.root / "audit.jsonl").read_bytes() == audit_before
    assert not list(reg.root.glob(".*.tmp"))
    assert LocalRegistry(reg.root).production().version == "1.1.0"


def test_killed_process_mid_write_leaves_index_readable(tmp_path):
    """A real SIGKILL halfway through writing the index: the old index survives intact."""
    reg = registry_with(tmp_path, ["1.0.0", "1.1.0"])
    before = (reg.root / "index.json").read_bytes()
    code = f"""
import os, signal
from retrainer.registry import LocalRegistry
def hook(where):
    if where == "mid-write":
        os.kill(os.getpid(), signal.SIGKILL)
LocalRegistry({str(reg.root)!r}, fault_hook=hook).promote("1.0.0", actor="t", reason="x")
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True)
    assert proc.returncode == -signal.SIGKILL
    assert (reg.root / "index.json").read_bytes() == before
    json.loads(before)
    assert LocalRegistry(reg.root).production().version == "1.1.0"


def _register_many(root, start, n):
    from pathlib import Path

    from retrainer.registry import LocalRegistry
    from tests.helpers import artifact, make_record
    reg = LocalRegistry(root)
    for i in range(n):
        v = f"1.{start + i}.0"
        reg.register(make_record(v), artifact(Path(root).parent / f"w{start}", v), actor=f"p{start}")


def test_writers_are_serialised_across_processes(tmp_path):
    reg = registry_with(tmp_path, ["1.0.0"])
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_register_many, args=(reg.root, 1 + 10 * k, 10)) for k in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert len(reg.list()) == 31  # no lost update
    assert len(reg.audit()) == 31


def test_corrupt_index_is_a_clear_error(tmp_path):
    reg = registry_with(tmp_path, ["1.0.0"])
    (reg.root / "index.json").write_text("{not json")
    with pytest.raises(RegistryError, match="corrupt"):
        reg.list()
