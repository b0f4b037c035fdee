"""Guards and callbacks named by import path, so a definition with guards runs without Python.

A definition stays pure data (its version hashes only states and transitions); the code behind
its guard and callback names comes from the run config or from the definition's companion file
next to it, `NAME.hooks.yaml` for `NAME.yaml`::

    guards: {all_healthy: "rules:all_healthy"}      # module:attribute
    callbacks: {notify: "mypkg.hooks:notify"}

Modules are imported from the installed packages first, then from the folder of the file that
names them and the working directory (appended to `sys.path`, so a file there can never shadow
an installed module). Every problem is one line naming the key; nothing is half-loaded.
"""

from __future__ import annotations

import importlib
import re
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fsm.context import BUILTIN_GUARDS, Callback, Guard
from fsm.definition import Definition, load_definition
from fsm.documents import DocumentError, read_document
from fsm.errors import DefinitionError, FsmError
from fsm.lifecycle import Lifecycle

_SPEC = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*$")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,199}$")
_KINDS = ("guards", "callbacks")
COMPANION_SUFFIX = ".hooks.yaml"


class HookError(FsmError):
    """A guard or callback could not be named or imported; nothing was started."""


@dataclass(frozen=True)
class HookSpecs:
    """Names mapped to `module:attribute` paths, not yet imported."""

    guards: Mapping[str, str] = field(default_factory=dict)
    callbacks: Mapping[str, str] = field(default_factory=dict)
    bases: tuple[Path, ...] = ()  # the folders of the files that named them

    def merged(self, other: HookSpecs) -> HookSpecs:
        """`other` wins for a name both give (the run config over a companion file)."""
        return HookSpecs(
            {**self.guards, **other.guards},
            {**self.callbacks, **other.callbacks},
            (*self.bases, *other.bases),
        )


@dataclass(frozen=True)
class Hooks:
    guards: Mapping[str, Guard] = field(default_factory=dict)
    callbacks: Mapping[str, Callback] = field(default_factory=dict)


def parse_specs(raw: Mapping[str, Any], where: str, problems: list[str], base: Path) -> HookSpecs:
    """The `guards` and `callbacks` keys of a config mapping, checked (problems appended)."""
    found: dict[str, dict[str, str]] = {}
    for kind in _KINDS:
        value = raw.get(kind, {})
        found[kind] = {}
        if not isinstance(value, Mapping):
            problems.append(f"{where}{kind} must map names to 'module:attribute' paths")
            continue
        for name, spec in value.items():
            if not (isinstance(name, str) and _NAME.match(name)):
                problems.append(f"{where}{kind}: {str(name)[:60]!r} is not a valid name")
            elif kind == "guards" and name in BUILTIN_GUARDS:
                problems.append(f"{where}guards.{name} is built in and cannot be replaced")
            elif not (isinstance(spec, str) and len(spec) <= 300 and _SPEC.match(spec)):
                shown = repr(spec[:80]) if isinstance(spec, str) else type(spec).__name__
                problems.append(f"{where}{kind}.{name} must be 'module:attribute', got {shown}")
            else:
                found[kind][name] = spec
    return HookSpecs(found["guards"], found["callbacks"], (base,))


def companion_of(definition: Path) -> Path:
    """`deploy.yaml` -> `deploy.hooks.yaml` (next to it)."""
    return definition.with_name(definition.stem + COMPANION_SUFFIX)


def read_companion(definition: Path) -> HookSpecs:
    """The hooks a definition's companion file names (none when there is no such file)."""
    path = companion_of(definition)
    if not path.is_file():
        return HookSpecs(bases=(definition.parent,))
    try:
        raw = read_document(path)
    except DocumentError as exc:
        raise HookError(str(exc)) from exc
    raw = {} if raw is None else raw
    if not isinstance(raw, Mapping):
        raise HookError(f"{path}: must be a mapping with 'guards' and 'callbacks'")
    problems: list[str] = []
    unknown = sorted(str(k) for k in raw if k not in _KINDS)
    if unknown:
        problems.append(f"unknown keys {unknown}; known: {list(_KINDS)}")
    specs = parse_specs(raw, "", problems, path.parent)
    if problems:
        raise HookError(f"{path}: {'; '.join(problems)}")
    return specs


