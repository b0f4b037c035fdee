"""What every `fsm` command shares: the error boundary, database URLs, plain or rich output.

Errors are one line on stderr: exit 2 for bad arguments (including a malformed or unsupported
database URL), 1 for everything else (a problem found, an unreachable or corrupt database, a
port in use). Messages never echo a database URL with its password, nor one that could not be
parsed (it may hold a password in a place the parser did not recognise).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Annotated, NoReturn, TypeVar

import typer
from rich import box
from rich.console import Console, RenderableType
from rich.table import Table
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from fsm.engine import Engine
from fsm.errors import FsmError, StorageError
from storage.database import DEFAULT_URL, ENV_VAR, resolve_url

_DB_HELP = f"database URL [default: ${ENV_VAR} or {DEFAULT_URL}]"
DbOption = Annotated[str | None, typer.Option("--db", help=_DB_HELP, show_default=False)]
JsonOption = Annotated[bool, typer.Option("--json", help="machine-readable output")]
_PLAIN_WIDTH = 10_000  # not a terminal: one record per line, for grep and diff
_DRIVERS = {"sqlite", "sqlite+pysqlite", "postgresql", "postgres", "postgresql+psycopg"}
#: the longest span any time option accepts (ten years); longer is a mistake, and overflows
MAX_SECONDS = 10 * 365 * 24 * 3600.0

N = TypeVar("N", int, float, None)


class UsageProblem(Exception):
    """A bad argument found after parsing (unknown lifecycle, malformed URL): exit 2."""


# -- the error boundary ----------------------------------------------------------------------


def one_line(text: object) -> str:
    return " ".join(str(text).split())


def describe(exc: BaseException) -> str:
    """An exception as one line a user can act on (an OSError: what failed, on which file)."""
    if isinstance(exc, OSError) and exc.strerror:
        where = f": {exc.filename}" if exc.filename else ""
        return one_line(f"{exc.strerror}{where}")
    return one_line(exc) or type(exc).__name__


def fail(message: str, code: int = 1) -> NoReturn:
    typer.echo(f"fsm: error: {one_line(message)}", err=True)
    raise typer.Exit(code)


@contextmanager
def reporting() -> Iterator[None]:
    """Turn expected failures into one line on stderr and an exit code, never a traceback."""
    try:
        yield
    except UsageProblem as exc:
        fail(str(exc), 2)
    except (StorageError, FsmError, OSError) as exc:
        fail(describe(exc), 1)


def utf8(value: str, what: str) -> str:
    """An argument that goes to the database: bytes that are not UTF-8 (a Linux argv may hold
    any) cannot name anything stored there."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise UsageProblem(f"{what} is not valid UTF-8 text") from None
    return value


def finite(value: N) -> N:
    """An option callback: click's ranges let NaN through (every comparison with it is False)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise typer.BadParameter("must be a finite number")
    return value


# -- databases -------------------------------------------------------------------------------


def checked_url(db: str | None) -> str:
    """The database URL to use, refused (exit 2) unless it is a well-formed SQLite or
    PostgreSQL URL with a valid port."""
    chosen = db or os.environ.get(ENV_VAR) or DEFAULT_URL
    source = "--db" if db else f"${ENV_VAR}" if os.environ.get(ENV_VAR) else "the default"
    try:
        parsed = make_url(chosen)
        port = parsed.port
    except (ArgumentError, ValueError, TypeError) as exc:
        raise UsageProblem(
            f"not a database URL ({source}): use sqlite:///PATH or postgresql://USER@HOST/DB"
        ) from exc
    if parsed.drivername not in _DRIVERS:
        raise UsageProblem(
            f"unsupported database {parsed.drivername!r} ({source}): "
            "use sqlite:///PATH or postgresql://USER@HOST/DB"
        )
    if port is not None and not 0 < port < 65536:
        raise UsageProblem(f"database URL ({source}) has an invalid port {port}")
    try:
        return resolve_url(chosen)
    except (StorageError, ArgumentError, ValueError) as exc:
        raise UsageProblem(f"not a database URL ({source})") from exc


def open_for_reading(db: str | None) -> Engine:
    """An engine on an existing fsm database: nothing is created, migrated or written."""
    return Engine.open_existing(checked_url(db))


@contextmanager
def reading(db: str | None) -> Iterator[Engine]:
    engine = open_for_reading(db)
    try:
        yield engine
    finally:
        engine.close()


# -- output ----------------------------------------------------------------------------------


def console() -> Console:
    out = Console(highlight=False, markup=False, emoji=False)
    if not out.is_terminal:
        out.width = _PLAIN_WIDTH
    return out


def show(out: Console, renderable: RenderableType = "") -> None:
    """Print; when not a terminal, without the padding rich leaves at the end of lines."""
    if out.is_terminal:
        out.print(renderable)
        return
    with out.capture() as captured:
        out.print(renderable)
    for line in captured.get().splitlines():
        typer.echo(line.rstrip())


def table(out: Console, *columns: str) -> Table:
    """Boxed in a terminal, plain aligned columns otherwise."""
    return Table(
        *columns,
        box=box.ROUNDED if out.is_terminal else None,
        header_style="bold" if out.is_terminal else "",
        pad_edge=out.is_terminal,
    )


def _json_default(value: object) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


def print_json(value: object) -> None:
    typer.echo(json.dumps(value, indent=2, default=_json_default))


def time_text(value: datetime | None) -> str:
    return "" if value is None else value.strftime("%Y-%m-%d %H:%M:%S")
