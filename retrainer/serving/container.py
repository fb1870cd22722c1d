"""The SageMaker inference container: the local endpoint's app, run the way SageMaker runs a
container (`docker run <image> serve`).

SageMaker's contract, and what this module does with it:
- the command is `serve` (anything else is refused in one line: this image does not train);
- the model is extracted from ModelDataUrl into `/opt/ml/model` (`RETRAINER_MODEL_DIR` overrides
  it, for tests and for running the image by hand); it is loaded only if its content matches
  `RETRAINER_MODEL_SHA256` (the registry's `artifact_sha256`, set on the SageMaker Model by
  `SageMakerEndpoint`), so a tampered artifact is never served;
- the server listens on 0.0.0.0 and `SAGEMAKER_BIND_TO_PORT` (default 8080): SageMaker's
  front end must reach it. There are no admin routes here: on SageMaker the weights are the
  endpoint's (UpdateEndpointWeightsAndCapacities), so nothing in the container can change routing;
- `GET /ping` and `POST /invocations` answer exactly as the local endpoint does
  (`{"predictions": [{"score", "version", "variant"}]}`), with the same request limits, the same
  de-identification and the same capture to the prediction store (`predictions.store`, an
  `s3://bucket/prefix` on AWS; checked at start-up, one line if the bucket is missing, access is
  denied or S3 cannot be reached); `GET /metrics` adds the capture counters.

The Model's environment (set by `SageMakerEndpoint`) names what SageMaker does not tell a
container: `RETRAINER_MODEL_VERSION`, `RETRAINER_VARIANT` (the production variant, or the shadow
variant, this Model was created for), `RETRAINER_SHADOW=1` for a model in
ShadowProductionVariants (its rows are captured as shadow scores, never as traffic), the model's
spec (`RETRAINER_MODEL_NAME`), and the pseudonym key: `RETRAINER_PSEUDONYM_KEY` itself, or
better `RETRAINER_PSEUDONYM_KEY_SECRET`, a Secrets Manager secret id read at start-up, so the key
never sits in the Model definition. A caller can key a request for pairing with the custom
attribute `retrainer-request-id=<id>` (`retrainer.client` sets it; SageMaker forwards custom
attributes to production and shadow variants alike).
"""
from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from ..container_env import (
    DEFAULT_PORT,
    KEY_SECRET_ENV,
    MODEL_DIR_ENV,
    PORT_ENV,
    SHA256_ENV,
    SHADOW_ENV,
    VARIANT_ENV,
    VERSION_ENV,
)
from ..errors import ArtifactIntegrityError, ConfigError, RetrainerError, UnknownVersion
from ..registry.storage import digest_matches

log = logging.getLogger(__name__)

MODEL_DIR = Path("/opt/ml/model")

class ModelDirRegistry:
    """The read-only registry of one model directory (what SageMaker extracted): `verify(version)`
    returns the directory after checking its content against the recorded sha256."""

    def __init__(self, model_dir: Path, version: str, sha256: str):
        self.model_dir, self.version, self.sha256 = Path(model_dir), version, sha256

    def verify(self, version: str) -> Path:
        if version != self.version:
            raise UnknownVersion(f"this container serves {self.version}, not {version}")
        if not digest_matches(self.model_dir, self.sha256):
            raise ArtifactIntegrityError(f"model {version} in {self.model_dir} does not match its recorded sha256; "
                                         "refusing to load")
        return self.model_dir


def container_settings(environ=os.environ):
    """Settings from the environment, with the container's own checks (one ConfigError line)."""
    from ..settings import Settings  # noqa: PLC0415 - pydantic-settings: after argument checks

    try:
        settings = Settings(home=Path(environ.get("RETRAINER_HOME", "/tmp/retrainer")))
    except Exception as exc:  # pydantic ValidationError: first error only
        raise ConfigError(f"bad settings in the environment: {str(exc).splitlines()[0][:200]}") from None
    return settings


def load_key_secret(settings, environ=os.environ) -> None:
    """Put the pseudonym key from Secrets Manager (`RETRAINER_PSEUDONYM_KEY_SECRET`) into the key's
    environment variable, where the capture writer process reads it."""
    secret = environ.get(KEY_SECRET_ENV)
    if not secret or environ.get(settings.pseudonym_key_env):
        return
    import boto3  # noqa: PLC0415 - only when the key comes from Secrets Manager

    try:
        value = boto3.session.Session().client("secretsmanager").get_secret_value(SecretId=secret)
    except Exception as exc:
        code = getattr(exc, "response", {}).get("Error", {}).get("Code", type(exc).__name__)
        raise ConfigError(f"cannot read the pseudonym key from Secrets Manager secret {secret!r}: {code}") from None
    key = value.get("SecretString") or (value.get("SecretBinary") or b"").decode("utf-8", "replace")
    if not key:
        raise ConfigError(f"Secrets Manager secret {secret!r} is empty")
    os.environ[settings.pseudonym_key_env] = key


def build_container_app(environ=os.environ):
    """The app SageMaker runs: one model from the model directory, capture to the configured
    store. ConfigError (one line) for anything missing or wrong."""
    from ..deid import pseudonymizer_from_env  # noqa: PLC0415
    from ..predstore import open_store  # noqa: PLC0415
    from .app import create_app  # noqa: PLC0415
    from .routing import PRODUCTION, VariantSpec  # noqa: PLC0415

    model_dir = Path(environ.get(MODEL_DIR_ENV) or MODEL_DIR)
    if not (model_dir / "model.joblib").is_file():
        raise ConfigError(f"no model in {model_dir} (SageMaker extracts ModelDataUrl there; expected model.joblib "
                          "and model.json)")
    version, sha256 = environ.get(VERSION_ENV), environ.get(SHA256_ENV)
    if not version or not sha256:
        raise ConfigError(f"{VERSION_ENV} and {SHA256_ENV} must be set (SageMakerEndpoint sets them on the Model)")
    variant = environ.get(VARIANT_ENV) or PRODUCTION
    shadow = environ.get(SHADOW_ENV, "").lower() in ("1", "true", "yes")
    settings = container_settings(environ)
    load_key_secret(settings, environ)
    pseudonymizer = pseudonymizer_from_env(settings.pseudonym_key_env)  # ConfigError if missing or weak
    store = open_store(settings)
    store.check()  # no bucket, access denied, S3 unreachable: one line now, not at the first request
    registry = ModelDirRegistry(model_dir, version, sha256)
    return create_app(settings, registry, store, pseudonymizer,
                      container=VariantSpec(variant, version, 1.0), capture_as_shadow=shadow)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args != ["serve"]:
        print(f"error: this image serves models: run it with 'serve' (got {' '.join(args) or 'nothing'})",
              file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("botocore", "boto3", "urllib3", "s3transfer"):  # credential-chain chatter at INFO
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        port = int(os.environ.get(PORT_ENV) or DEFAULT_PORT)
        app = build_container_app()
    except (ConfigError, RetrainerError, ValueError) as exc:
        print(f"error: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 2
    import uvicorn  # noqa: PLC0415

    # 0.0.0.0: SageMaker's front end reaches the container on its own network; there are no admin
    # routes to expose (see the module docstring)
    uvicorn.run(app, host="0.0.0.0", port=port, workers=1, log_level="warning", access_log=False)  # noqa: S104
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
