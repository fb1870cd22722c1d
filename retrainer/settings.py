"""One settings model for everything: read from `retrainer.yaml` (path from RETRAINER_CONFIG) and
`RETRAINER_*` environment variables (nested with `__`, e.g. RETRAINER_GATE__MIN_AUC=0.75).

Every threshold the project uses is a field here with its documented default.
"""
from __future__ import annotations

import math
import os
from datetime import timedelta
from pathlib import Path
from typing import Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, YamlConfigSettingsSource

from .errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = "retrainer.yaml"


class _Section(BaseModel):
    model_config = {"extra": "forbid"}


class SplitSettings(_Section):
    """Time-based split in whole `unit`s (days, weeks or months; the model spec's `split`): the
    most recent `test` units test, the `validation` units before them validate, and the `train`
    units before those train (None: everything older, at least `min_train`). Never shuffled across
    time. The readmission names `validation_months`, `test_months`, `min_train_months` still work."""
    unit: Literal["days", "weeks", "months"] = "months"
    train: int | None = Field(None, ge=1)
    validation: int = Field(1, ge=1, validation_alias=AliasChoices("validation", "validation_months"))
    test: int = Field(1, ge=1, validation_alias=AliasChoices("test", "test_months"))
    min_train: int = Field(1, ge=1, validation_alias=AliasChoices("min_train", "min_train_months"))

    @property
    def validation_months(self) -> int:
        return self.validation

    @property
    def test_months(self) -> int:
        return self.test

    @property
    def min_train_months(self) -> int:
        return self.min_train

    @property
    def periods_needed(self) -> int:
        return (self.train or self.min_train) + self.validation + self.test


class ModelSettings(_Section):
    """HistGradientBoostingClassifier hyperparameters (the `hist_gradient_boosting_classifier`
    entry point's parameters)."""
    learning_rate: float = Field(0.06, gt=0, le=1)
    max_iter: int = Field(250, ge=1, le=5000)
    max_leaf_nodes: int = Field(31, ge=2)
    min_samples_leaf: int = Field(40, ge=1)
    l2_regularization: float = Field(1.0, ge=0)
    random_state: int = 42


class TrainingParams(BaseModel):
    """The training entry point's parameters (the model spec's `training.params`, overridable here:
    RETRAINER_MODEL__MAX_ITER=300). Free-form: the entry point validates its own (see
    `retrainer.training`); `model_dump()` is what the model is trained with and hashed by."""
    model_config = ConfigDict(extra="allow")

    @model_validator(mode="before")
    @classmethod
    def _from_model(cls, v):
        return v.model_dump() if isinstance(v, BaseModel) else v


class GateFloors(_Section):
    """Absolute floors of the `medimind` policy, on the candidate's test metrics."""
    auc: float = Field(0.80, ge=0, le=1)
    precision: float = Field(0.75, ge=0, le=1)
    recall: float = Field(0.70, ge=0, le=1)
    min_samples: int = Field(10_000, ge=1)


class GateSettings(_Section):
    """Promotion gate at registration (`retrainer.evaluation.promotion_gate`). Both models are
    scored on the same test month, so they are compared paired (paired DeLong, or a bootstrap
    clustered on the patient when one repeats), each bound a one-sided test at (1 - level)/2.

    Every policy needs AUC >= `min_auc`. Then, by `policy`:

    * ``non-inferiority`` (default): no production yet, or lower bound(Δ) > -`max_auc_drop` with
      at least `min_positives` positives and `min_negatives` negatives in the test set;
    * ``task12``: a relative AUC improvement of at least `min_relative_improvement` over production
      is registered for an automatic canary; below it the candidate is registered with
      `needs_approval` (a person decides);
    * ``protocol24``: Δ > `min_improvement` and the one-sided paired p-value of Δ > 0 below
      `significance`;
    * ``medimind``: the absolute `floors` (AUC, precision, recall, test samples).

    `max_slice_gap` (off by default) adds a fairness floor to any policy: no slice (sex, age band)
    more than this below the overall AUC; a slice with fewer than `slice_min_count` positives or
    negatives is reported, not judged."""
    policy: Literal["non-inferiority", "task12", "protocol24", "medimind"] = "non-inferiority"
    min_auc: float = Field(0.70, ge=0, le=1)
    max_auc_drop: float = Field(0.02, ge=0, le=1)
    level: float = Field(0.95, gt=0.5, lt=1)
    min_positives: int = Field(100, ge=1)
    min_negatives: int = Field(100, ge=1)
    min_relative_improvement: float = Field(0.05, ge=0)
    min_improvement: float = Field(0.01, ge=0, le=1)
    significance: float = Field(0.05, gt=0, lt=1)
    floors: GateFloors = GateFloors()
    max_slice_gap: float | None = Field(None, ge=0, le=1)
    slice_min_count: int = Field(30, ge=1)


