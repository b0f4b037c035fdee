"""The `fsm` command: inspect lifecycles and databases, draw diagrams, run workers, the demo.

Errors are one line on stderr: exit 2 for bad arguments (including a malformed database URL),
1 for everything else (a problem found, an unreachable or corrupt database). Reading commands
never create a database: a SQLite file that does not exist is reported, not made. The commands
live in `cli_lifecycles`, `cli_database` and `cli_runtime`; `cli_support` holds the boundary
that turns errors into that one line.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _dist_version
from typing import Annotated

import typer
from rich.console import Console
from rich.text import Text

from fsm import cli_database, cli_lifecycles, cli_runtime, cli_supervise, cli_verbs, live_demo
from fsm import demo as demo_module
from fsm.cli_support import checked_url, console, describe, finite, one_line, reading, reporting
from fsm.cli_support import show as _show
from fsm.errors import FsmError, StorageError
from fsm.web import serve as web_serve
from storage.database import redacted, sqlite_path

app = typer.Typer(
    name="fsm",
    help="Explicit, durable lifecycles for hosts and services.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

app.command(name="machines")(cli_lifecycles.machines)
app.command(name="lint")(cli_lifecycles.lint)
app.command(name="diagram")(cli_lifecycles.diagram)
app.command(name="status")(cli_database.status)
app.command(name="history")(cli_database.history)
app.command(name="verify")(cli_database.verify)
app.command(name="run")(cli_runtime.run)
app.command(name="watch")(cli_runtime.watch)
app.command(name="serve")(web_serve.serve)
app.command(name="create")(cli_verbs.create)
app.command(name="command")(cli_verbs.command)
app.command(name="submit")(cli_verbs.submit)
app.command(name="stop")(cli_verbs.stop)
app.command(name="cancel")(cli_verbs.cancel)
app.command(name="commands")(cli_verbs.commands)
cli_supervise.register(app)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"fsm {package_version()}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="print the version"),
    ] = False,
) -> None:
    """Explicit, durable lifecycles for hosts and services."""


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
    seconds: Annotated[float, typer.Option("--seconds", min=5, max=600, callback=finite)] = 30.0,
) -> None:
    """Run small local services through the real loop and watch their lifecycles live."""
    out = console()
    with reporting():
        url = checked_url(db)
        if scripted:
            featured, summary = _scripted_demo(out, url)
        else:
            report = live_demo.run(url, out, seconds=seconds)
            featured = report.featured
            summary = f"finished in {report.seconds:.1f} s"
            for file in report.diagram_files:
                summary += f"\nannotated diagram: {file}"
            if report.no_svg is not None:
                summary += f"\nno SVG diagram: {report.no_svg}"
        _show(out)
        with reading(url) as engine:
            cli_database.status_table(out, cli_database.status_rows(engine))
            _show(out)
            cli_database.history_table(out, engine.get(featured), engine.history(featured))
            _show(out)
            violations = engine.verify()
            cli_database.verify_report(out, violations, sum(c.total for c in engine.counts()))
        path = sqlite_path(url)
        where = str(path.resolve()) if path is not None else redacted(url)
        _show(out, f"{summary}\ndatabase: {where}")
        _show(out, f"look around: fsm status --db {redacted(url)}")
        _show(out, f"in a browser: fsm serve --db {redacted(url)}")
    if violations:
        raise typer.Exit(1)


def package_version() -> str:
    try:
        return _dist_version("fsm-lifecycles")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


def _scripted_demo(out: Console, url: str) -> tuple[str, str]:
    def say(line: str) -> None:
        _show(out, Text(line, style="dim" if line.startswith("  ") else ""))

    report = demo_module.run(url, say)
    return report.featured, f"{report.events} events applied, {len(report.refused)} refused"


# -- entry point -----------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; every error becomes one line on stderr (exit 2 for usage, else 1)."""
    os.environ.setdefault("PGCONNECT_TIMEOUT", "10")  # an unreachable server fails in seconds
    args = list(sys.argv[1:] if argv is None else argv)
    command = typer.main.get_command(app)
    try:
        result = command.main(args=args or ["--help"], prog_name="fsm", standalone_mode=False)
    except typer.TyperException as exc:  # click's UsageError and friends
        typer.echo(f"fsm: error: {one_line(exc.format_message())}", err=True)
        return exc.exit_code
    except typer.Abort:
        typer.echo("fsm: aborted", err=True)
        return 1
    except (StorageError, FsmError, OSError) as exc:  # a command that forgot `reporting`
        typer.echo(f"fsm: error: {describe(exc)}", err=True)
        return 1
    except Exception as exc:  # a bug: still one line, and say what to report
        typer.echo(
            f"fsm: internal error: {type(exc).__name__}: {describe(exc)} "
            "(please report it; FSM_TRACEBACK=1 shows the traceback)",
            err=True,
        )
        if os.environ.get("FSM_TRACEBACK"):
            raise
        return 1
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
