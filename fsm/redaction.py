"""Keep secrets out of persisted history: payload keys that look like secrets are masked."""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

REDACTED = "***"

_SECRET_WORDS = frozenset(
    {
        "password",
        "passwd",
        "pwd",
        "passphrase",
        "secret",
        "secrets",
        "token",
        "tokens",
        "key",
        "keys",
        "apikey",
        "credential",
        "credentials",
        "auth",
        "authorization",
        "cookie",
        "signature",
        "sas",
        "privatekey",
        "private",
    }
)
_SECRET_SUBSTRINGS = ("password", "secret", "token", "credential", "apikey", "privatekey")
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_SPLIT = re.compile(r"[^A-Za-z0-9]+")


@lru_cache(maxsize=8192)
def is_secret_key(key: str) -> bool:
    """True for keys such as `password`, `api_key`, `accessToken`, `client-secret`, `sshKey`."""
    words = [w.lower() for w in _SPLIT.split(_CAMEL.sub("_", key)) if w]
    if any(w in _SECRET_WORDS for w in words):
        return True
    squashed = "".join(words)
    return any(s in squashed for s in _SECRET_SUBSTRINGS)


def redact(value: Any) -> Any:
    """A copy of `value` in which every secret-looking key of every nested mapping is masked."""
    if isinstance(value, Mapping):
        return {
            str(k): (REDACTED if is_secret_key(str(k)) else redact(v)) for k, v in value.items()
        }
    if isinstance(value, (list, tuple)):
        return [redact(v) for v in value]
    return value
