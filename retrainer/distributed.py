"""Distributed training of the XGBoost entry points on several SageMaker instances.

With `aws.instance_count` > 1 the SageMaker trainer uploads the training window as one Parquet
object per instance (`shard_frame`) and gives the train channel `ShardedByS3Key`, so each instance
receives its own shard; validation is replicated. SageMaker tells every instance the job's hosts
(SM_HOSTS, a JSON list) and its own name (SM_CURRENT_HOST). `Cluster.from_env` reads them, and
`communicator` joins XGBoost's collective (rabit) group: the first host of SM_HOSTS runs the
tracker (`xgboost.tracker.RabitTracker`) on `tracker_port`, every host connects to it by that
host's name and the port, and inside the group XGBoost's `hist` trees are built from histograms
summed over all hosts, so each host ends with the same model. Only the first host writes it.

Only entry points that train through XGBoost's collective can do this (`DISTRIBUTED_ENTRY_POINTS`);
any other refuses `instance_count` > 1 before anything is created in AWS.

Running the hosts as local processes (tests, a laptop): `RETRAINER_TRACKER_HOST=127.0.0.1` makes
every host use that address for the tracker instead of resolving the first host's name.

The group is unauthenticated: the tracker listens only on the first host's own address inside the
training job's network (never 0.0.0.0).
"""
from __future__ import annotations

import json
import math
import socket
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping

import numpy as np
import pandas as pd

from .errors import ConfigError, DataError, RetrainerError

DISTRIBUTED_ENTRY_POINTS = ("retrainer.training:xgboost_regressor", "retrainer.training:xgboost_ranker")
HYPERPARAMETER = "distributed"  # the reserved hyperparameter: {"tracker_port": P, "timeout_s": T}
TRACKER_HOST_ENV = "RETRAINER_TRACKER_HOST"
DEFAULT_PORT = 9091
DEFAULT_TIMEOUT_S = 900.0  # instances start (and install requirements) at different times


class ClusterError(RetrainerError):
    """The training hosts could not form or keep their XGBoost group."""


def check_distributable(entry_point: str, instance_count: int, model: str) -> None:
    """One ConfigError line unless `entry_point` can train on `instance_count` instances."""
    if instance_count > 1 and entry_point not in DISTRIBUTED_ENTRY_POINTS:
        raise ConfigError(
            f"aws.instance_count={instance_count} needs an entry point that trains distributed, and model "
            f"{model}'s {entry_point} does not (these do: {', '.join(DISTRIBUTED_ENTRY_POINTS)}); "
            "set aws.instance_count to 1")


def shard_frame(df: pd.DataFrame, n: int, *, ranking: bool = False, timestamp: str | None = None) -> list[pd.DataFrame]:
    """`df` in `n` non-empty shards, one per instance. Rows are dealt round-robin (each shard spans
    the whole window); for ranking, whole queries (days of `timestamp`) are dealt, since a query's
    pairs must all be on one host."""
    if n < 1:
        raise ConfigError(f"cannot split training data into {n} shards")
    if n == 1:
        return [df]
    if ranking:
        if timestamp is None or timestamp not in df.columns:
            raise DataError(f"ranking data needs its timestamp column {timestamp} to be split by query")
        day = pd.to_datetime(df[timestamp]).to_numpy().astype("datetime64[D]").astype(np.int64)
        days = np.unique(day)
        if len(days) < n:
            raise DataError(f"{len(days)} day(s) of training data cannot give each of {n} instances whole "
                            f"queries (one query per day); use at most {len(days)} instances")
        which = np.searchsorted(days, day) % n
    else:
        if len(df) < n:
            raise DataError(f"{len(df)} training row(s) cannot be split across {n} instances")
        which = np.arange(len(df)) % n
    return [df[which == k].reset_index(drop=True) for k in range(n)]


