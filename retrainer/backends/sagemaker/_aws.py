"""Shared AWS plumbing for the SageMaker backend: settings checks, clients, waits, tarballs.

Everything here raises `RetrainerError` subclasses with one-line messages. Credentials come from
the standard AWS chain (environment, shared config, instance/task role) or, when
`aws.credentials_block` is set, from a prefect-aws `AwsCredentials` block (imported lazily; the
`retrainer` package never imports prefect at module import time).
"""
from __future__ import annotations

import gzip
import hashlib
import io
import os
import re
import tarfile
import time
import zlib
from functools import cached_property
from pathlib import Path, PurePosixPath
from typing import Any, Callable

from ...aws_errors import error_code, error_message, one_line  # noqa: F401 - re-exported to the backend's modules
from ...errors import ConfigError, RetrainerError
from ...settings import AWSSettings

ROLE_ARN_RE = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:role/.+$")
# SageMaker resource names (jobs, models, endpoint configs, package groups): 1-63 chars.
NAME_RE = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
SKLEARN_FRAMEWORK_VERSION = "1.9-0"  # matches scikit-learn 1.9 used locally (sagemaker sklearn.json)
# Account that publishes the scikit-learn framework images, per region (from the sagemaker SDK's
# image_uri_config/sklearn.json); other regions: set aws.training_image_uri explicitly.
SKLEARN_IMAGE_ACCOUNTS = {
    "us-east-1": "683313688378", "us-east-2": "257758044811", "us-west-1": "746614075791",
    "us-west-2": "246618743249", "eu-west-1": "141502667606", "eu-west-2": "764974769150",
    "eu-central-1": "492215442770", "eu-north-1": "662702820516", "ap-southeast-1": "121021644041",
    "ap-southeast-2": "783357654285", "ap-northeast-1": "354813040037", "ca-central-1": "341280168497",
}


class SageMakerError(RetrainerError):
    """A SageMaker/S3 operation failed in a way the user must act on."""


class TrainingJobFailed(SageMakerError):
    """The training job ended Failed or Stopped (message quotes FailureReason)."""


class WaitTimeout(SageMakerError):
    """A job or endpoint did not reach a final state within its timeout."""


class ArtifactError(SageMakerError):
    """model.tar.gz missing, unreadable, unsafe or incomplete."""


def default_sklearn_image(region: str) -> str:
    account = SKLEARN_IMAGE_ACCOUNTS.get(region)
    if account is None:
        raise ConfigError(f"no default scikit-learn image known for region {region}; set aws.training_image_uri")
    return f"{account}.dkr.ecr.{region}.amazonaws.com/sagemaker-scikit-learn:{SKLEARN_FRAMEWORK_VERSION}-cpu-py3"


def resource_name(*parts: str, limit: int = 63) -> str:
    """A valid SageMaker resource name from free parts (dots/underscores become dashes); a short
    hash keeps truncated names unique."""
    raw = "-".join(parts)
    name = re.sub(r"-+", "-", re.sub(r"[^a-zA-Z0-9]", "-", raw)).strip("-")
    if len(name) > limit:
        digest = hashlib.sha256(raw.encode()).hexdigest()[:8]
        name = name[: limit - 9].rstrip("-") + "-" + digest
    return name


