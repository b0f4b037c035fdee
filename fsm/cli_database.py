"""`fsm status`, `fsm history`, `fsm verify`: read an existing database, never create one."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.text import Text

from fsm.cli_supervise import supervisor_rows, supervisors_table
from fsm.cli_support import (
    DbOption,
    JsonOption,
    UsageProblem,
    console,
    print_json,
    reading,
    reporting,
    show,
    table,
    time_text,
    utf8,
)
from fsm.engine import Engine
from fsm.lifecycles import BUILTIN_NAMES
from fsm.supervision import SUPERVISOR
from fsm.verify import Violation
from storage import releases
from storage.profiles import count_by_profile
from storage.records import EntityRow, ReleaseRow, TransitionRow

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


# -- history ---------------------------------------------------------------------------------


def release_text(release: ReleaseRow) -> str:
    """One line on what a release obligation is waiting for (or when it was done)."""
    asked = f"release asked when it became {release.state} at {time_text(release.requested_at)}"
    if release.released_at is not None:
        return f"{asked}; released at {time_text(release.released_at)} UTC"
    tried = f"{release.attempts} attempt(s)"
    why = f", last: {release.last_error}" if release.last_error else ""
    return f"{asked}; PENDING ({tried}, next at {time_text(release.next_attempt_at)}{why})"


def history_table(
    out: Console,
    entity: EntityRow,
    transitions: Sequence[TransitionRow],
    release: ReleaseRow | None = None,
) -> None:
    ended = " (terminal)" if entity.terminal else ""
    profile = f", profile {entity.profile}" if entity.profile else ""
    show(
        out,
        Text.assemble(
            (f"{entity.lifecycle} {entity.id}", "bold"),
            f" is {entity.state}{ended}: version {entity.version}, "
            f"{len(transitions)} transition(s), created {time_text(entity.created_at)} UTC"
            f"{profile}",
        ),
    )
    if not transitions:
        return
    columns = ["SEQ", "OBSERVED (UTC)", "EVENT", "FROM", "TO", "SOURCE"]
    payloads = any(t.payload for t in transitions)
    grid = table(out, *columns, *(["PAYLOAD"] if payloads else []))
    for t in transitions:
        cells = [Text(t.event), Text(t.from_state), Text(t.to_state), Text(t.source)]
        if payloads:
            cells.append(Text(json.dumps(t.payload, sort_keys=True) if t.payload else ""))
        grid.add_row(str(t.seq), time_text(t.observed_at), *cells)
    show(out, grid)
    if release is not None:
        show(out, Text(release_text(release)))


def history(
    entity_id: Annotated[str, typer.Argument(metavar="ID", help="entity id")],
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show an entity and every transition it went through."""
    with reporting(), reading(db) as engine:
        entity = engine.get(utf8(entity_id, "ID"))  # EntityNotFound: one line, exit 1
        transitions = engine.store.history(entity_id)
        with engine.store.reading() as conn:
            release = releases.for_entity(conn, entity.id)
        if as_json:
            print_json(
                {
                    "entity": entity._asdict(),
                    "transitions": [t._asdict() for t in transitions],
                    "release": None if release is None else release._asdict(),
                }
            )
            return
        history_table(console(), entity, transitions, release)


# -- verify ----------------------------------------------------------------------------------


def verify_report(out: Console, violations: Sequence[Violation], entities: int) -> None:
    if not violations:
        mark = "✓ " if out.is_terminal else ""
        show(out, Text(f"{mark}verified {entities} entities: no violations", style="green"))
        return
    grid = table(out, "ENTITY", "KIND", "DETAIL")
    for v in violations:
        grid.add_row(Text(v.entity_id), v.kind, Text(v.detail))
    show(out, grid)
    show(out, Text(f"{len(violations)} violation(s) in {entities} entities", style="red"))


