"""What `submit` accepts: a process spec, validated completely before anything starts."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
_PATH = re.compile(r"^/[^\0]*$")
_KEYS = frozenset({"argv", "env", "cwd", "health", "port"})
MAX_ARGV = 4096
MAX_TEXT = 64 * 1024


class SpecError(ValueError):
    """A process spec that cannot be started safely; lists every problem."""


def validate_spec(raw: Any) -> dict[str, Any]:
    """Check a process spec: {argv: [str], env: {NAME: str}, cwd: str, health: {...}, port}."""
    problems: list[str] = []
    if not isinstance(raw, Mapping):
        raise SpecError("the process spec must be a mapping with at least 'argv'")
    argv = raw.get("argv")
    if (
        not isinstance(argv, list)
        or not argv
        or len(argv) > MAX_ARGV
        or not all(isinstance(a, str) and len(a) <= MAX_TEXT for a in argv)
    ):
        problems.append("argv must be a non-empty list of strings (no shell string)")
    elif any("\0" in a for a in argv):
        problems.append("argv must not contain NUL characters")
    env = raw.get("env", {})
    if not isinstance(env, Mapping) or not all(
        isinstance(k, str)
        and _ENV_NAME.match(k)
        and isinstance(v, str)
        and "\0" not in v
        and len(v) <= MAX_TEXT
        for k, v in env.items()
    ):
        problems.append("env must map identifier-like names to strings")
    cwd = raw.get("cwd")
    if cwd is not None and not (isinstance(cwd, str) and _PATH.match(cwd)):
        problems.append("cwd must be an absolute path")
    health = raw.get("health", {"tcp": True})
    if not _health_ok(health):
        problems.append("health must be {http: '/path'} or {tcp: true}")
    port = raw.get("port")
    if port is not None and not (
        isinstance(port, int) and not isinstance(port, bool) and 0 < port < 65536
    ):
        problems.append("port must be a TCP port number, or absent to pick a free one")
    unknown = set(raw) - _KEYS
    if unknown:
        problems.append(f"unknown keys: {sorted(map(str, unknown))}")
    if problems:
        raise SpecError("; ".join(problems))
    return {
        "argv": list(argv or []),
        "env": dict(env),
        "cwd": cwd,
        "health": dict(health),
        "port": port,
    }


def _health_ok(health: Any) -> bool:
    if not isinstance(health, Mapping) or not set(health) <= {"http", "tcp"}:
        return False
    http = health.get("http")
    if http is not None:
        return (
            isinstance(http, str)
            and http.startswith("/")
            and len(http) <= 2048
            and http.isprintable()
            and " " not in http
        )
    return health.get("tcp") is True


def public_spec(spec: Mapping[str, Any]) -> dict[str, Any]:
    """The spec as the history may show it: the names of environment variables, never their
    values (the values go to the process and nowhere else)."""
    return {
        "argv": list(spec["argv"]),
        "env_names": sorted(spec["env"]),
        "cwd": spec["cwd"],
        "health": dict(spec["health"]),
        "port": spec["port"],
    }
