"""Model specs (`models/<name>.yaml`) and the active model.

`load_spec(name)` reads and validates a spec; `contract(name)` is the column contract it implies.
The *active* model is what `retrainer.schema` answers for: the model a flow run, a CLI command or
a server was started for. `activate(name)` sets it for the current context (a flow run and the
tasks it submits), `set_process_model(name)` for a whole process (a server); otherwise it is
RETRAINER_MODEL_NAME, else the default model.
"""
from __future__ import annotations

import contextvars
import importlib
import os
import time
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

import yaml
from pydantic import ValidationError

from ..errors import ConfigError
from .contract import Contract
from .model import LOWER_IS_BETTER, TASK_METRICS, ModelSpec

__all__ = ["ModelSpec", "Contract", "DEFAULT_MODEL", "LOWER_IS_BETTER", "TASK_METRICS", "SpecError",
           "models_dir", "spec_path", "load_spec", "contract", "available_models", "activate",
           "set_process_model", "active_model", "active", "resolve_entry_point", "add_resolver", "using"]

DEFAULT_MODEL = "readmission-30d"
REPO_ROOT = Path(__file__).resolve().parents[2]


class SpecError(ConfigError):
    """A model spec that cannot be used: one line naming the file and the key."""


def models_dir() -> Path:
    """Where specs live: RETRAINER_MODELS_DIR, else `models/` in the repo."""
    return Path(os.environ.get("RETRAINER_MODELS_DIR") or REPO_ROOT / "models")


def spec_path(name: str) -> Path:
    return models_dir() / f"{name}.yaml"


def available_models() -> list[str]:
    d = models_dir()
    return sorted(p.stem for p in d.glob("*.yaml")) if d.is_dir() else []


class _UniqueKeyLoader(yaml.SafeLoader):
    """A YAML loader that refuses a key given twice in one mapping (PyYAML keeps the last)."""


def _mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: set = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise SpecError(f"{key!r} is listed twice (line {key_node.start_mark.line + 1})")
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def parse_spec(text: str, where: str = "<spec>") -> ModelSpec:
    try:
        raw = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except SpecError as exc:
        raise SpecError(f"model spec {where}: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" (line {mark.line + 1})" if mark else ""
        raise SpecError(f"model spec {where}: not valid YAML{at}: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(raw, dict):
        raise SpecError(f"model spec {where}: expected a mapping of keys, got {type(raw).__name__}")
    try:
        return ModelSpec.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        more = f" (and {len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else ""
        raise SpecError(f"model spec {where}: {key + ': ' if key else ''}{msg}{more}") from None


def load_spec(name_or_path: str | Path) -> ModelSpec:
    """The spec of model `name` (from `models_dir()`), or of a YAML file path."""
    text_path = Path(name_or_path)
    if text_path.suffix in (".yaml", ".yml"):
        path = text_path
    else:
        path = spec_path(str(name_or_path))
    return _load(str(path.resolve()), _mtime(path), str(name_or_path))


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return -1


@lru_cache(maxsize=32)
def _load(path: str, mtime: float, asked: str) -> ModelSpec:
    p = Path(path)
    if mtime == -1:
        known = ", ".join(available_models()) or "none"
        raise SpecError(f"unknown model {asked!r}: no spec {p} (models here: {known})")
    spec = parse_spec(p.read_text(), str(p))
    if p.stem != spec.name and p.parent == models_dir().resolve():
        raise SpecError(f"model spec {p}: name {spec.name!r} does not match the file name {p.stem!r}")
    return spec


_CONTRACTS: dict[int, Contract] = {}
_RECENT: dict[str, tuple[float, Contract]] = {}
RECHECK_S = 1.0  # how often a spec file is looked at again for changes (S.* is read on hot paths)


def contract(name_or_path: str | Path) -> Contract:
    """The column contract of a model (one per loaded spec, so its derived lists are computed
    once). The spec file is re-checked for changes at most every RECHECK_S seconds."""
    key = str(name_or_path)
    now = time.monotonic()
    hit = _RECENT.get(key)
    if hit is not None and now - hit[0] < RECHECK_S:
        return hit[1]
    spec = load_spec(name_or_path)
    c = _CONTRACTS.get(id(spec))
    if c is None or c.spec is not spec:
        c = _CONTRACTS[id(spec)] = Contract(spec)
    _RECENT[key] = (now, c)
    return c


# ---- the active model ----------------------------------------------------------------------------

_ACTIVE: contextvars.ContextVar[str | None] = contextvars.ContextVar("retrainer_model", default=None)
_PROCESS: list[str | None] = [None]
_RESOLVERS: list[Callable[[], str | None]] = []


def add_resolver(resolver: Callable[[], str | None]) -> None:
    """Register a function that names the model of the current context, or None (the Prefect
    side registers one that reads the running flow's `model` parameter, so a flow run's model
    ends with the run instead of leaking into its caller)."""
    if resolver not in _RESOLVERS:
        _RESOLVERS.append(resolver)


def active_model() -> str:
    """`using`/`activate` in this context, else a resolver's answer (the running flow's `model`),
    else the process's model, else RETRAINER_MODEL_NAME, else the default model."""
    name = _ACTIVE.get()
    if name:
        return name
    for resolve in _RESOLVERS:
        name = resolve()
        if name:
            return name
    return _PROCESS[0] or os.environ.get("RETRAINER_MODEL_NAME") or DEFAULT_MODEL


def active() -> Contract:
    return contract(active_model())


def activate(name: str | None) -> str:
    """Make `name` (None: the process's model) the active model of this context; checks the spec
    first, so an unknown model is one error line before anything runs. Returns the name."""
    name = name or _PROCESS[0] or os.environ.get("RETRAINER_MODEL_NAME") or DEFAULT_MODEL
    load_spec(name)
    _ACTIVE.set(name)
    return name


@contextmanager
def using(name: str):
    """Run a block with `name` active (tests, and code that handles two models in turn)."""
    load_spec(name)
    token = _ACTIVE.set(name)
    try:
        yield contract(name)
    finally:
        _ACTIVE.reset(token)


def set_process_model(name: str | None) -> None:
    """The model of this whole process (a serving process), for threads that never ran
    `activate`. None clears it."""
    if name is not None:
        load_spec(name)
    _PROCESS[0] = name


def resolve_entry_point(ref: str, what: str = "entry point") -> Any:
    """Import "package.module:function" and return the callable; one SpecError line otherwise."""
    mod_name, _, fn_name = ref.partition(":")
    try:
        mod = importlib.import_module(mod_name)
    except Exception as exc:  # ImportError, or the module failing at import
        raise SpecError(f"{what} {ref!r} cannot be imported: {type(exc).__name__}: {exc}") from None
    fn = getattr(mod, fn_name, None)
    if not callable(fn):
        raise SpecError(f"{what} {ref!r}: {mod_name} has no function {fn_name!r}")
    return fn