class AWSContext:
    """Region, session, clients, bucket and prefix, validated lazily and cheaply.

    Checks run before anything is created: `require_bucket()` (set and reachable via
    head_bucket), `require_role()` (ARN shape), `region` (settings or the AWS chain).
    """

    def __init__(self, aws: AWSSettings, *, session: Any = None):
        self.settings = aws
        self._session = session
        self._clients: dict[str, Any] = {}
        self._bucket_ok = False

    @cached_property
    def session(self):
        if self._session is not None:
            return self._session
        if self.settings.credentials_block:
            try:
                from prefect_aws import AwsCredentials  # noqa: PLC0415 - lazy: optional, and prefect is slow to import
            except ImportError:
                raise ConfigError("aws.credentials_block is set but prefect-aws is not installed") from None
            try:
                return AwsCredentials.load(self.settings.credentials_block).get_boto3_session()
            except Exception as exc:  # block missing, server unreachable
                raise ConfigError(f"cannot load AwsCredentials block {self.settings.credentials_block!r}: "
                                  f"{one_line(exc, 200)}") from None
        import boto3  # noqa: PLC0415 - heavy: boto3

        return boto3.session.Session(region_name=self.settings.region)

    @cached_property
    def region(self) -> str:
        region = self.settings.region or self.session.region_name or os.environ.get("AWS_REGION")
        if not region:
            raise ConfigError("no AWS region: set aws.region (RETRAINER_AWS__REGION) or AWS_DEFAULT_REGION")
        return region

    def client(self, service: str):
        if service not in self._clients:
            # Retries follow the AWS chain (AWS_MAX_ATTEMPTS / AWS_RETRY_MODE); not overridden here.
            self._clients[service] = self.session.client(service, region_name=self.region)
        return self._clients[service]

    @property
    def s3(self):
        return self.client("s3")

    @property
    def sm(self):
        return self.client("sagemaker")

    @property
    def bucket(self) -> str:
        if not self.settings.bucket:
            raise ConfigError("aws.bucket is not set (RETRAINER_AWS__BUCKET)")
        return self.settings.bucket

    def require_bucket(self) -> str:
        bucket = self.bucket
        self.region  # noqa: B018 - region problems first, they explain everything else
        if not self._bucket_ok:
            try:
                self.s3.head_bucket(Bucket=bucket)
            except Exception as exc:
                code = error_code(exc)
                if code in ("404", "NoSuchBucket", "NotFound"):
                    raise ConfigError(f"S3 bucket {bucket} does not exist (aws.bucket); create it first") from None
                if code in ("403", "AccessDenied", "Forbidden"):
                    raise ConfigError(f"no access to S3 bucket {bucket} (aws.bucket): check the IAM policy") from None
                raise ConfigError(f"cannot reach S3 bucket {bucket}: {one_line(exc, 200)}") from None
            self._bucket_ok = True
        return bucket

    def require_role(self) -> str:
        role = self.settings.role_arn
        if not role:
            raise ConfigError("aws.role_arn is not set (RETRAINER_AWS__ROLE_ARN): SageMaker needs an execution role")
        if not ROLE_ARN_RE.match(role):
            raise ConfigError(f"aws.role_arn {role!r} is not an IAM role ARN (arn:aws:iam::<12 digits>:role/<name>)")
        return role

    def key(self, *parts: str) -> str:
        return "/".join(p.strip("/") for p in (self.settings.prefix, *parts) if p and p.strip("/"))

    def uri(self, *parts: str) -> str:
        return f"s3://{self.bucket}/{self.key(*parts)}"


def split_s3_uri(uri: str) -> tuple[str, str]:
    if not uri.startswith("s3://") or "/" not in uri[5:]:
        raise ArtifactError(f"not an S3 object URI: {uri}")
    bucket, key = uri[5:].split("/", 1)
    return bucket, key


def wait_for(describe: Callable[[], dict], *, status_of: Callable[[dict], str], final: set[str], what: str,
             timeout_s: float, sleep: Callable[[float], None] = time.sleep,
             clock: Callable[[], float] = time.monotonic, initial_delay: float = 5.0, factor: float = 2.0,
             max_delay: float = 60.0) -> dict:
    """Poll `describe()` until its status is in `final`, with exponential backoff; WaitTimeout after
    `timeout_s`. `sleep` and `clock` are injectable so tests run without waiting."""
    start = clock()
    delay = initial_delay
    while True:
        desc = describe()
        status = status_of(desc)
        if status in final:
            return desc
        elapsed = clock() - start
        if elapsed >= timeout_s:
            raise WaitTimeout(f"{what} is still {status} after {timeout_s:.0f} s")
        sleep(max(0.0, min(delay, max_delay, timeout_s - elapsed)))
        delay *= factor


