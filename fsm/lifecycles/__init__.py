"""The built-in lifecycles (service, host, operation, supervisor), shipped as YAML data."""

from __future__ import annotations

from importlib import resources

import yaml

from fsm.definition import Definition
from fsm.lifecycle import Lifecycle

BUILTIN_NAMES = ("service", "host", "operation", "supervisor")


def builtin_definition(name: str) -> Definition:
    """The built-in definition called `name` (one of `BUILTIN_NAMES`)."""
    if name not in BUILTIN_NAMES:
        raise KeyError(name)
    text = resources.files(__name__).joinpath(f"{name}.yaml").read_text(encoding="utf-8")
    return Definition.from_dict(yaml.safe_load(text))


def builtin_lifecycles() -> dict[str, Lifecycle]:
    """Fresh compiled copies of every built-in lifecycle."""
    return {name: Lifecycle(builtin_definition(name)) for name in BUILTIN_NAMES}
