"""The settings every engine-backed mlos_bench service shares, from its JSON config."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

#: config keys every service understands (mlos_bench's names where it has one)
COMMON_KEYS = frozenset({"db", "pollInterval", "pollTimeout", "refreshScale", "driveLoop"})


def lookup(config: Mapping[str, Any], global_config: Mapping[str, Any] | None, key: str) -> Any:
    """A service setting: the service's config first, then mlos_bench's globals."""
    if key in config:
        return config[key]
    return (global_config or {}).get(key)


def _positive(value: Any, key: str, default: float) -> float:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ValueError(f"{key} must be a positive number, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class ServiceSettings:
    #: the engine's database URL (default: $FSM_DB, else sqlite:///fsm.db)
    db: str | None = None
    #: seconds between two looks at a pending operation (mlos_bench's default: 4)
    poll_interval: float = 4.0
    #: how long a wait_* call waits before it returns TIMED_OUT (mlos_bench's default: 300)
    poll_timeout: float = 300.0
    #: scales the lifecycles' refresh intervals (a test runs with 0.01)
    refresh_scale: float = 1.0
    #: whether waits tick their own worker (False: an `fsm run` keeps the database current)
    drive_loop: bool = True

    @classmethod
    def from_config(
        cls, config: Mapping[str, Any], global_config: Mapping[str, Any] | None
    ) -> ServiceSettings:
        db = lookup(config, global_config, "db")
        if db is not None and not isinstance(db, str):
            raise ValueError(f"db must be a database URL, got {db!r}")
        drive = lookup(config, global_config, "driveLoop")
        if drive is not None and not isinstance(drive, bool):
            raise ValueError(f"driveLoop must be true or false, got {drive!r}")
        return cls(
            db=db,
            poll_interval=_positive(
                lookup(config, global_config, "pollInterval"), "pollInterval", 4
            ),
            poll_timeout=_positive(
                lookup(config, global_config, "pollTimeout"), "pollTimeout", 300
            ),
            refresh_scale=_positive(
                lookup(config, global_config, "refreshScale"), "refreshScale", 1.0
            ),
            drive_loop=True if drive is None else drive,
        )
