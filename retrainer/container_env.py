"""The environment of the SageMaker inference container (`retrainer.serving.container`): the
names `SageMakerEndpoint` sets on each SageMaker Model and the container reads. A module of its
own so the backend can name them without importing the serving app."""
MODEL_DIR_ENV = "RETRAINER_MODEL_DIR"  # default /opt/ml/model, where SageMaker extracts ModelDataUrl
VERSION_ENV = "RETRAINER_MODEL_VERSION"
SHA256_ENV = "RETRAINER_MODEL_SHA256"  # the registry's artifact_sha256: the container verifies before loading
VARIANT_ENV = "RETRAINER_VARIANT"  # the production or shadow variant the Model was created for
SHADOW_ENV = "RETRAINER_SHADOW"  # "1": a model in ShadowProductionVariants (rows captured as shadow scores)
KEY_SECRET_ENV = "RETRAINER_PSEUDONYM_KEY_SECRET"  # Secrets Manager secret id of the pseudonym key
STORE_ENV = "RETRAINER_PREDICTIONS__STORE"  # the prediction store (s3://bucket/prefix/model)
MODEL_NAME_ENV = "RETRAINER_MODEL_NAME"
PORT_ENV = "SAGEMAKER_BIND_TO_PORT"
DEFAULT_PORT = 8080
REQUEST_ID_ATTRIBUTE = "retrainer-request-id"  # custom attribute naming a request, for pairing shadow scores