class ValidationSettings(_Section):
    suite: str | None = None  # None: generated from the model's spec (+ expectations/<model>.extra.json)
    expectations_dir: Path = REPO_ROOT / "expectations"
    min_rows: int = Field(500, ge=1)
    label_rate_min: float = Field(0.05, ge=0, le=1)
    label_rate_max: float = Field(0.35, ge=0, le=1)
    null_tolerance: float = Field(0.98, ge=0, le=1)  # `mostly` for always-present columns
    lab_null_tolerance: float = Field(0.7, ge=0, le=1)  # `mostly` for labs not always drawn


class DriftSettings(_Section):
    psi_threshold: float = Field(0.20, gt=0)
    n_bins: int = Field(10, ge=2, le=100)
    min_window: int = Field(500, ge=1)
    features_required: int = Field(1, ge=1)
    noise_quantile: float = Field(0.95, gt=0, lt=1)
    alpha: float = Field(0.05, gt=0, lt=1)  # family-wise: drifts iff PSI > max(psi_threshold, floor at alpha/F)
    extra_stats: bool = False  # KS and Jensen-Shannon alongside PSI


class CanarySettings(_Section):
    """The canary's plan and its decision rule (`retrainer.rollout.policy`).

    Live guardrails at every check: the error rate's Clopper-Pearson lower bound at level
    1 - guardrail_alpha/K (K checks) above `max_error_rate`; the p95 latency's lower bound above
    `max_p95_latency_ms` once `min_requests` requests are in; any NaN or out-of-range score. The
    verdict at the end is non-inferiority with margin `auc_tolerance` on matured labels (the
    registration comparison pooled with matured shadow rows), each arm needing `min_positives`
    and `min_negatives`; an inconclusive verdict extends the last stage up to `max_duration_hours`
    and then follows `inconclusive` ("rollback", or "human": wait `human_timeout_hours` for a
    person, then roll back). Nothing inconclusive is ever promoted automatically."""
    traffic: float = Field(0.10, gt=0, lt=1)
    duration_hours: float = Field(72.0, gt=0)
    check_interval_hours: float = Field(6.0, gt=0)
    auc_tolerance: float = Field(0.02, ge=0, le=1)
    level: float = Field(0.95, gt=0.5, lt=1)  # two-sided: each bound is a one-sided test at (1 - level)/2
    min_positives: int = Field(100, ge=1)
    min_negatives: int = Field(100, ge=1)
    max_duration_hours: float = Field(144.0, gt=0)
    inconclusive: Literal["rollback", "human"] = "rollback"
    human_timeout_hours: float = Field(72.0, gt=0)
    max_error_rate: float = Field(0.01, ge=0, le=1)
    max_p95_latency_ms: float = Field(250.0, gt=0)
    min_requests: int = Field(200, ge=1)  # before the p95 latency is judged
    guardrail_alpha: float = Field(0.05, gt=0, lt=1)
    label_free_estimate: bool = True  # CBPE: can roll back a candidate, never promote one
    deferred_verdict: bool = True  # re-check a promotion when the canary period's labels mature


class RolloutSettings(_Section):
    """How a registered candidate is rolled out without a person (`flows/rollout.py`) and how often
    its guardrails are checked (`flows/guardrails.py`).

    `plan`: the plan file (relative paths from the repo root) for candidates of ordinary triggers;
    `emergency_plan`: the one for candidates whose trigger is in `emergency_triggers` (None: `plan`).
    A plan file that does not exist means the canary's default plan (`canary` settings).
    `guardrail_interval_s`: the guardrails deployment's cadence, and the number of looks it tests
    over (Bonferroni); `approval_timeout_s`: how long a rollout waits for a human when the gate
    asked for one; `canary_deployment`: the deployment that runs the rollout."""
    plan: str = "rollout-plans/canary.yaml"
    emergency_plan: str | None = None
    emergency_triggers: list[str] = Field(default_factory=lambda: ["drift", "performance", "concept"])
    guardrail_interval_s: float = Field(300.0, gt=0)
    approval_timeout_s: int = Field(7 * 24 * 3600, ge=1)
    canary_deployment: str = "canary/canary"