def _importable_from(folders: Iterable[Path]) -> None:
    for folder in folders:
        entry = str(folder.resolve())
        if entry not in sys.path:
            sys.path.append(entry)  # after the installed packages: nothing here shadows them


def import_object(spec: str, where: str, bases: Iterable[Path] = ()) -> Callable[..., Any]:
    """`module:attribute` imported, and callable, or a HookError naming `where`."""
    if not _SPEC.match(spec):
        raise HookError(f"{where} must be 'module:attribute', got {spec[:80]!r}")
    module_name, _, attribute = spec.partition(":")
    _importable_from([*bases, Path.cwd()])
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise HookError(f"{where}: cannot import {module_name!r} ({exc})") from exc
    except Exception as exc:  # the module's own code failed while importing
        raise HookError(
            f"{where}: importing {module_name!r} failed: {type(exc).__name__}: {exc}"
        ) from exc
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise HookError(f"{where}: {module_name!r} has no {attribute!r}") from None
    if not callable(target):
        raise HookError(f"{where}: {spec!r} is a {type(target).__name__}, not a function")
    return target  # type: ignore[no-any-return]


def resolve(specs: HookSpecs) -> Hooks:
    """Import every hook; the first problem raises (nothing is returned half-resolved)."""
    guards = {n: import_object(s, f"guards.{n}", specs.bases) for n, s in specs.guards.items()}
    callbacks = {
        n: import_object(s, f"callbacks.{n}", specs.bases) for n, s in specs.callbacks.items()
    }
    return Hooks(guards, callbacks)


def module_hooks(module_name: str) -> dict[str, Callable[..., Any]]:
    """The public functions a module defines (`--guards MODULE`), by name."""
    if not re.match(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*$", module_name):
        raise HookError(f"--guards: {module_name[:80]!r} is not a module name")
    _importable_from([Path.cwd()])
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        reason = f"{type(exc).__name__}: {exc}"
        raise HookError(f"--guards: cannot import {module_name!r} ({reason})") from exc
    return {
        name: value
        for name, value in vars(module).items()
        if not name.startswith("_")
        and callable(value)
        and getattr(value, "__module__", None) == module.__name__
        and not isinstance(value, type)
    }


def load_lifecycle(path: str | Path, specs: HookSpecs | None = None) -> Lifecycle:
    """A definition file compiled with its hooks: the companion file's, then `specs` over them.

    Raises DefinitionError (its problems) or HookError (an import that failed)."""
    file = Path(path)
    chosen = read_companion(file)
    if specs is not None:
        chosen = chosen.merged(specs)
    load_definition(file, known_guards=chosen.guards)  # its own problems before any import
    hooks = resolve(chosen)
    definition = load_definition(file, known_guards=hooks.guards)
    return Lifecycle(definition, guards=hooks.guards, callbacks=hooks.callbacks)


def _used_names(definition: Definition) -> tuple[set[str], set[str]]:
    guards = {g for t in definition.transitions for g in (*t.guards, *t.unless)}
    callbacks = {c for t in definition.transitions for c in t.after}
    return guards, callbacks


def drawable(definition: Definition) -> Lifecycle:
    """Drawing needs names, not code: every guard and callback is a stand-in."""

    def never(*_args: object) -> bool:
        return False

    def nothing(*_args: object) -> None:
        return None

    guards, callbacks = _used_names(definition)
    return Lifecycle(
        definition,
        guards=dict.fromkeys(guards - set(BUILTIN_GUARDS), never),
        callbacks=dict.fromkeys(callbacks, nothing),
    )


def definition_problems(error: DefinitionError, path: Path) -> str:
    return (
        f"{path} has {len(error.problems)} problem(s), first: {error.problems[0]} "
        f"(see: fsm lint {path})"
    )
