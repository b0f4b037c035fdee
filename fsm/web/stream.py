"""Server-Sent Events: transitions as they are recorded, with the entity list's filters.

The stream polls the database (a snapshot read, never a lock) every `POLL` seconds. Several
writers may commit out of recording order (a transaction that started first can commit last),
so each poll looks `OVERLAP` seconds behind the newest transition seen and drops the ones
already sent. The event id is the position in recording order, so a browser that reconnects
(`Last-Event-ID`) resumes where it was.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime, timedelta

import anyio
import anyio.to_thread

from fsm.web.models import Transition
from fsm.web.reader import Reader
from storage.pages import EntityQuery, Mark

POLL = 0.4
OVERLAP = timedelta(seconds=5)
HEARTBEAT = 15.0


def mark_id(mark: Mark) -> str:
    text = json.dumps([mark.recorded_at.isoformat(), mark.entity_id, mark.seq])
    return base64.urlsafe_b64encode(text.encode()).decode()


def parse_mark(text: str | None) -> Mark | None:
    if not text:
        return None
    try:
        at, entity_id, seq = json.loads(base64.urlsafe_b64decode(text.encode()))
        when = datetime.fromisoformat(at)
    except (ValueError, TypeError):
        return None
    if when.tzinfo is None or not isinstance(entity_id, str) or not isinstance(seq, int):
        return None
    return Mark(when, entity_id, seq)


def event(name: str, data: str, ident: str | None = None) -> str:
    lines = [f"event: {name}"]
    if ident is not None:
        lines.append(f"id: {ident}")
    lines.extend(f"data: {line}" for line in data.splitlines() or [""])
    return "\n".join(lines) + "\n\n"


async def transitions(
    reader: Reader,
    query: EntityQuery,
    start: Mark,
    disconnected: Callable[[], Awaitable[bool]],
    *,
    poll: float = POLL,
    until: float | None = None,
) -> AsyncIterator[str]:
    """SSE text: a `ready` event, then one `transition` event per recorded transition."""
    newest = start
    sent: dict[tuple[str, int], datetime] = {}  # what went out within the overlap
    yield "retry: 1000\n\n" + event("ready", json.dumps({"since": start.recorded_at.isoformat()}))
    quiet = waited = 0.0
    while not await disconnected():
        look_from = max(start, Mark(newest.recorded_at - OVERLAP, "", 0))
        rows = await anyio.to_thread.run_sync(reader.transitions_after, look_from, query)
        for lifecycle, row in rows:
            key = (row.entity_id, row.seq)
            position = Mark(row.recorded_at, row.entity_id, row.seq)
            if key in sent or position <= start:
                continue
            sent[key] = row.recorded_at
            newest = max(newest, position)
            body = {
                "lifecycle": lifecycle,
                "transition": Transition.of(row).model_dump(mode="json"),
            }
            yield event("transition", json.dumps(body), mark_id(newest))
            quiet = 0.0
        horizon = newest.recorded_at - OVERLAP * 2
        sent = {k: at for k, at in sent.items() if at >= horizon}
        await anyio.sleep(poll)
        quiet += poll
        waited += poll
        if quiet >= HEARTBEAT:
            yield ": keep-alive\n\n"
            quiet = 0.0
        if until is not None and waited >= until:
            return
