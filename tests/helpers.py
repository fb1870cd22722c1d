"""Small builders shared by tests (real files, real models; no fakes)."""
from __future__ import annotations

from pathlib import Path

from retrainer.registry import LocalRegistry, ModelRecord, utcnow


def make_record(version: str, status: str = "candidate", **kw) -> ModelRecord:
    base = dict(version=version, status=status, created_at=utcnow(), trigger="manual", parent=None,
                bump="minor", bump_reason="test", schema_hash="s", data_hash=f"d{version}",
                params_hash="p", code_version="test", params={}, metrics={"candidate": {"auc": 0.8}},
                data={}, validation={"success": True}, gate={"eligible": True, "reason": "test"})
    base.update(kw)
    return ModelRecord(**base)


def artifact(tmp: Path, name: str) -> Path:
    d = tmp / f"artifact-{name}"
    d.mkdir(parents=True, exist_ok=True)
    (d / "model.joblib").write_bytes(name.encode() * 100)
    (d / "model.json").write_text("{}")
    return d


def registry_with(tmp: Path, versions: list[str]) -> LocalRegistry:
    """A registry where versions[0] entered production and each later one was promoted."""
    reg = LocalRegistry(tmp / "registry")
    for i, v in enumerate(versions):
        reg.register(make_record(v, "production" if i == 0 else "candidate"), artifact(tmp, v), actor="t")
        if i:
            reg.promote(v, actor="t", reason="test")
    return reg
