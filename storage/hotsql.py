"""Hand-written SQL for the per-event hot path, and the conversions its parameters need."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from functools import lru_cache
from operator import itemgetter
from typing import Any

from storage.codec import codec_for
from storage.records import EntityRow, EntityUpdate, RefreshMark, TransitionRow
from storage.tables import entity_table, transition_table

ENTITY_COLUMNS = [c.name for c in entity_table.columns]


def read_columns(dialect: str, table: str = "") -> str:
    """The entity's columns as the hot path reads them, each prefixed with `table.` if given.

    PostgreSQL sends `data` as text: psycopg would otherwise run `json.loads` in Python on every
    row (about 1.5 us even for `{}`), where the codec takes the common `{}` without parsing.
    """
    prefix = f"{table}." if table else ""
    cast = "::text AS data" if dialect != "sqlite" else ""
    return ", ".join(f"{prefix}{c}{cast if c == 'data' else ''}" for c in ENTITY_COLUMNS)


TRANSITION_COLUMNS = [c.name for c in transition_table.columns]
_ENTITY_TIMES = frozenset(
    (
        "state_entered_at",
        "deadline_at",
        "next_refresh_at",
        "created_at",
        "updated_at",
        "lease_expires_at",
        "last_observed_at",
    )
)
_TRANSITION_TIMES = frozenset(("observed_at", "recorded_at"))
_HEAD_COLUMNS = (
    "state",
    "terminal",
    "version",
    "seq",
    "state_entered_at",
    "deadline_at",
    "next_refresh_at",
    "updated_at",
    "definition_version",
)

# PostgreSQL: rows locked in one global order (code points == Python's str order), across
# chunks too, see UnitOfWork.lock_entities; NO KEY: child inserts (parent_id) need not wait
LOCK_IN_ORDER = ' ORDER BY id COLLATE "C" FOR NO KEY UPDATE'

# EntityUpdate fields in `update_head`'s parameter order (head, then id and expected version)
_UPDATE_ORDER = itemgetter(2, 3, 4, 5, 6, 7, 8, 9, 10, 0, 1)


class HotSql:
    """Hand-written SQL for the per-event hot path, with positional parameters.

    SQLAlchemy Core's per-row parameter processing cost more than the database work itself
    (measured: ~90 of ~190 µs per event); these statements take values already converted to
    the driver's form by a `Codec`. Every identifier comes from our own table metadata.
    """

    def __init__(self, dialect: str) -> None:
        self.codec = codec_for(dialect)
        self.sqlite = dialect == "sqlite"
        # the driver takes datetimes as they are (PostgreSQL): parameters need no time calls
        self._native_times = self.codec.native_times
        ph = self.codec.placeholder
        self.select_entities = f"SELECT {read_columns(dialect)} FROM entity WHERE "
        head = ", ".join(f"{c} = {ph}" for c in _HEAD_COLUMNS)
        where = f" WHERE id = {ph} AND version = {ph}"
        self.update_head = f"UPDATE entity SET {head}{where}"
        self.update_head_and_data = f"UPDATE entity SET {head}, data = {ph}{where}"
        mark = (
            f"observation_failures = {ph}, last_observed_at = COALESCE({ph}, last_observed_at), "
            "lease_owner = NULL, lease_expires_at = NULL"
        )
        # the end of a look alone, where we still hold the lease (queue.finish_refresh)
        self.finish_refresh = (
            f"UPDATE entity SET next_refresh_at = {ph}, {mark} "
            f"WHERE id = {ph} AND lease_owner = {ph}"
        )
        # (data?, marked?) -> statement; a marked head also ends its refresh (records.RefreshMark)
        self.update_statements = {
            (False, False): self.update_head,
            (True, False): self.update_head_and_data,
            (False, True): f"UPDATE entity SET {head}, {mark}{where}",
            (True, True): f"UPDATE entity SET {head}, data = {ph}, {mark}{where}",
        }
        self.insert_transition = self._insert("transition", TRANSITION_COLUMNS)
        self.insert_entity = self._insert("entity", ENTITY_COLUMNS)

    def _insert(self, table: str, columns: list[str]) -> str:
        names = ", ".join(columns)
        values = ", ".join(self.codec.placeholder for _ in columns)
        return f"INSERT INTO {table} ({names}) VALUES ({values})"

    def select_by_ids(self, count: int, *, lock: bool) -> tuple[str, bool]:
        """The SELECT for `count` ids, and whether the ids go in as one array parameter."""
        if self.sqlite:
            return f"{self.select_entities}id IN ({', '.join('?' * count)})", False
        suffix = LOCK_IN_ORDER if lock else ""
        return f"{self.select_entities}id = ANY(%s){suffix}", True

    def entities_from(self, rows: Sequence[Sequence[Any]]) -> list[EntityRow]:
        """The rows of one read. On SQLite each distinct time text is parsed once: the rows of
        a batch share their stamps (created, updated, entered, next refresh: one `now`)."""
        if not self.sqlite or len(rows) < 2:  # nothing to share (the memo costs its setup)
            return [self.entity_from(values) for values in rows]
        parse = lru_cache(maxsize=None)(self.codec.time_in)
        return [self.entity_from(values, parse) for values in rows]

    def entity_from(
        self, values: Sequence[Any], t: Callable[[Any], Any] | None = None
    ) -> EntityRow:
        c = self.codec
        t = t or c.time_in
        return EntityRow(
            values[0],
            values[1],
            values[2],
            values[3],
            bool(values[4]),
            values[5],
            values[6],
            t(values[7]),
            t(values[8]),
            t(values[9]),
            t(values[10]),
            t(values[11]),
            values[12],
            t(values[13]),
            values[14],
            c.json_in(values[15]),
            values[16],
            t(values[17]),
            values[18],
        )

    def entity_params(self, row: EntityRow) -> tuple[Any, ...]:
        out = self.codec.time_out
        return (
            row.id,
            row.lifecycle,
            row.definition_version,
            row.state,
            row.terminal,
            row.version,
            row.seq,
            out(row.state_entered_at),
            out(row.deadline_at),
            out(row.next_refresh_at),
            out(row.created_at),
            out(row.updated_at),
            row.lease_owner,
            out(row.lease_expires_at),
            row.observation_failures,
            self.codec.json_out(row.data),
            row.parent_id,
            out(row.last_observed_at),
            row.profile,
        )

    def batch_time_out(self, rows: int) -> Callable[[datetime | None], Any]:
        """The time formatter for a write of `rows` rows: each distinct time (the batch's
        `now`, its next-refresh and deadline times) is formatted once, however many carry it."""
        if not self.sqlite or rows <= 2:  # one transition: the global cache of sqlite_time
            return self.codec.time_out
        return lru_cache(maxsize=None)(self.codec.time_out)

    def transition_params(
        self, t: TransitionRow, out: Callable[[datetime | None], Any] | None = None
    ) -> tuple[Any, ...]:
        payload = self.codec.json_out(t.payload) if t.payload else "{}"
        if self._native_times and (out is None or out is self.codec.time_out):
            return (t[0], t[1], t[2], t[3], t[4], t[5], payload, t[7], t[8], t[9])
        out = out or self.codec.time_out
        return (
            t.entity_id,
            t.seq,
            t.from_state,
            t.to_state,
            t.event,
            t.source,
            payload,
            out(t.observed_at),
            out(t.recorded_at),
            t.definition_version,
        )

    def update_groups(
        self,
        updates: Sequence[EntityUpdate],
        out: Callable[[datetime | None], Any],
        marks: Mapping[str, RefreshMark],
    ) -> list[tuple[str, list[EntityUpdate], list[tuple[Any, ...]]]]:
        """The updates split by statement (with data or not, marked or not), with parameters."""
        groups: dict[tuple[bool, bool], list[EntityUpdate]] = {}
        for u in updates:
            groups.setdefault((u.data is not None, u.id in marks), []).append(u)
        return [
            (
                self.update_statements[key],
                group,
                [self.update_params(u, out, marks.get(u.id) if key[1] else None) for u in group],
            )
            for key, group in groups.items()
        ]

    def update_params(
        self,
        u: EntityUpdate,
        out: Callable[[datetime | None], Any] | None = None,
        mark: RefreshMark | None = None,
    ) -> tuple[Any, ...]:
        """The parameters of `update_statements[(u.data is not None, mark is not None)]`. A
        `mark` (the refresh of this head just done) takes the place of the head's next refresh
        time, so one row rewrite records both: on PostgreSQL each UPDATE of a row writes a new
        version of it and of its index entries."""
        fmt = out or self.codec.time_out
        native = self._native_times and fmt is self.codec.time_out
        if mark is None:
            if native and u.data is None:
                return _UPDATE_ORDER(u)  # type: ignore[no-any-return]
            next_at = u.next_refresh_at
        else:
            next_at = mark.next_refresh_at
        if native:  # one tuple, built once: no time calls, no intermediate records
            params: tuple[Any, ...] = (
                u.state,
                u.terminal,
                u.version,
                u.seq,
                u.state_entered_at,
                u.deadline_at,
                next_at,
                u.updated_at,
                u.definition_version,
            )
        else:
            params = (
                u.state,
                u.terminal,
                u.version,
                u.seq,
                fmt(u.state_entered_at),
                fmt(u.deadline_at),
                fmt(next_at),
                fmt(u.updated_at),
                u.definition_version,
            )
        if u.data is not None:
            params += (self.codec.json_out(u.data),)
        if mark is not None:
            params += (mark.observation_failures, fmt(mark.observed_at))
        return (*params, u.id, u.expected_version)
