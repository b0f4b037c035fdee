"""`fsm create`, `fsm command` / `fsm submit`, `fsm stop`, `fsm cancel`, `fsm commands`.

Each goes through the API a program would call — `Engine.create`, `Worker.command` (the
backend acts, then the engine records), `Worker.schedule` — and prints what it recorded, or
`--json`. A command refused by the lifecycle, the backend or the input checks is one line on
stderr and writes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any

import typer
from rich.text import Text

from fsm.cli_input import ConfigOption, Session, due_time, json_object, session
from fsm.cli_support import (
    MAX_SECONDS,
    DbOption,
    JsonOption,
    UsageProblem,
    console,
    describe,
    finite,
    print_json,
    reading,
    reporting,
    show,
    table,
    time_text,
    utf8,
)
from fsm.config import load_config
from fsm.errors import FsmError
from fsm.events import Outcome
from fsm.supervision import SUPERVISOR
from fsm.supervisor import Supervisor
from storage import StorageError
from storage.command_admin import CANCELLED, cancel_command, list_commands

ArgsOption = Annotated[
    str | None,
    typer.Option("--args", help="the command's arguments: a JSON object or @FILE"),
]
AtOption = Annotated[
    str | None, typer.Option("--at", help="run it then (ISO 8601 with a timezone), by a worker")
]
InOption = Annotated[
    float | None,
    typer.Option(
        "--in", min=0, max=MAX_SECONDS, callback=finite, help="run it in N seconds, by a worker"
    ),
]


def outcome_record(outcome: Outcome) -> dict[str, Any]:
    """One outcome as `--json` prints it (and the text line is made from)."""
    t = outcome.transition
    return {
        "entity_id": outcome.event.entity_id,
        "event": outcome.event.name,
        "state": outcome.state,
        "version": outcome.version,
        "transition": None if t is None else t._asdict(),
        "held": list(outcome.held),
        "error": None if outcome.error is None else describe(outcome.error),
    }


def outcome_text(outcome: Outcome) -> str:
    t = outcome.transition
    who = f"{outcome.event.entity_id}: {outcome.event.name}"
    if outcome.error is not None:
        return f"{who} refused: {describe(outcome.error)}"
    if t is not None:
        return (
            f"{who}: {t.from_state} -> {t.to_state} (transition {t.seq}, version {outcome.version})"
        )
    if outcome.held:
        return f"{who} held by {', '.join(outcome.held)}: nothing recorded, still {outcome.state}"
    return f"{who}: still {outcome.state}, nothing recorded"


# -- create ----------------------------------------------------------------------------------


def create(
    lifecycle: Annotated[str, typer.Argument(metavar="LIFECYCLE", help="built-in or the config's")],
    data: Annotated[
        str | None, typer.Option("--data", help="entity data: a JSON object or @FILE")
    ] = None,
    backend: Annotated[
        str | None, typer.Option("--backend", help="the config's backend profile to drive it")
    ] = None,
    entity_id: Annotated[str | None, typer.Option("--id", help="default: a random id")] = None,
    db: DbOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Create an entity in its lifecycle's initial state (a worker drives it from there)."""
    with reporting():
        values = json_object(data, "--data")
        name = utf8(lifecycle, "LIFECYCLE")
        wanted = None if entity_id is None else utf8(entity_id, "--id")
        with session(db, config, create=True) as current:
            if name not in current.engine.lifecycles:
                known = ", ".join(sorted(current.engine.lifecycles))
                raise UsageProblem(f"unknown lifecycle {name[:200]!r}; known: {known}")
            current.check_profile(backend, name)
            row = current.engine.create(name, values, id=wanted, profile=backend)
    if as_json:
        print_json(row._asdict())
        return
    driven = f", profile {row.profile}" if row.profile else ""
    typer.echo(f"created {row.lifecycle} {row.id} in {row.state} (version {row.version}{driven})")


# -- commands --------------------------------------------------------------------------------


def _run(
    current: Session,
    entity_id: str,
    verb: str,
    arguments: dict[str, Any] | None,
    at: str | None,
    after: float | None,
) -> dict[str, Any]:
    when = due_time(at, after)
    worker = current.worker
    if when is None:
        try:
            outcomes = worker.command(entity_id, verb, arguments)
        except (FsmError, StorageError):
            raise
        except Exception as exc:  # the backend could not carry it out: nothing was recorded
            raise FsmError(f"{describe(exc)} (nothing recorded)") from exc
        return {"entity_id": entity_id, "command": verb, "outcomes": outcomes}
    number = worker.schedule(entity_id, verb, arguments, at=when)
    return {"entity_id": entity_id, "command": verb, "scheduled": number, "due_at": when}