class ServingSettings(_Section):
    """The local endpoint. There is no default admin token: serving refuses to start without one of
    at least 32 bytes (see `serving.contract.check_serving_settings`). `host` stays on loopback
    unless set explicitly; `body_timeout_s` bounds the time a client may take to send its body."""
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=1, le=65535)
    admin_token: SecretStr | None = None
    max_body_bytes: int = Field(1_000_000, ge=1024)
    max_instances: int = Field(1000, ge=1)
    # prediction capture (retrainer/serving/capture.py): the durability window is N rows / T seconds
    capture_flush_rows: int = Field(1000, ge=2)  # N: at most this many answered rows lost on a crash
    capture_flush_seconds: float = Field(2.0, gt=0, le=3600)  # T: ... and only rows of the last T s
    capture_backlog_rows: int = Field(100_000, ge=1)  # rows held when writes fail; oldest dropped beyond
    body_timeout_s: float = Field(5.0, gt=0, le=300)
    # shadow scoring (retrainer/serving/shadow.py): rows are also scored, off the response path, by
    # production and candidate when both have weight > 0 ("candidate"), by every loaded variant
    # ("all"), or not at all ("off"); the scores are captured with `shadow` = true for paired checks
    shadow: Literal["off", "candidate", "all"] = "candidate"
    shadow_backlog_rows: int = Field(100_000, ge=1)  # rows waiting for shadow scoring; oldest dropped beyond


class NotifySettings(_Section):
    """Where notices go (`retrainer.notify` words them, `tasks/notify.py` sends them): Prefect
    notification blocks by "<block-type-slug>/<block-name>", e.g. ["slack-webhook/ml-alerts",
    "email/ml-admins", "custom-webhook/pager"]; env RETRAINER_NOTIFY__BLOCKS as a JSON list or
    comma-separated. Empty: the legacy RETRAINER_NOTIFY_BLOCK (one name) if set, else the log.
    Each block gets at most `timeout_s` seconds; a failing block is logged and never stops a flow."""
    blocks: list[str] | str = Field(default_factory=list)  # str: comma-separated (validated to a list)
    timeout_s: float = Field(15.0, gt=0, le=300)

    @field_validator("blocks", mode="before")
    @classmethod
    def _split(cls, v):
        if isinstance(v, str):
            v = [b for b in (p.strip() for p in v.split(",")) if b]
        return v

    @field_validator("blocks")
    @classmethod
    def _names(cls, v: list[str]) -> list[str]:
        for name in v:
            slug, _, block = name.partition("/")
            if not slug or not block:
                raise ValueError(f"{name!r} is not '<block-type-slug>/<block-name>' (e.g. 'slack-webhook/ml-alerts')")
        return v


class PredictionSettings(_Section):
    """The prediction store's retention (`retrainer.retention`, the `retention` deployment): day
    partitions whose every row is older than `retention_days` are deleted (and audited), unless a
    running rollout or a pending deferred verdict still needs them. The default, 400 days, keeps the
    30-day labels and a year of monitoring; values below label_delay + canary.max_duration_hours
    (in days, rounded up) are refused, since the canary's verdict needs its matured rows."""
    retention_days: int = Field(400, ge=1)
    # Where the store lives: a directory or s3://bucket/prefix. Unset: <home> on the local backend,
    # s3://<aws.bucket>/<aws.prefix>/<model_name> on the sagemaker backend (`predstore.store_url`).
    store: str | None = None


