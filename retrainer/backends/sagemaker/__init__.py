"""SageMaker backend: the same interfaces as the local backend (`Registry`, `Trainer`, endpoint
`set_variants`/`state`) on SageMaker and S3, with plain boto3.

`build(settings)` returns a `Backend` whose `registry` is a `SageMakerRegistry`, `trainer` a
`SageMakerTrainer`, plus an `endpoint` attribute (`SageMakerEndpoint`). Nothing talks to AWS until a
method is called; configuration checks (region, bucket, role ARN) run before anything is created.
"""
from __future__ import annotations

from ...predstore import PredictionStore
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
        warm_standby=a.warm_standby, timeout_s=a.endpoint_timeout_s)
    return Backend(name="sagemaker", registry=registry, trainer=trainer, settings=settings,
                   endpoint=endpoint, predictions=PredictionStore(settings.home))
