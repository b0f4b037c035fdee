"""The `fsm` command: inspect lifecycles and databases, draw diagrams, run the demo.

Errors are one line on stderr: exit 2 for bad arguments (including a malformed database URL),
1 for everything else (a problem found, an unreachable or corrupt database). Reading commands
never create a database: a SQLite file that does not exist is reported, not made.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich import box
from rich.console import Console, RenderableType
from rich.table import Table
from rich.text import Text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from fsm import cli_runtime, live_demo
from fsm import demo as demo_module
from fsm.definition import Definition, load_definition
from fsm.diagram import DiagramError, duration, render
from fsm.engine import Engine
from fsm.errors import DefinitionError, FsmError, StorageError
from fsm.lifecycle import Lifecycle
from fsm.lifecycles import BUILTIN_NAMES, builtin_lifecycles
from fsm.verify import Violation
from storage.database import DEFAULT_URL, ENV_VAR, redacted, resolve_url, sqlite_path
from storage.errors import DatabaseUnavailable
from storage.records import EntityRow, TransitionRow

app = typer.Typer(
    name="fsm",
    help="Explicit, durable lifecycles for hosts and services.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

_DB_HELP = f"database URL [default: ${ENV_VAR} or {DEFAULT_URL}]"
DbOption = Annotated[str | None, typer.Option("--db", help=_DB_HELP, show_default=False)]
JsonOption = Annotated[bool, typer.Option("--json", help="machine-readable output")]
_PLAIN_WIDTH = 10_000  # not a terminal: one record per line, for grep and diff


class UsageProblem(Exception):
    """A bad argument found after parsing (unknown lifecycle, malformed URL): exit 2."""


class DiagramFormat(StrEnum):
    mermaid = "mermaid"
    dot = "dot"
    svg = "svg"


# -- output ----------------------------------------------------------------------------------


def _console() -> Console:
    console = Console(highlight=False)
    if not console.is_terminal:
        console.width = _PLAIN_WIDTH
    return console


def _show(console: Console, renderable: RenderableType = "") -> None:
    """Print; when not a terminal, without the padding rich leaves at the end of lines."""
    if console.is_terminal:
        console.print(renderable)
        return
    with console.capture() as captured:
        console.print(renderable)
    for line in captured.get().splitlines():
        typer.echo(line.rstrip())


def _table(console: Console, *columns: str) -> Table:
    """Boxed in a terminal, plain aligned columns otherwise."""
    return Table(
        *columns,
        box=box.ROUNDED if console.is_terminal else None,
        header_style="bold" if console.is_terminal else "",
        pad_edge=console.is_terminal,
    )


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _fail(message: str, code: int = 1) -> NoReturn:
    typer.echo(f"fsm: error: {_one_line(message)}", err=True)
    raise typer.Exit(code)


def _json_default(value: object) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


def _print_json(value: object) -> None:
    typer.echo(json.dumps(value, indent=2, default=_json_default))


def _time(value: datetime | None) -> str:
    return "" if value is None else value.strftime("%Y-%m-%d %H:%M:%S")


@contextmanager
def _reporting() -> Iterator[None]:
    """Turn expected failures into one line on stderr and an exit code, never a traceback."""
    try:
        yield
    except UsageProblem as exc:
        _fail(str(exc), 2)
    except (StorageError, FsmError, OSError) as exc:
        _fail(str(exc), 1)


# -- databases -------------------------------------------------------------------------------


def _checked_url(db: str | None) -> str:
    try:
        url = resolve_url(db)
        backend = make_url(url).get_backend_name()
    except (DatabaseUnavailable, ArgumentError) as exc:
        raise UsageProblem(str(exc)) from exc
    if backend not in ("sqlite", "postgresql"):
        raise UsageProblem(
            f"unsupported database {redacted(url)!r}: use sqlite:/// or postgresql://"
        )
    return url


def open_for_reading(db: str | None) -> Engine:
    """An engine on an existing fsm database: nothing is created, migrated or written."""
    return Engine.open_existing(_checked_url(db))


@contextmanager
def _reading(db: str | None) -> Iterator[Engine]:
    engine = open_for_reading(db)
    try:
        yield engine
    finally:
        engine.close()


# -- lifecycle catalogue (built-in plus what the database remembers) -------------------------


@dataclass(slots=True)
class _Known:
    states: list[str]
    terminal: set[str]


def _catalogue(engine: Engine) -> dict[str, _Known]:
    known = {
        name: _Known(list(lc.definition.state_names), set(lc.terminal))
        for name, lc in engine.lifecycles.items()
    }
    for (name, _version), body in sorted(engine.store.definitions().items()):
        entry = known.setdefault(name, _Known([], set()))
        for state in body.get("states", []):
            if state["name"] not in entry.states:
                entry.states.append(state["name"])
            if state.get("terminal"):
                entry.terminal.add(state["name"])
    return known


def _lifecycle_order(name: str) -> tuple[int, str]:
    return (BUILTIN_NAMES.index(name) if name in BUILTIN_NAMES else len(BUILTIN_NAMES), name)


# -- commands: lifecycles --------------------------------------------------------------------


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


@app.command()
def machines(as_json: JsonOption = False) -> None:
    """List the built-in lifecycles."""
    infos = [_machine_info(lc) for lc in builtin_lifecycles().values()]
    if as_json:
        _print_json(infos)
        return
    console = _console()
    table = _table(console, "NAME", "VERSION", "STATES", "TERMINAL", "TIME LIMITS")
    for info in infos:
        limits = ", ".join(f"{s} {duration(v)}" for s, v in info["time_limits"].items())
        table.add_row(
            info["name"],
            info["version"],
            Text(", ".join(info["states"])),
            Text(", ".join(info["terminal"])),
            Text(limits),
        )
    _show(console, table)


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


@app.command()
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
        _print_json({"ok": not failed, "files": results})
    else:
        console = _console()
        for r in results:
            if r["ok"]:
                _show(
                    console,
                    Text.assemble((r["file"], "bold"), ": ok ", f"({r['name']} {r['version']})"),
                )
                continue
            count = len(r["problems"])
            _show(console, Text.assemble((r["file"], "bold"), ": ", (f"{count} problem(s)", "red")))
            for problem in r["problems"]:
                _show(console, Text(f"  - {problem}"))
    if failed:
        raise typer.Exit(1)


def _diagram_source(name_or_file: str) -> Lifecycle:
    builtins = builtin_lifecycles()
    if name_or_file in builtins:
        return builtins[name_or_file]
    path = Path(name_or_file)
    if not path.is_file():
        raise UsageProblem(
            f"unknown lifecycle {name_or_file!r}: neither a built-in "
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


@app.command()
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
) -> None:
    """Draw a lifecycle as Mermaid, DOT or SVG."""
    with _reporting():
        lifecycle = _diagram_source(name_or_file)
        try:
            text = render(lifecycle, fmt.value)
        except DiagramError as exc:
            raise FsmError(str(exc)) from exc
        if output is None:
            typer.echo(text, nl=False)
            return
        output.write_text(text, encoding="utf-8")
        typer.echo(f"wrote {output}", err=True)


# -- commands: databases ---------------------------------------------------------------------


def _entity_json(entity: EntityRow) -> dict[str, Any]:
    return entity._asdict()


def _history_table(console: Console, entity: EntityRow, history: Sequence[TransitionRow]) -> None:
    ended = " (terminal)" if entity.terminal else ""
    _show(
        console,
        Text.assemble(
            (f"{entity.lifecycle} {entity.id}", "bold"),
            f" is {entity.state}{ended}: version {entity.version}, "
            f"{len(history)} transition(s), created {_time(entity.created_at)} UTC",
        ),
    )
    if not history:
        return
    columns = ["SEQ", "OBSERVED (UTC)", "EVENT", "FROM", "TO", "SOURCE"]
    payloads = any(t.payload for t in history)
    table = _table(console, *columns, *(["PAYLOAD"] if payloads else []))
    for t in history:
        cells = [Text(t.event), Text(t.from_state), Text(t.to_state), Text(t.source)]
        if payloads:
            cells.append(Text(json.dumps(t.payload, sort_keys=True) if t.payload else ""))
        table.add_row(str(t.seq), _time(t.observed_at), *cells)
    _show(console, table)


@app.command()
def history(
    entity_id: Annotated[str, typer.Argument(metavar="ID", help="entity id")],
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show an entity and every transition it went through."""
    with _reporting(), _reading(db) as engine:
        entity = engine.get(entity_id)  # EntityNotFound: one line, exit 1
        transitions = engine.store.history(entity_id)
        if as_json:
            _print_json(
                {"entity": _entity_json(entity), "transitions": [t._asdict() for t in transitions]}
            )
            return
        _history_table(_console(), entity, transitions)