@dataclass(frozen=True)
class Cluster:
    """The hosts of one training job as SageMaker names them, this process's place among them,
    and where the tracker listens (the first host's address and `port`)."""
    hosts: tuple[str, ...]
    current: str
    port: int = DEFAULT_PORT
    timeout_s: float = DEFAULT_TIMEOUT_S
    tracker_host: str | None = None  # None: resolve hosts[0]
    info: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def rank(self) -> int:
        return self.hosts.index(self.current)

    @property
    def is_first(self) -> bool:
        return self.rank == 0

    @property
    def size(self) -> int:
        return len(self.hosts)

    @classmethod
    def from_env(cls, env: Mapping[str, str], options: Any = None) -> Cluster | None:
        """The cluster from SageMaker's SM_HOSTS / SM_CURRENT_HOST, or None for one host. `options`
        is the reserved hyperparameter's value ({"tracker_port", "timeout_s"})."""
        raw = env.get("SM_HOSTS")
        if not raw:
            return None
        try:
            hosts = json.loads(raw)
        except ValueError:
            raise ConfigError(f"SM_HOSTS is not a JSON list of host names: {raw[:100]!r}") from None
        if not isinstance(hosts, list) or not hosts or not all(isinstance(h, str) and h for h in hosts):
            raise ConfigError(f"SM_HOSTS is not a JSON list of host names: {raw[:100]!r}")
        if len(set(hosts)) != len(hosts):
            raise ConfigError(f"SM_HOSTS names a host twice: {raw[:100]!r}")
        if len(hosts) == 1:
            return None
        current = env.get("SM_CURRENT_HOST", "")
        if current not in hosts:
            raise ConfigError(f"SM_CURRENT_HOST {current!r} is not one of SM_HOSTS {hosts}")
        options = options if options is not None else {}
        if not isinstance(options, dict) or set(options) - {"tracker_port", "timeout_s"}:
            raise ConfigError(f"hyperparameter {HYPERPARAMETER} must be {{\"tracker_port\": int, \"timeout_s\": "
                              f"number}}, not {json.dumps(options)[:100]}")
        port = options.get("tracker_port", DEFAULT_PORT)
        timeout = options.get("timeout_s", DEFAULT_TIMEOUT_S)
        if isinstance(port, bool) or not isinstance(port, int) or not 1024 <= port <= 65535:
            raise ConfigError(f"{HYPERPARAMETER}.tracker_port must be an integer in 1024..65535, not {port!r}")
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
            raise ConfigError(f"{HYPERPARAMETER}.timeout_s must be a positive number, not {timeout!r}")
        return cls(tuple(hosts), current, port, float(timeout), env.get(TRACKER_HOST_ENV) or None)

    def tracker_address(self, deadline: float) -> str:
        """The tracker's IP: RETRAINER_TRACKER_HOST, else the first host's name resolved (SageMaker's
        DNS may lag the container's start: retried until `deadline`)."""
        name = self.tracker_host or self.hosts[0]
        while True:
            try:
                return socket.getaddrinfo(name, self.port, type=socket.SOCK_STREAM)[0][4][0]
            except OSError as exc:
                if time.monotonic() >= deadline:
                    raise ClusterError(f"cannot resolve the tracker host {name}: {exc}") from None
                time.sleep(1.0)


def _retries(timeout_s: float) -> int:
    """XGBoost's worker waits 2*k s before its k-th reconnect, so n tries cover n(n-1) s."""
    return max(3, math.ceil((1 + math.sqrt(1 + 4 * timeout_s)) / 2))


def _first_line(exc: BaseException) -> str:
    lines = [ln.strip(" -") for ln in str(exc).splitlines() if ln.strip(" -") and "[bt]" not in ln]
    # xgboost's messages: "[time] file:line: [where]:" then the causes, most general first
    causes = [ln.split("]: ", 1)[-1] for ln in lines if not ln.startswith("Stack trace")]
    return "; ".join(dict.fromkeys(c for c in causes if c and not c.endswith(":")))[:300] or type(exc).__name__


