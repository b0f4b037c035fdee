"""`fsm run --config FILE`: the worker's settings, backends and extra lifecycles, validated.

Everything is checked when the file is loaded, before a database is opened or a backend built:
numbers must be finite and within sane bounds, and each backend's own settings are checked by
the backend (its optional `check_config(settings)` classmethod), so a worker never starts with a
setting it would only trip over later. Errors list every problem, on one line, and never echo a
value that could be a secret (numbers are shown, other values only by their type).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from fsm.documents import DocumentError, read_document
from fsm.errors import DefinitionError, FsmError
from fsm.hooks import (
    HookError,
    HookSpecs,
    definition_problems,
    load_lifecycle,
    parse_specs,
    resolve,
)
from fsm.lifecycle import Lifecycle
from fsm.validation import PROFILE_NAME

BACKEND_GROUP = "fsm.backends"
DAY = 86_400.0
#: key: (default, lowest, highest, whole numbers only); a None default means the key may be
#: left out or null: the worker sizes its batches and ticks itself (`fsm.worker_sizing`)
_NUMBERS: dict[str, tuple[float | None, float, float, bool]] = {
    "interval": (1.0, 0.001, DAY, False),
    "batch_size": (None, 1, 100_000, True),
    "lease_seconds": (30.0, 0.1, DAY, False),
    "max_backoff": (300.0, 0.001, 7 * DAY, False),
    "max_batches_per_tick": (None, 1, 100_000, True),
    "refresh_scale": (1.0, 1e-6, 1e6, False),
}
_KEYS = {"db", "lifecycles", "backends", "guards", "callbacks", *_NUMBERS}


class ConfigError(FsmError):
    """The run configuration is malformed; nothing was started."""


@dataclass(frozen=True)
class RunConfig:
    db: str | None = None
    interval: float = 1.0
    batch_size: int | None = None
    lease_seconds: float = 30.0
    max_backoff: float = 300.0
    max_batches_per_tick: int | None = None
    refresh_scale: float = 1.0
    lifecycles: tuple[str, ...] = ()
    backends: tuple[dict[str, Any], ...] = field(default_factory=lambda: ({"kind": "sim"},))
    hooks: HookSpecs = field(default_factory=HookSpecs)  # guards and callbacks by import path


def load_config(path: str | Path | None) -> RunConfig:
    """Read a YAML config; no file gives the defaults (the simulator drives everything)."""
    if path is None:
        return RunConfig()
    file = Path(path)
    try:
        raw = read_document(file)
    except DocumentError as exc:
        raise ConfigError(str(exc)) from exc
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{file}: the config must be a mapping")
    problems: list[str] = []
    unknown = sorted(str(k) for k in set(raw) - _KEYS)
    if unknown:
        problems.append(f"unknown keys {unknown}; known: {sorted(_KEYS)}")
    numbers = {key: _number(raw, key, problems) for key in _NUMBERS}
    sized = {key: _whole(numbers[key]) for key in ("batch_size", "max_batches_per_tick")}
    db = raw.get("db")
    if db is not None and not (isinstance(db, str) and db and "\0" not in db):
        problems.append("db must be a database URL")
        db = None
    lifecycles = raw.get("lifecycles", [])
    if not isinstance(lifecycles, list) or not all(
        isinstance(p, str) and p and "\0" not in p for p in lifecycles
    ):
        problems.append("lifecycles must be a list of definition files")
        lifecycles = []
    backends = _backends(raw.get("backends", [{"kind": "sim"}]), problems)
    base = file.parent
    hooks = parse_specs(raw, "", problems, base)
    if problems:
        raise ConfigError(f"{file}: {'; '.join(problems)}")
    return RunConfig(
        db=db,
        interval=_given(numbers["interval"]),
        batch_size=sized["batch_size"],
        lease_seconds=_given(numbers["lease_seconds"]),
        max_backoff=_given(numbers["max_backoff"]),
        max_batches_per_tick=sized["max_batches_per_tick"],
        refresh_scale=_given(numbers["refresh_scale"]),
        lifecycles=tuple(str(base / p) for p in lifecycles),
        backends=tuple(backends),
        hooks=hooks,
    )


def config_lifecycles(config: RunConfig) -> list[Lifecycle]:
    """The config's extra lifecycles, compiled with their guards and callbacks (each file's
    companion `NAME.hooks.yaml`, then the config's own `guards`/`callbacks` over it)."""
    try:
        resolve(config.hooks)  # every name the config gives imports, used or not
    except HookError as exc:
        raise ConfigError(str(exc)) from exc
    lifecycles = []
    for path in config.lifecycles:
        try:
            lifecycles.append(load_lifecycle(path, config.hooks))
        except DefinitionError as exc:
            raise ConfigError(definition_problems(exc, Path(path))) from exc
        except HookError as exc:
            raise ConfigError(f"{path}: {exc}") from exc
    return lifecycles


