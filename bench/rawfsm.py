"""The hand-written anchors' building blocks: the rules read off a lifecycle, the raw sqlite3
writer of persist_single, and one plain `transitions.Machine` model (what the engine avoids)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

from transitions import Machine

from fsm.definition import Definition
from fsm.engine import DEFAULT_REFRESH_SECONDS
from fsm.lifecycle import Lifecycle
from storage.database import _SQLITE_PRAGMAS

# -- the rules, precomputed for the anchors and the naive ORM route ----------------------------


class Rules:
    """What a writer outside the engine needs to store the same rows the engine stores.

    The destination of each unguarded (state, event) is read once, at setup, off the compiled
    lifecycle, so the anchors spend no time deciding: they are the cost floor of the writes.
    """

    def __init__(self, lifecycle: Lifecycle, default_refresh: float = DEFAULT_REFRESH_SECONDS):
        self.version = lifecycle.version
        self.terminal = lifecycle.terminal
        self.dest: dict[tuple[str, str], str] = {}
        for state in lifecycle.states:
            for event in lifecycle.allowed[state]:
                found = lifecycle.candidates(state, event) or ()
                unguarded = [c for c in found if not c.checks]
                if unguarded:
                    self.dest[(state, event)] = unguarded[0].dest
        self.limit: dict[str, timedelta | None] = {}
        self.refresh: dict[str, timedelta | None] = {}
        for name, spec in lifecycle.states.items():
            self.limit[name] = (
                None if spec.time_limit is None else timedelta(seconds=spec.time_limit)
            )
            every = spec.refresh if spec.refresh is not None else default_refresh
            self.refresh[name] = None if name in self.terminal else timedelta(seconds=every)


def iso(value: datetime | None) -> str | None:
    """The fixed-width text the project keeps in SQLite (`storage.types.sqlite_time`)."""
    return None if value is None else value.isoformat(timespec="microseconds")


class RawSqliteWriter:
    """The persist_single anchor: stdlib sqlite3, the project's pragmas and schema.

    Per event: BEGIN IMMEDIATE, a versioned UPDATE of the entity head (same columns and values
    as the engine), an INSERT of the transition row, COMMIT. No read: the heads are tracked in
    Python, so this is the floor of "insert + versioned update per commit".
    """

    UPDATE = (
        "UPDATE entity SET state = ?, terminal = ?, version = ?, seq = ?, state_entered_at = ?, "
        "deadline_at = ?, next_refresh_at = ?, updated_at = ?, definition_version = ? "
        "WHERE id = ? AND version = ?"
    )
    INSERT = (
        "INSERT INTO transition (entity_id, seq, from_state, to_state, event, source, payload, "
        "observed_at, recorded_at, definition_version) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    )

    def __init__(self, path: Path, rules: Rules, ids: Sequence[str]) -> None:
        self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        for pragma in _SQLITE_PRAGMAS:
            self.conn.execute(pragma)
        self.rules = rules
        self.heads: dict[str, tuple[str, int, int]] = {}
        for chunk in range(0, len(ids), 500):
            part = ids[chunk : chunk + 500]
            marks = ", ".join("?" * len(part))
            sql = f"SELECT id, state, version, seq FROM entity WHERE id IN ({marks})"
            for entity_id, state, version, seq in self.conn.execute(sql, part):
                self.heads[entity_id] = (state, version, seq)

    def step(self, entity_id: str, event: str) -> None:
        rules = self.rules
        state, version, seq = self.heads[entity_id]
        dest = rules.dest[(state, event)]
        now = datetime.now(UTC)
        stamp = iso(now)
        limit = rules.limit[dest]
        refresh = rules.refresh[dest]
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        matched = conn.execute(
            self.UPDATE,
            (
                dest,
                dest in rules.terminal,
                version + 1,
                seq + 1,
                stamp,
                None if limit is None else iso(now + limit),
                None if refresh is None else iso(now + refresh),
                stamp,
                rules.version,
                entity_id,
                version,
            ),
        ).rowcount
        if matched != 1:
            conn.rollback()
            raise RuntimeError(f"version conflict on {entity_id}")
        conn.execute(
            self.INSERT,
            (entity_id, seq + 1, state, dest, event, "user", "{}", stamp, stamp, rules.version),
        )
        conn.commit()
        self.heads[entity_id] = (dest, version + 1, seq + 1)

    def close(self) -> None:
        self.conn.close()


# -- the raw `transitions` anchor ----------------------------------------------------------------


class RawModel:
    """The one model a plain `transitions.Machine` moves (what the engine avoids per entity)."""

    state: str
    trigger: Callable[..., bool]  # added by the machine

    def __init__(self) -> None:
        self.deadline_at: datetime | None = None
        self.observed_at = datetime.now(UTC)

    def time_limit_exceeded(self) -> bool:
        return self.deadline_at is not None and self.observed_at >= self.deadline_at


def raw_machine(definition: Definition) -> tuple[Machine, RawModel]:
    """A plain Machine with the same states and transitions, `model=` one object."""
    model = RawModel()
    machine = Machine(
        model=model,
        states=list(definition.state_names),
        initial=definition.initial,
        auto_transitions=False,
    )
    for t in definition.transitions:
        for guard in (*t.guards, *t.unless):
            if not callable(getattr(model, guard, None)):
                raise RuntimeError(f"the raw anchor has no guard {guard!r}")
        machine.add_transition(
            t.trigger, list(t.sources), t.dest, conditions=list(t.guards), unless=list(t.unless)
        )
    return machine, model


def replay(model: RawModel, steps: Sequence[tuple[str, tuple[str, ...]]]) -> None:
    """The refresh anchor: put the one model in each entity's recorded state, trigger its
    observed events."""
    for state, events in steps:
        model.state = state
        for name in events:
            model.trigger(name)
