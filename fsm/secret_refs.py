"""Secrets a backend needs when it acts, passed by reference: never persisted, never logged.

Write `{"$secret": "HF_TOKEN"}` (or `secret_ref("HF_TOKEN")`) where the value belongs, e.g. in
a scheduled command's `container_options.env`. The database, the history and the logs keep only
the reference. The worker that carries the command out resolves it just before it calls the
backend, from its own environment (`FSM_SECRET_HF_TOKEN`) or from a file named `HF_TOKEN` in
`$FSM_SECRETS_DIR` (a mounted Docker or Kubernetes secret); the value lives only in memory.
Only names the operator provided this way can be resolved: a reference cannot read arbitrary
variables of the worker's environment.

A literal secret in arguments that are stored to be executed later is refused
(`SecretInArguments`) rather than masked: masked, the command would run with `***`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fsm import validation
from fsm.errors import FsmError, InvalidInput
from fsm.redaction import _REF_NAME as _NAME
from fsm.redaction import REF_KEY, policy

__all__ = [
    "DIR_ENV",
    "ENV_PREFIX",
    "REF_KEY",
    "SecretInArguments",
    "SecretNotFound",
    "resolve_secrets",
    "secret_ref",
    "storable_arguments",
]

ENV_PREFIX = "FSM_SECRET_"
DIR_ENV = "FSM_SECRETS_DIR"
_MAX_FILE = 64 * 1024


class SecretNotFound(FsmError):
    """A secret reference names a secret the worker was not given; the backend was not called."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(
            f"secret {name!r} is not available to this worker: set ${ENV_PREFIX}{name} or put "
            f"a file {name} in ${DIR_ENV}"
        )


class SecretInArguments(InvalidInput):
    """Arguments to be stored hold a literal secret; nothing was stored."""


def secret_ref(name: str) -> dict[str, str]:
    """A reference to the secret `name`, to put in command arguments instead of its value."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise InvalidInput("secret name", "must be letters, digits and _ (at most 128)")
    return {REF_KEY: name}


def _lookup(name: str, environ: Mapping[str, str]) -> str:
    if not _NAME.fullmatch(name):
        raise InvalidInput("secret name", "must be letters, digits and _ (at most 128)")
    value = environ.get(f"{ENV_PREFIX}{name}")
    if value is not None:
        return value
    folder = environ.get(DIR_ENV)
    if folder:
        try:
            fd = os.open(Path(folder) / name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            raise SecretNotFound(name) from None
        with os.fdopen(fd, "rb") as handle:
            data = handle.read(_MAX_FILE + 1)
        if len(data) > _MAX_FILE:
            raise InvalidInput(f"secret {name}", f"is larger than {_MAX_FILE} bytes")
        return data.decode("utf-8", errors="strict").rstrip("\r\n")
    raise SecretNotFound(name)


def resolve_secrets(value: Any, environ: Mapping[str, str] | None = None) -> Any:
    """A copy of `value` with every `{"$secret": NAME}` replaced by the secret's value."""
    env = os.environ if environ is None else environ
    if isinstance(value, Mapping):
        if len(value) == 1 and REF_KEY in value and isinstance(value[REF_KEY], str):
            return _lookup(value[REF_KEY], env)
        return {k: resolve_secrets(v, env) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [resolve_secrets(v, env) for v in value]
    return value


def _first_difference(given: Any, masked: Any, path: str) -> str | None:
    if isinstance(given, Mapping) and isinstance(masked, Mapping):
        for key, item in given.items():
            found = _first_difference(item, masked.get(key), f"{path}.{key}")
            if found is not None:
                return found
        return None
    if isinstance(given, list) and isinstance(masked, list) and len(given) == len(masked):
        for i, (a, b) in enumerate(zip(given, masked, strict=True)):
            found = _first_difference(a, b, f"{path}[{i}]")
            if found is not None:
                return found
        return None
    return None if given == masked else path


def storable_arguments(arguments: object, field: str = "arguments") -> dict[str, Any]:
    """Command arguments that may be stored to run later: JSON (see `fsm.validation`) with no
    literal secret (pass secrets with `secret_ref`); else `InvalidInput`."""
    plain = validation.json_mapping({} if arguments is None else arguments, field)
    where = _first_difference(plain, policy.redact(plain), field)
    if where is not None:
        raise SecretInArguments(
            where,
            "holds a secret, and scheduled arguments are stored in the database: pass it "
            f'by reference instead ({{"{REF_KEY}": "NAME"}}, resolved by the worker from '
            f"${ENV_PREFIX}NAME)",
        )
    return plain