class AWSSettings(_Section):
    region: str | None = None
    bucket: str | None = None
    prefix: str = "retrainer"
    role_arn: str | None = None
    instance_type: str = "ml.m5.large"
    # training instances; > 1 is distributed training (the XGBoost entry points only): each instance
    # gets a shard of the train data (ShardedByS3Key) and the first one runs XGBoost's tracker
    instance_count: int = Field(1, ge=1, le=100)
    tracker_port: int = Field(9091, ge=1024, le=65535)  # the tracker's port on the first instance
    training_image_uri: str | None = None
    endpoint_name: str = "readmission-30d"
    credentials_block: str | None = None
    # the retrainer serving image (Dockerfile: `retrainer.serving.container`); unset: the scikit-learn
    # image with inference.py hooks, which scores but captures nothing (no monitoring on AWS)
    inference_image_uri: str | None = None
    # Secrets Manager secret id holding the pseudonym key, read by the serving container at start-up
    # (required with inference_image_uri: the container refuses to capture without a key)
    pseudonym_key_secret: str | None = None
    endpoint_instance_type: str = "ml.m5.large"
    warm_standby: bool = True  # keep the previous version at weight 0 so rollback is a weight shift
    training_timeout_s: float = Field(3 * 3600, gt=0)
    endpoint_timeout_s: float = Field(3600, gt=0)
    # model.tar.gz extraction limits (uncompressed bytes, member count): a small gzip can expand
    # to fill the disk, so anything beyond these is refused before extraction.
    max_model_bytes: int = Field(1 << 30, gt=0)
    max_model_members: int = Field(1000, gt=0)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RETRAINER_", env_nested_delimiter="__", extra="forbid")

    home: Path = Path(".retrainer")
    training_data: Path = Path("data/training")  # where scheduled/triggered retrains read their window
    triggers_file: Path = REPO_ROOT / "triggers.yaml"
    backend: Literal["local", "sagemaker"] = "local"
    model_name: str = "readmission-30d"
    approvers: list[str] = Field(default_factory=lambda: ["ml-lead"])
    pseudonym_key_env: str = "RETRAINER_PSEUDONYM_KEY"
    # How long after a prediction its outcome can be known (30-day readmission: 30 days). Only
    # predictions older than this count as labelled evidence ("matured"). "30d", "48h", "90m".
    label_delay: timedelta = timedelta(days=30)
    split: SplitSettings = SplitSettings()
    model: TrainingParams = Field(default_factory=lambda: TrainingParams(**ModelSettings().model_dump()))
    gate: GateSettings = GateSettings()
    validation: ValidationSettings = ValidationSettings()
    drift: DriftSettings = DriftSettings()
    canary: CanarySettings = CanarySettings()
    rollout: RolloutSettings = RolloutSettings()
    serving: ServingSettings = ServingSettings()
    aws: AWSSettings = AWSSettings()
    notify: NotifySettings = NotifySettings()
    predictions: PredictionSettings = PredictionSettings()

    @field_validator("model_name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not v or not all(c.isalnum() or c in "-_" for c in v):
            raise ValueError("must be letters, digits, '-' or '_'")
        return v

    @field_validator("label_delay", mode="before")
    @classmethod
    def _delay(cls, v):
        from .triggers.config import parse_duration  # noqa: PLC0415 - cycle: triggers imports settings' siblings

        if isinstance(v, timedelta):
            if v <= timedelta(0):
                raise ValueError("must be positive: an outcome cannot be known before its prediction")
            return v
        try:
            return parse_duration(v)  # "30d", "48h", "90m", or a number of hours
        except ValueError:
            raise ValueError(f"{v!r} is not a positive duration like 30d, 48h or 90m (an outcome cannot "
                             "be known before its prediction)") from None

    @model_validator(mode="after")
    def _retention_covers_the_canary(self):
        need = min_retention_days(self.label_delay, self.canary.max_duration_hours)
        if self.predictions.retention_days < need:
            raise ValueError(
                f"predictions.retention_days={self.predictions.retention_days} is below label_delay "
                f"({self.label_delay.total_seconds() / 86400:g} d) + canary.max_duration_hours "
                f"({self.canary.max_duration_hours / 24:g} d) = {need} days: a canary's matured rows would be "
                f"deleted before its verdict; use at least {need}")
        return self

    @model_validator(mode="after")
    def _namespace_by_model(self):
        """Every model but the default keeps its state in `<home>/models/<name>/` (registry,
        prediction store, rollouts, evidence) and reads its training window from
        `data/<name>/training` unless told otherwise; the default model keeps today's paths.
        `{model}` in `training_data` is replaced by the model's name."""
        from .spec import DEFAULT_MODEL  # noqa: PLC0415 - cycle: spec's loader imports errors only

        if "{model}" in str(self.training_data):  # one setting for every model: /data/{model}/training
            self.training_data = Path(str(self.training_data).replace("{model}", self.model_name))
        if self.model_name != DEFAULT_MODEL:
            tail = ("models", self.model_name)
            if tuple(self.home.parts[-2:]) != tail:
                self.home = self.home.joinpath(*tail)
            if self.training_data == Path("data/training"):
                self.training_data = Path("data") / self.model_name / "training"
        return self

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, env_settings, dotenv_settings,
                                   file_secret_settings) -> tuple[PydanticBaseSettingsSource, ...]:
        path = os.environ.get("RETRAINER_CONFIG") or DEFAULT_CONFIG
        sources = [init_settings, env_settings]
        yaml_source = YamlConfigSettingsSource(settings_cls, yaml_file=path) if Path(path).is_file() else None
        if yaml_source is not None:
            sources.append(yaml_source)
        sources.append(SpecDefaults(settings_cls, init_settings, env_settings, yaml_source))
        return tuple(sources)

    @property
    def registry_dir(self) -> Path:
        return self.home / "registry"

    @property
    def spec(self):
        """The model spec (`models/<model_name>.yaml`): a `retrainer.spec.ModelSpec`."""
        from .spec import load_spec  # noqa: PLC0415 - cycle: settings is imported by spec's users

        return load_spec(self.model_name)


