"""`check_definition`: every problem of a definition, as a list, without raising."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from fsm.definition import Definition, load_definition
from fsm.errors import DefinitionError


def check_definition(
    source: Definition | Mapping[str, Any] | str | os.PathLike[str],
    *,
    known_guards: Iterable[str] = (),
    known_callbacks: Iterable[str] | None = None,
) -> list[str]:
    """Every problem of a definition (a `Definition`, a raw mapping or a YAML/JSON file path).

    Returns an empty list for a valid definition. Guards other than the built-in ones must be
    named in `known_guards`; when `known_callbacks` is given, `after` callbacks must be in it.
    A `Definition` built by hand (bypassing `from_dict`) is re-validated from its normal form.
    """
    guards = frozenset(known_guards)
    try:
        if isinstance(source, Definition):
            definition = Definition.from_dict(source.to_dict(), known_guards=guards)
        elif isinstance(source, Mapping):
            definition = Definition.from_dict(source, known_guards=guards)
        else:
            definition = load_definition(Path(source), known_guards=guards)
    except DefinitionError as exc:
        return list(exc.problems)
    problems: list[str] = []
    if known_callbacks is not None:
        callbacks = frozenset(known_callbacks)
        for index, t in enumerate(definition.transitions):
            problems += [
                f"transitions[{index}] ({t.trigger}): unknown callback {name!r}"
                for name in t.after
                if name not in callbacks
            ]
    return problems