def _given(value: float | None) -> float:
    assert value is not None  # only keys with a number as default come here
    return value


def _whole(value: float | None) -> int | None:
    return None if value is None else int(value)


def _number(raw: Mapping[str, Any], key: str, problems: list[str]) -> float | None:
    default, low, high, whole = _NUMBERS[key]
    value = raw.get(key, default)
    if value is None and default is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        problems.append(f"{key} must be a number, got {type(value).__name__}")
        return default
    if whole and not isinstance(value, int):
        problems.append(f"{key} must be a whole number, got {value!r}")
        return default
    if not (math.isfinite(value) and low <= value <= high):
        problems.append(f"{key} must be from {low:g} to {high:g}, got {value!r}")
        return default
    return float(value)


def _backends(raw: Any, problems: list[str]) -> list[dict[str, Any]]:
    if not isinstance(raw, list) or not all(
        isinstance(b, dict) and isinstance(b.get("kind"), str) for b in raw
    ):
        problems.append("backends must be a list of mappings with a 'kind'")
        return []
    kinds = backend_kinds()
    names: set[str] = set()
    for settings in raw:
        kind = settings["kind"]
        name = settings.get("name")
        if name is not None:
            if not (isinstance(name, str) and PROFILE_NAME.match(name)):
                problems.append(
                    f"backend {kind!r}: name must be letters, digits, '_', '.', '-' "
                    "(1 to 100, starting alphanumeric)"
                )
            elif name in names:
                problems.append(f"two backends are named {name!r}")
            names.add(str(name))
        settings = {k: v for k, v in settings.items() if k != "name"}  # the profile, not theirs
        if kind not in kinds:
            problems.append(f"unknown backend kind {kind!r}; installed: {sorted(kinds) or 'none'}")
            continue
        lifecycles = settings.get("lifecycles")
        if lifecycles is not None and not (
            isinstance(lifecycles, list) and all(isinstance(n, str) for n in lifecycles)
        ):
            problems.append(f"backend {kind!r}: lifecycles must be a list of lifecycle names")
        checker = getattr(_factory(kinds[kind], kind), "check_config", None)
        if checker is None:
            continue
        try:
            checker(settings)
        except (TypeError, ValueError) as exc:
            problems.append(f"backend {kind!r}: {exc}")
    return [dict(b) for b in raw]


def backend_kinds() -> dict[str, Any]:
    """Backends installed as `fsm.backends` entry points (the project's own and third parties').

    Loaded by name, so `fsm` never imports `backends` (imports flow backends -> fsm)."""
    return {ep.name: ep for ep in entry_points(group=BACKEND_GROUP)}


def _factory(entry: Any, kind: str) -> Any:
    try:
        return entry.load()
    except ImportError as exc:
        raise ConfigError(f"backend {kind!r} cannot be loaded: {exc}") from exc


def make_backend(settings: dict[str, Any]) -> Any:
    kinds = backend_kinds()
    kind = settings["kind"]
    if kind not in kinds:
        raise ConfigError(f"unknown backend kind {kind!r}; installed: {sorted(kinds) or 'none'}")
    factory = _factory(kinds[kind], kind)
    try:
        backend = factory.from_config(settings)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"backend {kind!r}: {exc}") from exc
    lifecycles = settings.get("lifecycles")
    if lifecycles is not None:
        if not isinstance(lifecycles, list) or not set(lifecycles) <= set(backend.lifecycles):
            raise ConfigError(
                f"backend {kind!r} drives {sorted(backend.lifecycles)}, not {lifecycles!r}"
            )
        backend.lifecycles = frozenset(lifecycles)
    return backend