def verify(db: DbOption = None, as_json: JsonOption = False) -> None:
    """Replay every stored history against its definition (exit 1 on any violation)."""
    with reporting(), reading(db) as engine:
        violations = engine.verify()
        entities = sum(c.total for c in engine.counts())
    if as_json:
        print_json(
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
        verify_report(console(), violations, entities)
    if violations:
        raise typer.Exit(1)


# -- status ----------------------------------------------------------------------------------


def status_rows(
    engine: Engine, lifecycle: str | None = None, state: str | None = None
) -> list[dict[str, Any]]:
    known = _catalogue(engine)
    if lifecycle is not None and lifecycle not in known:
        raise UsageProblem(
            f"unknown lifecycle {lifecycle[:200]!r}; known: {', '.join(sorted(known))}"
        )
    if state is not None:
        scope = [known[lifecycle]] if lifecycle is not None else list(known.values())
        if not any(state in k.states for k in scope):
            where = f" in lifecycle {lifecycle!r}" if lifecycle else ""
            raise UsageProblem(f"unknown state {state[:200]!r}{where}")
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


def status_table(out: Console, rows: Sequence[Mapping[str, Any]]) -> None:
    if not rows:
        show(out, "no entities")
        return
    grid = table(out, "LIFECYCLE", "STATE", "ENTITIES")
    grid.columns[2].justify = "right"
    previous = None
    for r in rows:
        repeat = r["lifecycle"] != previous or not out.is_terminal  # plain: greppable rows
        name = r["lifecycle"] if repeat else ""
        previous = r["lifecycle"]
        label = Text(r["state"] + (" (terminal)" if r["terminal"] else ""))
        if r["terminal"]:
            label.stylize("dim")
        grid.add_row(Text(name, style="bold"), label, str(r["count"]))
    show(out, grid)
    total = sum(r["count"] for r in rows)
    show(out, f"{total} entit{'y' if total == 1 else 'ies'}")


def profile_rows(engine: Engine) -> list[dict[str, Any]]:
    return [
        {"profile": profile, "lifecycle": lifecycle, "live": live, "count": total}
        for (profile, lifecycle), (live, total) in count_by_profile(engine.store).items()
    ]


def profile_table(out: Console, rows: Sequence[Mapping[str, Any]]) -> None:
    """Entities by backend profile (only those created with one)."""
    if not rows:
        return
    grid = table(out, "PROFILE", "LIFECYCLE", "LIVE", "ENTITIES")
    grid.columns[2].justify = grid.columns[3].justify = "right"
    for r in rows:
        grid.add_row(
            Text(r["profile"], style="bold"), r["lifecycle"], str(r["live"]), str(r["count"])
        )
    show(out)
    show(out, grid)


def status(
    db: DbOption = None,
    as_json: JsonOption = False,
    lifecycle: Annotated[str | None, typer.Option("--lifecycle", "-l", help="only this")] = None,
    state: Annotated[str | None, typer.Option("--state", "-s", help="only this state")] = None,
) -> None:
    """Count entities by lifecycle and state."""
    with reporting(), reading(db) as engine:
        rows = status_rows(engine, lifecycle, state)
        profiles = profile_rows(engine) if lifecycle is None and state is None else []
        supervised = (
            supervisor_rows(engine, live_only=True) if lifecycle in (None, SUPERVISOR) else []
        )
        with engine.store.reading() as conn:
            waiting, oldest = releases.pending(conn)
    if as_json:
        report: dict[str, Any] = {
            "total": sum(r["count"] for r in rows),
            "counts": rows,
            "profiles": profiles,
            "pending_releases": waiting,
            "oldest_pending_releases": [r._asdict() for r in oldest],
        }
        if supervised:
            report["supervisors"] = supervised
        print_json(report)
        return
    out = console()
    status_table(out, rows)
    profile_table(out, profiles)
    if supervised:
        supervisors_table(out, supervised)
    if waiting:
        show(out, Text(f"{waiting} release(s) pending (an ended entity may still hold something):"))
        for r in oldest:
            show(out, Text(f"  {r.entity_id}: {release_text(r)}"))