class Group:
    """Inside `communicator`: this host's rank and the group's collective sums."""

    def __init__(self, cluster: Cluster):
        self.cluster = cluster

    def sum(self, values) -> np.ndarray:
        from xgboost import collective  # noqa: PLC0415 - heavy: xgboost

        return collective.allreduce(np.asarray(values, dtype=np.float64), collective.Op.SUM)

    def per_host(self, value: float) -> list[float]:
        """Every host's `value`, in SM_HOSTS order."""
        own = np.zeros(self.cluster.size)
        own[self.cluster.rank] = value
        return self.sum(own).tolist()


_RUNNING: set[int] = set()  # ports of the trackers this process runs


def _timeout(cluster: Cluster) -> int:
    return max(1, math.ceil(cluster.timeout_s))


@contextmanager
def tracker(cluster: Cluster | None) -> Iterator[None]:
    """On the first host, run XGBoost's tracker for the block (nothing elsewhere, or when this
    process already runs it). `retrainer.training.main` starts it before reading any data, so the
    other hosts rarely reach it first (each early try costs them a back-off of 2, 4, ... s). When
    the block ends normally, wait for the group to shut down; on an error, stop it at once."""
    if cluster is None or not cluster.is_first or cluster.port in _RUNNING:
        yield
        return
    import xgboost  # noqa: PLC0415 - heavy: xgboost
    from xgboost.tracker import RabitTracker  # noqa: PLC0415 - heavy: xgboost

    address = cluster.tracker_address(time.monotonic() + cluster.timeout_s)
    try:
        handle = RabitTracker(n_workers=cluster.size, host_ip=address, port=cluster.port, sortby="task",
                              timeout=_timeout(cluster))
        handle.start()
    except xgboost.core.XGBoostError as exc:
        raise ClusterError(f"cannot start XGBoost's tracker on {address}:{cluster.port}: "
                           f"{_first_line(exc)}") from None
    _RUNNING.add(cluster.port)
    try:
        yield
        try:
            handle.wait_for(_timeout(cluster))
        except xgboost.core.XGBoostError as exc:
            raise ClusterError(f"XGBoost's tracker did not shut down cleanly: {_first_line(exc)}") from None
    finally:
        _RUNNING.discard(cluster.port)
        try:
            handle.free()
        except xgboost.core.XGBoostError:  # it reports the failure already raised
            pass


@contextmanager
def communicator(cluster: Cluster) -> Iterator[Group]:
    """Join the XGBoost group of `cluster` for the block (the first host runs the tracker if it
    does not yet). Any failure to form the group within `cluster.timeout_s` is one ClusterError line."""
    import xgboost  # noqa: PLC0415 - heavy: xgboost
    from xgboost import collective  # noqa: PLC0415 - heavy: xgboost

    timeout = _timeout(cluster)
    with tracker(cluster):
        address = cluster.tracker_address(time.monotonic() + cluster.timeout_s)
        try:  # the task id orders ranks as SM_HOSTS does
            collective.init(dmlc_communicator="rabit", dmlc_tracker_uri=address, dmlc_tracker_port=cluster.port,
                            dmlc_task_id=f"{cluster.rank:05d}-{cluster.current}", dmlc_retry=_retries(timeout),
                            dmlc_timeout=timeout)
        except xgboost.core.XGBoostError as exc:
            raise ClusterError(f"host {cluster.current} could not join the training group of {cluster.size} hosts "
                               f"(tracker {address}:{cluster.port}, {timeout} s): {_first_line(exc)}") from None
        if collective.get_world_size() != cluster.size or collective.get_rank() != cluster.rank:
            collective.finalize()
            raise ClusterError(f"host {cluster.current} got rank {collective.get_rank()} of "
                               f"{collective.get_world_size()}, expected {cluster.rank} of {cluster.size}")
        try:
            yield Group(cluster)
        finally:
            collective.finalize()
