"""`fsm machines`, `fsm lint`, `fsm diagram`: the lifecycles themselves (no database)."""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.text import Text

from fsm.cli_support import JsonOption, UsageProblem, console, print_json, reporting, show, table
from fsm.config import config_lifecycles, load_config
from fsm.definition import load_definition
from fsm.diagram import DiagramError, duration, render
from fsm.errors import DefinitionError, FsmError
from fsm.hooks import (
    HookError,
    HookSpecs,
    definition_problems,
    drawable,
    module_hooks,
    read_companion,
    resolve,
)
from fsm.lifecycle import Lifecycle
from fsm.lifecycles import BUILTIN_NAMES, builtin_lifecycles


class DiagramFormat(StrEnum):
    mermaid = "mermaid"
    dot = "dot"
    svg = "svg"


def _machine_info(lc: Lifecycle, source: str) -> dict[str, Any]:
    d = lc.definition
    return {
        "name": d.name,
        "source": source,
        "version": d.version,
        "description": " ".join(d.description.split()),
        "initial": d.initial,
        "states": list(d.state_names),
        "terminal": [s for s in d.state_names if s in d.terminal_states],
        "time_limits": {s.name: s.time_limit for s in d.states if s.time_limit is not None},
        "triggers": list(d.triggers),
    }