def _verify_report(console: Console, violations: Sequence[Violation], entities: int) -> None:
    if not violations:
        mark = "✓ " if console.is_terminal else ""
        _show(
            console,
            Text(f"{mark}verified {entities} entities: no violations", style="green"),
        )
        return
    table = _table(console, "ENTITY", "KIND", "DETAIL")
    for v in violations:
        table.add_row(Text(v.entity_id), v.kind, Text(v.detail))
    _show(console, table)
    _show(console, Text(f"{len(violations)} violation(s) in {entities} entities", style="red"))


@app.command()
def verify(db: DbOption = None, as_json: JsonOption = False) -> None:
    """Replay every stored history against its definition (exit 1 on any violation)."""
    with _reporting(), _reading(db) as engine:
        violations = engine.verify()
        entities = sum(c.total for c in engine.counts())
    if as_json:
        _print_json(
            {
                "ok": not violations,
                "entities": entities,
                "violations": [
                    {"entity_id": v.entity_id, "kind": v.kind, "detail": v.detail}
                    for v in violations
                ],
            }
        )
    else:
        _verify_report(_console(), violations, entities)
    if violations:
        raise typer.Exit(1)


def _status_rows(
    engine: Engine, lifecycle: str | None = None, state: str | None = None
) -> list[dict[str, Any]]:
    known = _catalogue(engine)
    if lifecycle is not None and lifecycle not in known:
        raise UsageProblem(f"unknown lifecycle {lifecycle!r}; known: {', '.join(sorted(known))}")
    if state is not None:
        scope = [known[lifecycle]] if lifecycle is not None else list(known.values())
        if not any(state in k.states for k in scope):
            where = f" in lifecycle {lifecycle!r}" if lifecycle else ""
            raise UsageProblem(f"unknown state {state!r}{where}")
    ordered: list[tuple[tuple[int, str, int, str], dict[str, Any]]] = []
    for c in engine.counts():
        if (lifecycle and c.lifecycle != lifecycle) or (state and c.state != state):
            continue
        entry = known.get(c.lifecycle, _Known([], set()))
        position = entry.states.index(c.state) if c.state in entry.states else len(entry.states)
        row = {
            "lifecycle": c.lifecycle,
            "state": c.state,
            "count": c.total,
            "terminal": c.state in entry.terminal,
        }
        ordered.append(((*_lifecycle_order(c.lifecycle), position, c.state), row))
    return [row for _order, row in sorted(ordered, key=lambda pair: pair[0])]


