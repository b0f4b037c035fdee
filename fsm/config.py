"""`fsm run --config FILE`: the worker's settings, backends and extra lifecycles, validated."""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import yaml

from fsm.errors import FsmError

BACKEND_GROUP = "fsm.backends"
_KEYS = {
    "db",
    "interval",
    "batch_size",
    "lease_seconds",
    "max_backoff",
    "refresh_scale",
    "lifecycles",
    "backends",
    "max_batches_per_tick",
}


class ConfigError(FsmError):
    """The run configuration is malformed; nothing was started."""


@dataclass(frozen=True)
class RunConfig:
    db: str | None = None
    interval: float = 1.0
    batch_size: int = 100
    lease_seconds: float = 30.0
    max_backoff: float = 300.0
    max_batches_per_tick: int = 50
    refresh_scale: float = 1.0
    lifecycles: tuple[str, ...] = ()
    backends: tuple[dict[str, Any], ...] = field(default_factory=lambda: ({"kind": "sim"},))


def load_config(path: str | Path | None) -> RunConfig:
    """Read a YAML config; no file gives the defaults (the simulator drives everything)."""
    if path is None:
        return RunConfig()
    file = Path(path)
    try:
        raw = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise ConfigError(f"cannot read {file}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{file} is not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{file}: the config must be a mapping")
    unknown = sorted(set(raw) - _KEYS)
    if unknown:
        raise ConfigError(f"{file}: unknown keys {unknown}; known: {sorted(_KEYS)}")
    backends = raw.get("backends", [{"kind": "sim"}])
    if not isinstance(backends, list) or not all(
        isinstance(b, dict) and isinstance(b.get("kind"), str) for b in backends
    ):
        raise ConfigError(f"{file}: backends must be a list of mappings with a 'kind'")
    lifecycles = raw.get("lifecycles", [])
    if not isinstance(lifecycles, list) or not all(isinstance(p, str) for p in lifecycles):
        raise ConfigError(f"{file}: lifecycles must be a list of definition files")
    base = file.parent
    try:
        return RunConfig(
            db=raw.get("db"),
            interval=_positive(raw, "interval", 1.0),
            batch_size=int(_positive(raw, "batch_size", 100)),
            lease_seconds=_positive(raw, "lease_seconds", 30.0),
            max_backoff=_positive(raw, "max_backoff", 300.0),
            max_batches_per_tick=int(_positive(raw, "max_batches_per_tick", 50)),
            refresh_scale=_positive(raw, "refresh_scale", 1.0),
            lifecycles=tuple(str(base / p) for p in lifecycles),
            backends=tuple(backends),
        )
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{file}: {exc}") from exc


def _positive(raw: dict[str, Any], key: str, default: float) -> float:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ConfigError(f"{key} must be a positive number, got {value!r}")
    return float(value)


def backend_kinds() -> dict[str, Any]:
    """Backends installed as `fsm.backends` entry points (the project's own and third parties').

    Loaded by name, so `fsm` never imports `backends` (imports flow backends -> fsm)."""
    return {ep.name: ep for ep in entry_points(group=BACKEND_GROUP)}


def make_backend(settings: dict[str, Any]) -> Any:
    kinds = backend_kinds()
    kind = settings["kind"]
    if kind not in kinds:
        raise ConfigError(f"unknown backend kind {kind!r}; installed: {sorted(kinds) or 'none'}")
    factory = kinds[kind].load()
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