def machines(
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            envvar="FSM_CONFIG",
            help="also the run config's lifecycles",
            show_default=False,
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """List the registered lifecycles: the built-in ones and the run config's."""
    with reporting():
        settings = load_config(config)
        extra = list(zip(settings.lifecycles, config_lifecycles(settings), strict=True))
    infos = [_machine_info(lc, "built-in") for lc in builtin_lifecycles().values()]
    infos += [_machine_info(lc, path) for path, lc in extra]
    if as_json:
        print_json(infos)
        return
    out = console()
    grid = table(out, "NAME", "VERSION", "SOURCE", "STATES", "TERMINAL", "TIME LIMITS")
    for info in infos:
        limits = ", ".join(f"{s} {duration(v)}" for s, v in info["time_limits"].items())
        grid.add_row(
            info["name"],
            info["version"],
            Text(info["source"]),
            Text(", ".join(info["states"])),
            Text(", ".join(info["terminal"])),
            Text(limits),
        )
    show(out, grid)


GuardOption = Annotated[
    list[str] | None,
    typer.Option("--guard", help="a guard name your code provides (repeatable)"),
]
GuardsOption = Annotated[
    list[str] | None,
    typer.Option("--guards", metavar="MODULE", help="a module whose functions are guards"),
]


def _known_names(guard: Sequence[str] | None, modules: Sequence[str] | None) -> set[str]:
    """`--guard NAME`s and the public functions of each `--guards MODULE`."""
    names = set(guard or [])
    for module in modules or []:
        try:
            names |= set(module_hooks(module))
        except HookError as exc:
            raise UsageProblem(str(exc)) from exc
    return names


def _lint_one(path: Path, guards: set[str]) -> dict[str, Any]:
    problems: list[str] = []
    try:
        companion = read_companion(path)
    except HookError as exc:
        companion, problems = HookSpecs(), [str(exc)]
    try:
        definition = load_definition(path, known_guards=guards | set(companion.guards))
    except DefinitionError as exc:
        problems += list(exc.problems)
    else:
        try:
            resolve(companion)  # the companion's import paths must import
        except HookError as exc:
            problems.append(str(exc))
    if problems:
        return {"file": str(path), "ok": False, "problems": problems}
    return {
        "file": str(path),
        "ok": True,
        "name": definition.name,
        "version": definition.version,
        "problems": [],
    }


def lint(
    files: Annotated[
        list[Path], typer.Argument(metavar="FILE...", help="YAML or JSON lifecycle definitions")
    ],
    guard: GuardOption = None,
    guards: GuardsOption = None,
    as_json: JsonOption = False,
) -> None:
    """Check lifecycle definitions and print every problem (exit 1 if there is any).

    Guards are known by `--guard NAME`, `--guards MODULE` or the file's companion
    `NAME.hooks.yaml` (whose import paths must import)."""
    with reporting():
        known = _known_names(guard, guards)
    results = [_lint_one(path, known) for path in files]
    failed = [r for r in results if not r["ok"]]
    if as_json:
        print_json({"ok": not failed, "files": results})
    else:
        out = console()
        for r in results:
            if r["ok"]:
                show(
                    out,
                    Text.assemble((r["file"], "bold"), ": ok ", f"({r['name']} {r['version']})"),
                )
                continue
            count = len(r["problems"])
            show(out, Text.assemble((r["file"], "bold"), ": ", (f"{count} problem(s)", "red")))
            for problem in r["problems"]:
                show(out, Text(f"  - {problem}"))
    if failed:
        raise typer.Exit(1)


def _diagram_source(name_or_file: str, known: set[str]) -> Lifecycle:
    builtins = builtin_lifecycles()
    if name_or_file in builtins:
        return builtins[name_or_file]
    path = Path(name_or_file)
    if not path.is_file():
        raise UsageProblem(
            f"unknown lifecycle {name_or_file[:200]!r}: neither a built-in "
            f"({', '.join(BUILTIN_NAMES)}) nor a definition file"
        )
    names = known | set(read_companion(path).guards)
    try:
        definition = load_definition(path, known_guards=names)
    except DefinitionError as exc:
        raise FsmError(definition_problems(exc, path)) from exc
    return drawable(definition)


def diagram(
    name_or_file: Annotated[
        str,
        typer.Argument(metavar="NAME_OR_FILE", help="built-in lifecycle name or definition file"),
    ],
    fmt: Annotated[
        DiagramFormat, typer.Option("--format", "-f", help="output format")
    ] = DiagramFormat.mermaid,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="write here instead of stdout")
    ] = None,
    guard: GuardOption = None,
    guards: GuardsOption = None,
    db: Annotated[
        str | None,
        typer.Option("--db", help="annotate with this database's live numbers", show_default=False),
    ] = None,
    since: Annotated[
        str | None,
        typer.Option("--since", help="with --db: count moves in this window (hour, day, 90m, all)"),
    ] = None,
) -> None:
    """Draw a lifecycle as Mermaid, DOT or SVG; with --db, entities per state and moves fired
    (guards need names only: `--guard NAME`, `--guards MODULE` or the file's companion
    `NAME.hooks.yaml`)."""
    with reporting():
        lifecycle = _diagram_source(name_or_file, _known_names(guard, guards))
        counts = fired = None
        if db is not None:
            counts, fired = _live_numbers(lifecycle, db, since or "all")
        elif since is not None:
            raise UsageProblem("--since needs --db (the database whose moves are counted)")
        try:
            text = render(lifecycle, fmt.value, counts=counts, fired=fired)
        except DiagramError as exc:
            raise FsmError(str(exc)) from exc
        if output is None:
            typer.echo(text, nl=False)
            return
        output.write_text(text, encoding="utf-8")
        typer.echo(f"wrote {output}", err=True)


def _live_numbers(
    lifecycle: Lifecycle, db: str, since: str
) -> tuple[dict[str, int], dict[tuple[str, str, str], int]]:
    """The web overview's overlay (entities per state, moves fired since) for one lifecycle."""
    from datetime import UTC, datetime

    from fsm.cli_support import reading
    from fsm.web.overlay import WindowError, live_overlay, window_seconds

    try:
        window = window_seconds(since)
    except WindowError as exc:
        raise UsageProblem(str(exc)) from None
    with reading(db) as engine:
        lifecycles = {**engine.lifecycles, lifecycle.name: lifecycle}
        overlay = live_overlay(engine.store, lifecycles, lifecycle.name, window, datetime.now(UTC))
    return overlay.counts, dict(overlay.fired)
