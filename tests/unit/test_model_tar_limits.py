"""model.tar.gz extraction (SageMaker backend): limits on uncompressed size and member count,
no links, no paths outside the destination; every refusal is one line and writes nothing."""
from __future__ import annotations

import gzip
import io
import tarfile

import pytest

from retrainer.backends.sagemaker._aws import ArtifactError, extract_limits, safe_extract_model, tar_gz
from retrainer.settings import AWSSettings

MODEL = {"model.joblib": b"x" * 100, "model.json": b"{}"}


def write_tar(tmp_path, add):
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        add(tar)
    path = tmp_path / "model.tar.gz"
    path.write_bytes(gzip.compress(raw.getvalue()))
    return path


def regular(tar, name, data: bytes):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def test_defaults_are_settings():
    limits = extract_limits(AWSSettings())
    assert limits == {"max_bytes": 1 << 30, "max_members": 1000}
    assert extract_limits(AWSSettings(max_model_bytes=5, max_model_members=2)) == {"max_bytes": 5, "max_members": 2}


def test_small_gzip_expanding_past_the_limit_is_refused(tmp_path):
    def add(tar):
        for name, data in MODEL.items():
            regular(tar, name, data)
        regular(tar, "padding.bin", bytes(8 << 20))  # 8 MiB of zeros
    path = write_tar(tmp_path, add)
    assert path.stat().st_size < 64 << 10  # a small download...
    dest = tmp_path / "out"
    with pytest.raises(ArtifactError) as info:
        safe_extract_model(path, dest, max_bytes=1 << 20)
    msg = str(info.value)
    assert "expands to more than 1.0 MiB uncompressed (aws.max_model_bytes)" in msg and "\n" not in msg
    assert not dest.exists()  # nothing written
    assert sorted(safe_extract_model(path, tmp_path / "ok", max_bytes=16 << 20)) == [
        "model.joblib", "model.json", "padding.bin"]


def test_too_many_members_is_refused(tmp_path):
    files = {**MODEL, **{f"f{i:03d}": b"" for i in range(50)}}
    path = tmp_path / "model.tar.gz"
    path.write_bytes(tar_gz(files))
    with pytest.raises(ArtifactError, match=r"has more than 10 members \(aws.max_model_members\)"):
        safe_extract_model(path, tmp_path / "out", max_members=10)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("kind", ["symlink", "hardlink", "absolute", "dotdot"])
def test_links_and_escaping_paths_are_refused(tmp_path, kind):
    def add(tar):
        for name, data in MODEL.items():
            regular(tar, name, data)
        if kind in ("symlink", "hardlink"):
            info = tarfile.TarInfo("evil")
            info.type = tarfile.SYMTYPE if kind == "symlink" else tarfile.LNKTYPE
            info.linkname = "/etc/passwd" if kind == "symlink" else "model.json"
            tar.addfile(info)
        else:
            regular(tar, "/tmp/evil" if kind == "absolute" else "../evil", b"x")
    path = write_tar(tmp_path, add)
    with pytest.raises(ArtifactError, match="is a link or device|escapes the extraction directory"):
        safe_extract_model(path, tmp_path / "out")
    assert not (tmp_path / "out").exists()