def _status_table(console: Console, rows: Sequence[Mapping[str, Any]]) -> None:
    if not rows:
        _show(console, "no entities")
        return
    table = _table(console, "LIFECYCLE", "STATE", "ENTITIES")
    table.columns[2].justify = "right"
    previous = None
    for r in rows:
        repeat = r["lifecycle"] != previous or not console.is_terminal  # plain: greppable rows
        name = r["lifecycle"] if repeat else ""
        previous = r["lifecycle"]
        state = Text(r["state"] + (" (terminal)" if r["terminal"] else ""))
        if r["terminal"]:
            state.stylize("dim")
        table.add_row(Text(name, style="bold"), state, str(r["count"]))
    _show(console, table)
    total = sum(r["count"] for r in rows)
    _show(console, f"{total} entit{'y' if total == 1 else 'ies'}")


@app.command()
def status(
    db: DbOption = None,
    as_json: JsonOption = False,
    lifecycle: Annotated[str | None, typer.Option("--lifecycle", "-l", help="only this")] = None,
    state: Annotated[str | None, typer.Option("--state", "-s", help="only this state")] = None,
) -> None:
    """Count entities by lifecycle and state."""
    with _reporting(), _reading(db) as engine:
        rows = _status_rows(engine, lifecycle, state)
    if as_json:
        _print_json({"total": sum(r["count"] for r in rows), "counts": rows})
    else:
        _status_table(_console(), rows)


