"""A batch of events staged in memory on rows locked in one unit of work, then written at once.

Every event is checked field by field (`check_event`) before it can touch its entity: a bad one
gets its own `InvalidInput` outcome and the others still commit. Entity data is redacted before
it is merged, so no secret reaches the head row.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any

from fsm import cascade, validation
from fsm.errors import FsmError, InvalidInput
from fsm.events import Event, GuardsHeld, Outcome
from fsm.part_stream import STREAM_PART, PartSender
from fsm.redaction import policy
from storage import (
    EntityNotFound,
    EntityRow,
    EntityUpdate,
    TransitionRow,
    UnitOfWork,
    VersionConflict,
)
from storage.records import RefreshMark
from storage.write_stream import WriteStream

if TYPE_CHECKING:
    from fsm.engine import Engine
    from fsm.lifecycle import Lifecycle

_MAX_TEXT = validation.MAX_TEXT
_SOURCES: set[str] = set()  # sources seen valid: a handful of names, checked once each


def check_event(event: object) -> Event:
    """The event with every field validated (data copied with its secrets masked); raises
    `InvalidInput` naming the first bad field.

    On the hot path: the id is checked inline, a source once, and a name only for its type (a
    string that is no trigger of the lifecycle is refused as `InvalidEvent` when it applies)."""
    if type(event) is not Event and not isinstance(event, Event):
        raise InvalidInput("event", f"must be an fsm.Event, not {type(event).__name__}")
    entity_id, name, payload, source, observed_at, expected_version, data = event
    if (
        type(entity_id) is not str
        or not 0 < len(entity_id) <= _MAX_TEXT
        or not entity_id.isascii()
        or "\x00" in entity_id
    ):
        validation.text(entity_id, "entity_id")
    if type(name) is not str:
        validation.text(name, "event")
    if type(source) is not str or source not in _SOURCES:
        validation.text(source, "source")
        if len(_SOURCES) < 1024:
            _SOURCES.add(source)
    if payload is None and data is None and observed_at is None and expected_version is None:
        return event
    if payload is not None:
        validation.check_json(payload, "payload")  # guards see it as given; history: redacted
    if observed_at is not None:
        validation.aware_time(observed_at, "observed_at")
    if expected_version is not None:
        # any integer: one the entity never had is simply a conflict
        validation.count(expected_version, "expected_version", minimum=-validation.MAX_INT)
    if data is None:  # nothing to copy: a backend's looks carry no data in most events
        return event
    return Event(entity_id, name, payload, source, observed_at, expected_version, check_data(data))


def check_data(data: object, field: str = "data") -> dict[str, Any]:
    """Entity data as it may be stored: a JSON mapping, copied with every secret masked."""
    validation.check_json(data, field)
    redacted: dict[str, Any] = policy.redact(data)
    return redacted


class Head:
    """The working copy of one entity inside a batch; committed to the store at the end."""

    __slots__ = (
        "data",
        "data_changed",
        "deadline_at",
        "definition_version",
        "entered_at",
        "next_refresh_at",
        "row",
        "seq",
        "state",
        "terminal",
        "version",
    )

    def __init__(self, row: EntityRow) -> None:
        self.row = row
        self.state = row.state
        self.version = row.version
        self.seq = row.seq
        self.entered_at = row.state_entered_at
        self.deadline_at = row.deadline_at
        self.next_refresh_at = row.next_refresh_at
        self.terminal = row.terminal
        self.definition_version = row.definition_version
        self.data: dict[str, Any] = row.data
        self.data_changed = False

    def merge(self, data: Mapping[str, Any]) -> bool:
        """Merge already checked data; True if anything changed."""
        merged = {**self.data, **data}
        if merged == self.data:
            return False
        self.data = merged
        self.data_changed = True
        return True

    def update(self, now: datetime) -> EntityUpdate:
        return EntityUpdate(  # positional: cheaper than keywords, once per changed entity
            self.row.id,
            self.row.version,
            self.state,
            self.terminal,
            self.version,
            self.seq,
            self.entered_at,
            self.deadline_at,
            self.next_refresh_at,
            now,
            self.definition_version,
            self.data if self.data_changed else None,
        )


class StagedBatch:
    """Events applied in memory to rows locked in one unit of work, written by `flush`."""

    def __init__(
        self, engine: Engine, uow: UnitOfWork, rows: Mapping[str, EntityRow], now: datetime
    ) -> None:
        self.engine = engine
        self.uow = uow
        self.rows = rows
        self.now = now
        self.heads: dict[str, Head] = {}
        self.transitions: list[TransitionRow] = []
        self.used: set[Lifecycle] = set()
        self._streamed: set[str] = set()  # heads already sent by `streaming`
        self._streamed_marked: set[str] = set()  # of those, the ones sent with their mark
        self._streamed_transitions = 0

    def head(self, entity_id: str) -> Head | None:
        head = self.heads.get(entity_id)
        if head is None:
            row = self.rows.get(entity_id)
            if row is None:
                return None
            head = self.heads[entity_id] = Head(row)
        return head

    def add(self, event: Event) -> Outcome:
        """Stage one event; its outcome carries its error (nothing of it is staged then)."""
        try:
            checked = check_event(event)
        except InvalidInput as exc:
            return Outcome(event, error=exc)
        return self.add_checked(event, checked)

    def lock_more(self, entity_id: str) -> Head | None:
        """Read and lock one more entity in this unit of work (a parent, see fsm.cascade)."""
        found = self.uow.lock_entities([entity_id])
        if entity_id not in found:
            return None
        self.rows = {**self.rows, **found}
        return self.head(entity_id)

    def add_checked(self, event: Event, checked: Event, *, depth: int = 0) -> Outcome:
        """Stage an event `check_event` accepted (`event` is what the caller gave)."""
        head = self.head(checked.entity_id)
        if head is None:
            return Outcome(event, error=EntityNotFound(checked.entity_id))
        try:
            transition = self.engine._step(head, checked, self.now)
        except (FsmError, VersionConflict) as exc:
            return Outcome(event, head.state, head.version, error=exc)
        if transition is None:
            return Outcome(event, head.state, head.version)
        if isinstance(transition, GuardsHeld):
            return Outcome(event, head.state, head.version, held=transition.guards)
        self.transitions.append(transition)
        if head.terminal and head.row.parent_id is not None:  # a child finished: its parent
            cascade.after_transition(self, head, transition, depth)
        return Outcome(event, head.state, head.version, transition)

    def add_all(
        self,
        events: Sequence[Event],
        checked: Sequence[Event | None],
        refused: Mapping[int, InvalidInput],
    ) -> tuple[Outcome, ...]:
        """Stage `events` in order (`checked[i]` is None where `refused[i]` says why), each
        part's writes streamed where the store streams (`streaming`)."""
        if not self._streams(len(events), STREAM_PART):  # `fire`: no stream to set up
            return tuple(
                self.add_checked(e, c) if c is not None else Outcome(e, error=refused[i])
                for i, (e, c) in enumerate(zip(events, checked, strict=True))
            )
        last = {c.entity_id: i for i, c in enumerate(checked) if c is not None}
        outcomes: list[Outcome] = []
        with self._parts({}, STREAM_PART) as sender:
            for i, (e, c) in enumerate(zip(events, checked, strict=True)):
                if c is None:
                    outcomes.append(Outcome(e, error=refused[i]))
                    sender.step(None)
                else:
                    outcomes.append(self.add_checked(e, c))
                    sender.step(c.entity_id if last[c.entity_id] == i else None)
        return tuple(outcomes)

    @contextmanager
    def streaming(
        self, steps: int, marks: Mapping[str, RefreshMark] | None = None, part: int = STREAM_PART
    ) -> Iterator[PartSender | None]:
        """A sender for `steps` steps of staging (None: write everything at `flush`).

        Where rows are locked (PostgreSQL) and there are more steps than one part, each part's
        transitions, and the heads its steps finished (`PartSender.step`), go to the server
        while the next part is decided (storage.write_stream); a finished head's refresh mark in
        `marks` goes with it."""
        if not self._streams(steps, part):
            yield None
            return
        with self._parts(marks if marks is not None else {}, part) as sender:
            yield sender

    def _streams(self, steps: int, part: int) -> bool:
        """Whether `steps` steps stream: more than one part, rows locked, and no row with a
        parent (a child that finishes may move its parent's head after the parent's own last
        step, fsm.cascade)."""
        return (
            steps > part
            and self.uow.locks_rows
            and not any(r.parent_id is not None for r in self.rows.values())
        )

    @contextmanager
    def _parts(self, marks: Mapping[str, RefreshMark], part: int) -> Iterator[PartSender]:
        with self.uow.stream() as stream:
            sender = PartSender(self, stream, marks, part)
            yield sender
            sender.send()

    def send_final(
        self, stream: WriteStream, heads: Sequence[Head], marks: Mapping[str, RefreshMark]
    ) -> None:
        """Send the changed ones of `heads` (nothing later changes them) and the transitions
        staged since the last send; `flush` writes neither again."""
        now = self.now
        changed = [h.update(now) for h in heads if h.version != h.row.version]
        stream.send(changed, self.transitions[self._streamed_transitions :], marks)
        self._streamed.update(h.row.id for h in heads)
        self._streamed_marked.update(u.id for u in changed if u.id in marks)
        self._streamed_transitions = len(self.transitions)

    def merge_data(self, entity_id: str, data: Mapping[str, Any]) -> bool:
        """Record data with no event (e.g. a tunnel was closed); True if anything changed."""
        head = self.head(entity_id)
        if head is None:
            raise EntityNotFound(entity_id)
        if not head.merge(check_data(data)):
            return False
        head.version += 1
        return True

    def flush(self, marks: Mapping[str, RefreshMark] | None = None) -> set[str]:
        """Write every changed head and the staged transitions (still inside the transaction);
        a changed head with a refresh mark records it in the same write. Returns the ids whose
        marks were written that way (the caller records the others)."""
        heads = self.heads.values()
        streamed = self._streamed
        changed = [
            h.update(self.now)
            for h in heads
            if h.version != h.row.version and h.row.id not in streamed
        ]
        self.used = {self.engine.lifecycles[h.row.lifecycle] for h in heads if h.seq != h.row.seq}
        self.engine._store_definitions(self.uow, self.used, self.now)
        sent = self._streamed_transitions
        self.uow.write(changed, self.transitions[sent:] if sent else self.transitions, marks)
        return (
            ({u.id for u in changed if u.id in marks} | self._streamed_marked) if marks else set()
        )