def _print(result: dict[str, Any], as_json: bool) -> None:
    if "supervisor_state" in result and not as_json:
        typer.echo(f"supervisor {result['entity_id']} is {result['supervisor_state']}")
        return
    if "scheduled" in result:
        if as_json:
            print_json(result)
            return
        typer.echo(
            f"scheduled #{result['scheduled']}: {result['command']} on {result['entity_id']} "
            f"at {time_text(result['due_at'])} UTC (fsm cancel {result['scheduled']} to cancel)"
        )
        return
    outcomes = result["outcomes"]
    if as_json:
        print_json({**result, "outcomes": [outcome_record(o) for o in outcomes]})
        return
    for outcome in outcomes:
        typer.echo(outcome_text(outcome))


def command(
    entity_id: Annotated[str, typer.Argument(metavar="ID", help="entity id")],
    verb: Annotated[
        str, typer.Argument(metavar="VERB", help="a lifecycle event or a backend command")
    ],
    args: ArgsOption = None,
    at: AtOption = None,
    after: InOption = None,
    db: DbOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Carry out a command now (the backend acts, then it is recorded) or schedule it."""
    with reporting():
        arguments = json_object(args, "--args")
        due_time(at, after)  # refused before the database is opened
        with session(db, config) as current:
            result = _run(current, utf8(entity_id, "ID"), utf8(verb, "VERB"), arguments, at, after)
    _print(result, as_json)


def submit(
    entity_id: Annotated[str, typer.Argument(metavar="ID", help="entity id")],
    args: ArgsOption = None,
    at: AtOption = None,
    after: InOption = None,
    db: DbOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """`fsm command ID submit`: start a service (its spec from --args or its data)."""
    command(entity_id, "submit", args, at, after, db, config, as_json)


def stop(
    ids: Annotated[list[str], typer.Argument(metavar="ID...", help="entity ids")],
    at: AtOption = None,
    after: InOption = None,
    db: DbOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Stop entities (each on its own: one that is refused does not keep the others)."""
    results: list[dict[str, Any]] = []
    failed = 0
    with reporting():
        due_time(at, after)
        checked = [utf8(i, "ID") for i in ids]
        with session(db, config) as current:
            for entity_id in checked:
                try:
                    if current.engine.get(entity_id).lifecycle == SUPERVISOR:
                        state = Supervisor(current.engine, entity_id).stop()
                        results.append({"entity_id": entity_id, "supervisor_state": state})
                        continue
                    results.append(_run(current, entity_id, "stop", None, at, after))
                except Exception as exc:  # per entity: one refused does not keep the others
                    failed += 1
                    results.append(
                        {"entity_id": entity_id, "command": "stop", "error": describe(exc)}
                    )
    for result in results:
        if "error" in result:
            if as_json:
                print_json(result)
            else:
                typer.echo(
                    f"fsm: error: {result['entity_id']}: stop refused: {result['error']}", err=True
                )
        else:
            _print(result, as_json)
    if failed:
        raise typer.Exit(1)


# -- scheduled commands ----------------------------------------------------------------------


def cancel(
    number: Annotated[int, typer.Argument(metavar="N", min=1, help="scheduled command number")],
    db: DbOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Cancel a scheduled command that has not run yet."""
    with reporting(), session(db, config) as current:
        engine = current.engine
        with engine.store.transaction() as uow:
            won, row = cancel_command(uow, number, engine.now())
        if row is None:
            raise FsmError(f"there is no scheduled command #{number}")
        if not won:
            if row.done_at is not None:
                raise FsmError(
                    f"scheduled command #{number} is done already "
                    f"({time_text(row.done_at)} UTC: {row.outcome})"
                )
            raise FsmError(
                f"scheduled command #{number} is being carried out by {row.claimed_by}; "
                "it cannot be cancelled now"
            )
    if as_json:
        print_json(row._asdict())
        return
    typer.echo(
        f"cancelled #{row.id}: {row.command} on {row.entity_id} "
        f"(was due {time_text(row.due_at)} UTC)"
    )


def commands(
    entity_id: Annotated[
        str | None, typer.Argument(metavar="[ID]", help="only this entity")
    ] = None,
    pending: Annotated[bool, typer.Option("--pending", help="only those not done")] = False,
    db: DbOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """List scheduled commands: when due, done, and with what outcome."""
    with reporting(), reading(db or load_config(config).db) as engine:
        rows = list_commands(
            engine.store, None if entity_id is None else utf8(entity_id, "ID"), pending
        )
    if as_json:
        print_json([r._asdict() for r in rows])
        return
    out = console()
    if not rows:
        show(out, "no scheduled commands")
        return
    grid = table(out, "#", "ENTITY", "COMMAND", "DUE (UTC)", "DONE (UTC)", "OUTCOME")
    for r in rows:
        status = r.outcome or (f"claimed by {r.claimed_by}" if r.claimed_by else "pending")
        style = "dim" if r.outcome == CANCELLED else ""
        grid.add_row(
            str(r.id),
            Text(r.entity_id),
            Text(r.command),
            time_text(r.due_at),
            time_text(r.done_at),
            Text(status, style=style),
        )
    show(out, grid)


__all__: Sequence[str] = ("cancel", "command", "commands", "create", "stop", "submit")
