"""The settings every engine-backed mlos_bench service shares, from its JSON config.

Each service names the config keys it honours and the upstream keys it accepts but cannot
apply (with the reason, logged once when the service is created), so any service config
mlos_bench ships loads with only its `class` changed, and a typo is still an error.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

#: config keys every service understands (mlos_bench's names where it has one)
COMMON_KEYS = frozenset(
    {"db", "pollInterval", "pollTimeout", "refreshScale", "driveLoop", "vmName", "outputLines"}
)
#: the environment variable that names the database when the config does not
DB_ENV = "FSM_DB"


def lookup(config: Mapping[str, Any], global_config: Mapping[str, Any] | None, key: str) -> Any:
    """A service setting: the service's config first, then mlos_bench's globals."""
    if key in config:
        return config[key]
    return (global_config or {}).get(key)


def default_db_url() -> str:
    """`$FSM_DB`, else a database at a stable per-user location (platformdirs' user data
    directory, e.g. `~/.local/share/fsm/mlos.db`): never relative to the working directory, so
    a teardown started from another directory finds the hosts a setup recorded."""
    from_env = os.environ.get(DB_ENV)
    if from_env:
        return from_env
    import platformdirs

    folder = Path(platformdirs.user_data_dir("fsm", appauthor=False))
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    return f"sqlite:///{folder / 'mlos.db'}"


def positive(value: Any, key: str, default: float) -> float:
    """A positive number from a config value (numbers, or numeric strings from a command line)."""
    if value is None:
        return default
    if isinstance(value, str):  # mlos_bench passes command-line values as strings
        try:
            value = float(value)
        except ValueError:
            raise ValueError(f"{key} must be a positive number, got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ValueError(f"{key} must be a positive number, got {value!r}")
    return float(value)


def check_keys(
    owner: str,
    config: Mapping[str, Any],
    honoured: frozenset[str],
    ignored: Mapping[str, str],
) -> None:
    """Refuse unknown keys; log each accepted-but-ignored key with the reason."""
    unknown = set(config) - COMMON_KEYS - honoured - set(ignored)
    if unknown:
        known = sorted(COMMON_KEYS | honoured | set(ignored))
        raise ValueError(f"{owner}: unknown config keys {sorted(unknown)}; known: {known}")
    for key in sorted(set(config) & set(ignored)):
        log.info("%s: config key %r is accepted and ignored: %s", owner, key, ignored[key])


@dataclass(frozen=True)
class ServiceSettings:
    #: the engine's database URL (default: `default_db_url()`)
    db: str
    #: seconds between two looks at a pending operation (mlos_bench's default: 4)
    poll_interval: float = 4.0
    #: how long a wait_* call waits before it returns TIMED_OUT (mlos_bench's default: 300)
    poll_timeout: float = 300.0
    #: scales the lifecycles' refresh intervals (a test runs with 0.01)
    refresh_scale: float = 1.0
    #: whether waits tick their own worker (False: an `fsm run` keeps the database current)
    drive_loop: bool = True
    #: stdout / stderr as lists of lines (None: the service's upstream shape)
    output_lines: bool | None = None

    @classmethod
    def from_config(
        cls, config: Mapping[str, Any], global_config: Mapping[str, Any] | None
    ) -> ServiceSettings:
        db = lookup(config, global_config, "db")
        if db is not None and not isinstance(db, str):
            raise ValueError(f"db must be a database URL, got {db!r}")
        drive = lookup(config, global_config, "driveLoop")
        lines = lookup(config, global_config, "outputLines")
        for key, value in (("driveLoop", drive), ("outputLines", lines)):
            if value is not None and not isinstance(value, bool):
                raise ValueError(f"{key} must be true or false, got {value!r}")
        return cls(
            db=db or default_db_url(),
            poll_interval=positive(
                lookup(config, global_config, "pollInterval"), "pollInterval", 4
            ),
            poll_timeout=positive(lookup(config, global_config, "pollTimeout"), "pollTimeout", 300),
            refresh_scale=positive(
                lookup(config, global_config, "refreshScale"), "refreshScale", 1.0
            ),
            drive_loop=True if drive is None else drive,
            output_lines=lines,
        )
