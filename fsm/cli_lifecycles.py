"""`fsm machines`, `fsm lint`, `fsm diagram`: the lifecycles themselves (no database)."""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.text import Text

from fsm.cli_support import JsonOption, UsageProblem, console, print_json, reporting, show, table
from fsm.definition import Definition, load_definition
from fsm.diagram import DiagramError, duration, render
from fsm.errors import DefinitionError, FsmError
from fsm.lifecycle import Lifecycle
from fsm.lifecycles import BUILTIN_NAMES, builtin_lifecycles


class DiagramFormat(StrEnum):
    mermaid = "mermaid"
    dot = "dot"
    svg = "svg"


def _machine_info(lc: Lifecycle) -> dict[str, Any]:
    d = lc.definition
    return {
        "name": d.name,
        "version": d.version,
        "description": " ".join(d.description.split()),
        "initial": d.initial,
        "states": list(d.state_names),
        "terminal": [s for s in d.state_names if s in d.terminal_states],
        "time_limits": {s.name: s.time_limit for s in d.states if s.time_limit is not None},
        "triggers": list(d.triggers),
    }


def machines(as_json: JsonOption = False) -> None:
    """List the built-in lifecycles."""
    infos = [_machine_info(lc) for lc in builtin_lifecycles().values()]
    if as_json:
        print_json(infos)
        return
    out = console()
    grid = table(out, "NAME", "VERSION", "STATES", "TERMINAL", "TIME LIMITS")
    for info in infos:
        limits = ", ".join(f"{s} {duration(v)}" for s, v in info["time_limits"].items())
        grid.add_row(
            info["name"],
            info["version"],
            Text(", ".join(info["states"])),
            Text(", ".join(info["terminal"])),
            Text(limits),
        )
    show(out, grid)


def _lint_one(path: Path, guards: Sequence[str]) -> dict[str, Any]:
    try:
        definition = load_definition(path, known_guards=guards)
    except DefinitionError as exc:
        return {"file": str(path), "ok": False, "problems": list(exc.problems)}
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
    guard: Annotated[
        list[str] | None, typer.Option("--guard", help="a guard your code registers (repeatable)")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Check lifecycle definitions and print every problem (exit 1 if there is any)."""
    results = [_lint_one(path, guard or []) for path in files]
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


def _diagram_source(name_or_file: str) -> Lifecycle:
    builtins = builtin_lifecycles()
    if name_or_file in builtins:
        return builtins[name_or_file]
    path = Path(name_or_file)
    if not path.is_file():
        raise UsageProblem(
            f"unknown lifecycle {name_or_file[:200]!r}: neither a built-in "
            f"({', '.join(BUILTIN_NAMES)}) nor a definition file"
        )
    try:
        definition = load_definition(path)
    except DefinitionError as exc:
        raise FsmError(
            f"{path} has {len(exc.problems)} problem(s), first: {exc.problems[0]} "
            f"(see: fsm lint {path})"
        ) from exc
    return _drawable(definition)


def _drawable(definition: Definition) -> Lifecycle:
    """Callbacks only run when events apply; a drawing needs their names, not their code."""

    def nothing(*_args: object) -> None:
        return None

    names = {c for t in definition.transitions for c in t.after}
    return Lifecycle(definition, callbacks=dict.fromkeys(names, nothing))


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
    db: Annotated[
        str | None,
        typer.Option("--db", help="annotate with this database's live numbers", show_default=False),
    ] = None,
    since: Annotated[
        str | None,
        typer.Option("--since", help="with --db: count moves in this window (hour, day, 90m, all)"),
    ] = None,
) -> None:
    """Draw a lifecycle as Mermaid, DOT or SVG; with --db, entities per state and moves fired."""
    with reporting():
        lifecycle = _diagram_source(name_or_file)
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
