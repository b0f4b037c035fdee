"""The local backend's settings, validated when the config is loaded (not at the first stop)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MAX_GRACE = 3600.0
MAX_PING_TIMEOUT = 60.0
_KEYS = frozenset({"state_dir", "grace", "ping_timeout", "host"})
_GENERIC = frozenset({"kind", "lifecycles"})  # read by the worker's config, not by us


def default_state_dir() -> Path:
    return Path.home() / ".cache" / "fsm" / "local"


@dataclass(frozen=True)
class LocalSettings:
    state_dir: Path
    grace: float = 5.0
    ping_timeout: float = 1.0
    host: str = "127.0.0.1"

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> LocalSettings:
        """Every problem of a local backend's settings at once; raises ValueError."""
        problems: list[str] = []
        unknown = set(config) - _KEYS - _GENERIC
        if unknown:
            problems.append(f"unknown settings {sorted(map(str, unknown))}; known: {sorted(_KEYS)}")
        grace = _seconds(config, "grace", 5.0, 0.0, MAX_GRACE, problems)
        ping_timeout = _seconds(config, "ping_timeout", 1.0, 0.001, MAX_PING_TIMEOUT, problems)
        host = config.get("host", "127.0.0.1")
        if not isinstance(host, str) or not host or len(host) > 253 or not host.isprintable():
            problems.append("host must be a host name or address, e.g. 127.0.0.1")
            host = "127.0.0.1"
        state_dir = config.get("state_dir")
        if state_dir is None:
            path = default_state_dir()
        elif isinstance(state_dir, str) and state_dir and "\0" not in state_dir:
            path = Path(state_dir).expanduser()
        else:
            problems.append("state_dir must be a directory path")
            path = default_state_dir()
        if problems:
            raise ValueError("; ".join(problems))
        return cls(path, grace, ping_timeout, host)


def _seconds(
    config: Mapping[str, Any],
    key: str,
    default: float,
    low: float,
    high: float,
    problems: list[str],
) -> float:
    value = config.get(key, default)
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or not low <= value <= high
    ):
        shown = repr(value) if isinstance(value, (int, float)) else type(value).__name__
        problems.append(f"{key} must be a number of seconds from {low:g} to {high:g}, got {shown}")
        return default
    return float(value)