# ---- tarballs ------------------------------------------------------------------------------------
def _tarinfo(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, 0, 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def tar_gz(files: dict[str, bytes]) -> bytes:
    """Deterministic tar.gz (sorted names, zero mtimes) of {arcname: bytes}."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for name in sorted(files):
            tar.addfile(_tarinfo(name, len(files[name])), io.BytesIO(files[name]))
    return gzip.compress(raw.getvalue(), mtime=0)


def tar_dir(path: Path) -> bytes:
    path = Path(path)
    return tar_gz({str(f.relative_to(path)): f.read_bytes() for f in sorted(path.rglob("*")) if f.is_file()})


DEFAULT_MAX_MODEL_BYTES = 1 << 30  # 1 GiB uncompressed: a model is a few MB
DEFAULT_MAX_MODEL_MEMBERS = 1000


def extract_limits(aws: Any) -> dict[str, int]:
    """The extraction limits from AWSSettings (aws.max_model_bytes, aws.max_model_members)."""
    return {"max_bytes": getattr(aws, "max_model_bytes", DEFAULT_MAX_MODEL_BYTES),
            "max_members": getattr(aws, "max_model_members", DEFAULT_MAX_MODEL_MEMBERS)}


def _human(n: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def safe_extract_model(tar_path: Path, dest: Path, *, required: tuple[str, ...] = ("model.joblib", "model.json"),
                       label: str = "model.tar.gz", max_bytes: int = DEFAULT_MAX_MODEL_BYTES,
                       max_members: int = DEFAULT_MAX_MODEL_MEMBERS) -> list[str]:
    """Check `tar_path` is a gzip tar of regular files only, with no absolute paths, no `..`, no
    links or devices, at most `max_members` members and `max_bytes` bytes uncompressed, holding
    `required` at its root; then extract it into `dest` (which must not exist). Returns the member
    names. Headers are checked one by one as the archive is read, so an archive that expands past
    a limit is refused at the first member over it, before anything is written."""
    try:
        tar = tarfile.open(tar_path, mode="r:*")
    except (tarfile.TarError, OSError) as exc:
        raise ArtifactError(f"{label} is not a readable tar archive ({one_line(exc, 120)})") from None
    with tar:
        names: list[str] = []
        members: list[tarfile.TarInfo] = []
        total = 0
        while True:
            try:
                m = tar.next()
            except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
                raise ArtifactError(f"{label} is truncated or corrupt ({one_line(exc, 120)})") from None
            if m is None:
                break
            members.append(m)
            if len(members) > max_members:
                raise ArtifactError(f"{label} has more than {max_members} members (aws.max_model_members); "
                                    "refusing it")
            p = PurePosixPath(m.name)
            if m.name.startswith("/") or p.is_absolute() or ".." in p.parts:
                raise ArtifactError(f"{label} member {m.name!r} escapes the extraction directory; refusing it")
            if not (m.isfile() or m.isdir()) or m.issparse():
                raise ArtifactError(f"{label} member {m.name!r} is a link or device; refusing it")
            total += max(m.size, 0)
            if total > max_bytes:
                raise ArtifactError(f"{label} expands to more than {_human(max_bytes)} uncompressed "
                                    "(aws.max_model_bytes); refusing it")
            norm = str(PurePosixPath(*[x for x in p.parts if x != "."])) if p.parts else ""
            if m.isfile():
                names.append(norm)
        missing = [r for r in required if r not in names]
        if missing:
            has = ", ".join(sorted(names)[:8]) or "nothing"
            raise ArtifactError(f"{label} lacks {', '.join(missing)} at its root (has: {has})")
        dest = Path(dest)
        dest.mkdir(parents=True, exist_ok=False)
        try:
            tar.extractall(dest, members=members, filter="data")
        except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
            raise ArtifactError(f"{label} could not be extracted ({one_line(exc, 120)})") from None
    return names


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