class SpecDefaults(PydanticBaseSettingsSource):
    """The lowest-priority settings source: what the model's spec says (label delay, split,
    training params, triggers file, rollout plan, gate thresholds, endpoint name). Explicit
    settings (arguments, RETRAINER_* variables, retrainer.yaml) override it."""

    def __init__(self, settings_cls, *sources):
        super().__init__(settings_cls)
        self._sources = [s for s in sources if s is not None]

    def get_field_value(self, field, field_name):  # required by the base class; __call__ does the work
        return None, field_name, False

    def _model_name(self) -> str:
        from .spec import DEFAULT_MODEL  # noqa: PLC0415 - cycle

        for source in self._sources:
            try:
                name = source().get("model_name")
            except Exception:  # a broken source reports itself when pydantic-settings calls it
                name = None
            if name:
                return str(name)
        return DEFAULT_MODEL

    def __call__(self) -> dict:
        from .spec import REPO_ROOT as SPEC_ROOT  # noqa: PLC0415 - cycle
        from .spec import load_spec  # noqa: PLC0415 - cycle

        name = self._model_name()
        if not all(c.isalnum() or c in "-_" for c in name):
            return {}  # the model_name validator reports it
        spec = load_spec(name)
        out: dict = {
            "label_delay": spec.label_delay,
            "split": spec.split.model_dump(),
            "model": dict(spec.training.params),
            "aws": {"endpoint_name": spec.name},
        }
        v = spec.validation
        out["validation"] = {"min_rows": v.min_rows, "null_tolerance": v.null_tolerance,
                             "lab_null_tolerance": v.nullable_tolerance}
        if spec.label.rate is not None:
            out["validation"].update(label_rate_min=spec.label.rate[0], label_rate_max=spec.label.rate[1])
        if spec.triggers:
            out["triggers_file"] = SPEC_ROOT / spec.triggers
        if spec.rollout_plan:
            out["rollout"] = {"plan": spec.rollout_plan}
        if spec.task == "binary_classification":
            gate = {"max_auc_drop": spec.metrics.gate.tolerance}
            if spec.metrics.gate.min is not None:
                gate["min_auc"] = spec.metrics.gate.min
            out["gate"] = gate
        return out


def min_retention_days(label_delay: timedelta, max_duration_hours: float) -> int:
    """The shortest prediction retention (whole days) that keeps a canary's rows until its labels
    have matured: label_delay + the canary's maximum duration, rounded up."""
    return math.ceil((label_delay.total_seconds() + max_duration_hours * 3600) / 86400)


def load_settings(**overrides) -> Settings:
    """Load settings, turning any problem into one ConfigError line."""
    path = os.environ.get("RETRAINER_CONFIG")
    if path and not Path(path).is_file():
        raise ConfigError(f"settings file {path} (RETRAINER_CONFIG) does not exist")
    try:
        return Settings(**overrides)
    except ConfigError:  # an unknown model or a bad spec: its own line
        raise
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        if not where:  # a check across sections (model validator): its message names the fields
            raise ConfigError(f"bad settings: {err['msg'].removeprefix('Value error, ')}") from None
        more = f" (and {len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else ""
        raise ConfigError(f"bad setting {where}: {err['msg']}{more}") from None
    except Exception as exc:  # a YAML syntax error, an unreadable file
        raise ConfigError(f"cannot read settings: {type(exc).__name__}: {str(exc).splitlines()[0]}") from None