@app.command()
def demo(
    db: Annotated[
        str,
        typer.Option("--db", help="database URL; a SQLite file is deleted and made afresh"),
    ] = demo_module.DEFAULT_URL,
    scripted: Annotated[
        bool,
        typer.Option("--scripted", help="a fast scripted walk on a manual clock instead"),
    ] = False,
    seconds: Annotated[float, typer.Option("--seconds", min=5, max=600)] = 30.0,
) -> None:
    """Run small local services through the real loop and watch their lifecycles live."""
    console = _console()
    with _reporting():
        url = _checked_url(db)
        if scripted:
            featured, summary = _scripted_demo(console, url)
        else:
            report = live_demo.run(url, console, seconds=seconds)
            featured = report.featured
            summary = f"finished in {report.seconds:.1f} s"
            for file in report.diagram_files:
                summary += f"\nannotated diagram: {file}"
        _show(console)
        with _reading(url) as engine:
            _status_table(console, _status_rows(engine))
            _show(console)
            _history_table(console, engine.get(featured), engine.history(featured))
            _show(console)
            violations = engine.verify()
            _verify_report(console, violations, sum(c.total for c in engine.counts()))
        path = sqlite_path(url)
        where = str(path.resolve()) if path is not None else redacted(url)
        _show(console, f"{summary}\ndatabase: {where}")
        _show(console, f"look around: fsm status --db {redacted(url)}")
    if violations:
        raise typer.Exit(1)


def _scripted_demo(console: Console, url: str) -> tuple[str, str]:
    def say(line: str) -> None:
        _show(console, Text(line, style="dim" if line.startswith("  ") else ""))

    report = demo_module.run(url, say)
    return report.featured, f"{report.events} events applied, {len(report.refused)} refused"


# the runtime commands live in their own module (fsm.cli_runtime)
app.command(name="run")(cli_runtime.run)
app.command(name="watch")(cli_runtime.watch)


# -- entry point -----------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; usage errors become one line on stderr and exit code 2."""
    os.environ.setdefault("PGCONNECT_TIMEOUT", "10")  # an unreachable server fails in seconds
    args = list(sys.argv[1:] if argv is None else argv)
    command = typer.main.get_command(app)
    try:
        result = command.main(args=args or ["--help"], prog_name="fsm", standalone_mode=False)
    except typer.TyperException as exc:  # click's UsageError and friends
        typer.echo(f"fsm: error: {_one_line(exc.format_message())}", err=True)
        return exc.exit_code
    except typer.Abort:
        typer.echo("fsm: aborted", err=True)
        return 1
    except (StorageError, FsmError) as exc:  # a command that forgot `_reporting`
        typer.echo(f"fsm: error: {_one_line(str(exc))}", err=True)
        return 1
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
