"""`fsm supervise start|list|show` and `fsm stop`: services kept running, from the shell.

`start` records a supervisor from a YAML/JSON file (what every attempt is created with, and
the restart policy); a worker (`fsm run`) launches and replaces its attempts. `stop` of a
supervisor ends its attempt and restarts nothing; of any other entity, it schedules a `stop`
for the worker to carry out exactly once.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.text import Text

from fsm.cli_support import (
    DbOption,
    JsonOption,
    UsageProblem,
    checked_url,
    console,
    print_json,
    reading,
    reporting,
    show,
    table,
    time_text,
    utf8,
)
from fsm.documents import read_document
from fsm.engine import Engine
from fsm.supervision import SUPERVISOR
from fsm.supervisor import Supervisor, describe

app = typer.Typer(
    name="supervise",
    help="Keep services running: restart policies with backoff, every attempt recorded.",
    no_args_is_help=True,
)
_FILE_KEYS = frozenset({"id", "service", "policy"})


def register(main: typer.Typer) -> None:
    """Add `fsm supervise ...` to the main command (the one `fsm stop` verb, in cli_verbs,
    stops supervisors too)."""
    main.add_typer(app)


def _load(path: Path) -> tuple[str | None, Mapping[str, Any], Mapping[str, Any] | None]:
    raw = read_document(path)
    if not isinstance(raw, Mapping):
        raise UsageProblem(f"{path}: must be a mapping with 'service' and 'policy'")
    unknown = sorted(str(k) for k in raw if k not in _FILE_KEYS)
    if unknown:
        raise UsageProblem(f"{path}: unknown keys {unknown[:5]} (known: {sorted(_FILE_KEYS)})")
    given_id = raw.get("id")
    if given_id is not None and not isinstance(given_id, str):
        raise UsageProblem(f"{path}: id must be a string")
    return given_id, raw.get("service") or {}, raw.get("policy")


@app.command()
def start(
    file: Annotated[Path, typer.Argument(metavar="FILE", help="YAML/JSON: id, service, policy")],
    db: DbOption = None,
    supervisor_id: Annotated[str | None, typer.Option("--id", help="overrides the file's")] = None,
) -> None:
    """Record a supervisor; a running worker launches its first attempt."""
    with reporting():
        url = checked_url(db)
        given_id, spec, policy = _load(file)
        chosen = utf8(supervisor_id, "--id") if supervisor_id is not None else given_id
        engine = Engine(url)
        try:
            sup = Supervisor.create(engine, spec, policy, id=chosen)
        finally:
            engine.close()
        show(console(), f"supervisor {sup.id} recorded (PENDING); `fsm run` launches it")


def supervisor_rows(engine: Engine, *, live_only: bool = False) -> list[dict[str, Any]]:
    """One row per supervisor: its state, attempts, the current one and the last decision."""
    rows = []
    for entity in engine.list_entities(lifecycle=SUPERVISOR):
        if live_only and entity.terminal:
            continue
        sup = Supervisor(engine, entity.id)
        attempts = sup.attempts()
        current = attempts[-1].entity if attempts else None
        rows.append(
            {
                "id": entity.id,
                "state": entity.state,
                "attempts": len(attempts),
                "current": current.id if current else None,
                "current_state": current.state if current else None,
                "last": sup.reason(),
            }
        )
    return rows


def supervisors_table(out: Console, rows: list[dict[str, Any]]) -> None:
    grid = table(out, "SUPERVISOR", "STATE", "ATTEMPTS", "CURRENT", "LAST DECISION")
    for r in rows:
        current = f"{r['current']} {r['current_state']}" if r["current"] else ""
        grid.add_row(Text(r["id"]), r["state"], str(r["attempts"]), Text(current), Text(r["last"]))
    show(out, grid)


@app.command(name="list")
def list_supervisors(db: DbOption = None, as_json: JsonOption = False) -> None:
    """Every supervisor with its attempts."""
    with reporting(), reading(db) as engine:
        rows = supervisor_rows(engine)
    if as_json:
        print_json({"supervisors": rows})
    elif not rows:
        show(console(), "no supervisors")
    else:
        supervisors_table(console(), rows)


@app.command(name="show")
def show_supervisor(
    supervisor_id: Annotated[str, typer.Argument(metavar="ID")],
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """A supervisor's attempts and decisions, first to last."""
    with reporting(), reading(db) as engine:
        sup = Supervisor(engine, utf8(supervisor_id, "ID"))
        entity = sup.entity()
        attempts = sup.attempts()
        decisions = engine.history(sup.id)
    if as_json:
        print_json(
            {
                "supervisor": entity._asdict(),
                "attempts": [
                    {"attempt": a.number, "id": a.entity.id, "state": a.entity.state}
                    for a in attempts
                ],
                "transitions": [t._asdict() for t in decisions],
            }
        )
        return
    out = console()
    show(out, Text(f"supervisor {entity.id} is {entity.state}", style="bold"))
    grid = table(out, "ATTEMPT", "SERVICE", "STATE", "CREATED (UTC)", "SINCE (UTC)")
    for a in attempts:
        e = a.entity
        grid.add_row(
            str(a.number),
            Text(e.id),
            e.state,
            time_text(e.created_at),
            time_text(e.state_entered_at),
        )
    show(out, grid)
    steps = table(out, "OBSERVED (UTC)", "FROM", "TO", "DECISION")
    for t in decisions:
        steps.add_row(time_text(t.observed_at), t.from_state, t.to_state, Text(describe(t)))
    show(out, steps)
