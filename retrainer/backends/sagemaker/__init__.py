"""SageMaker backend: the same interfaces as the local backend (`Registry`, `Trainer`, endpoint
`set_variants`/`state`) on SageMaker and S3, with plain boto3.

`build(settings)` returns a `Backend` whose `registry` is a `SageMakerRegistry`, `trainer` a
`SageMakerTrainer`, plus an `endpoint` attribute (`SageMakerEndpoint`). Nothing talks to AWS until a
method is called; configuration checks (region, bucket, role ARN) run before anything is created.
"""
from __future__ import annotations

from ...container_env import KEY_SECRET_ENV, MODEL_NAME_ENV, STORE_ENV
from ...errors import ConfigError
from ...predstore import open_store, store_url
from ...settings import Settings
from .. import Backend
from ._aws import ArtifactError, AWSContext, SageMakerError, TrainingJobFailed, WaitTimeout, default_sklearn_image
from .endpoint import EndpointMismatch, SageMakerEndpoint
from .registry import SageMakerRegistry
from .trainer import SageMakerTrainer

__all__ = ["AWSContext", "ArtifactError", "EndpointMismatch", "SageMakerEndpoint", "SageMakerError",
           "SageMakerRegistry", "SageMakerTrainer", "TrainingJobFailed", "WaitTimeout", "build",
           "default_sklearn_image"]


def build(settings: Settings, *, session=None) -> Backend:
    aws = AWSContext(settings.aws, session=session)
    a = settings.aws
    inference_image = a.inference_image_uri or a.training_image_uri
    registry = SageMakerRegistry(aws, settings.model_name, cache_dir=settings.home / "sagemaker",
                                 inference_image=inference_image, instance_type=a.instance_type)
    trainer = SageMakerTrainer(aws, model_name=settings.model_name, instance_type=a.instance_type,
                               instance_count=a.instance_count, tracker_port=a.tracker_port,
                               image_uri=a.training_image_uri,
                               timeout_s=a.training_timeout_s)
    endpoint = SageMakerEndpoint(
        aws, registry, endpoint_name=a.endpoint_name, model_name=settings.model_name,
        instance_type=a.endpoint_instance_type, image_uri=inference_image,
        warm_standby=a.warm_standby, timeout_s=a.endpoint_timeout_s, container_env=container_env(settings))
    return Backend(name="sagemaker", registry=registry, trainer=trainer, settings=settings,
                   endpoint=endpoint, predictions=open_store(settings))  # checked before first use


def container_env(settings: Settings) -> dict[str, str] | None:
    """What every SageMaker Model running the retrainer serving image (`aws.inference_image_uri`)
    gets in its environment: the model's spec, the prediction store and the pseudonym key's
    Secrets Manager id (refused without one: the container would have no key to capture with).
    None without the image: the scikit-learn image scores and captures nothing."""
    a = settings.aws
    if not a.inference_image_uri:
        return None
    if not a.pseudonym_key_secret:
        raise ConfigError("aws.inference_image_uri is the retrainer serving image, which captures predictions: set "
                          "aws.pseudonym_key_secret (RETRAINER_AWS__PSEUDONYM_KEY_SECRET) to the Secrets Manager "
                          "secret holding the pseudonym key")
    return {MODEL_NAME_ENV: settings.model_name, STORE_ENV: store_url(settings), KEY_SECRET_ENV: a.pseudonym_key_secret}

