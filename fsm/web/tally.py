"""How often each move fired, kept up to date incrementally so the overview never rescans
every transition: one grouped scan when the server starts (totals, and per-minute counts
for the last `KEEP`), then each request reads only what was recorded since the last one.

Windows are exact to the minute. Writers may commit slightly out of recording order (a
transaction that started first commits last), so each refresh reads again what was recorded
in the last `OVERLAP` seconds and skips the transitions it counted already; a transaction
open longer than that, or a writer whose clock lags ours by more, is counted only by a direct
query (`fsm diagram --db`, a window older than the per-minute counts) or after a restart.
A window that reaches further back than the per-minute counts is answered by a direct query.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timedelta

from storage import Store
from storage.moves import FiredMove, fired_moves, moves_by_minute, moves_since

KEEP = timedelta(days=7, minutes=1)
OVERLAP = timedelta(seconds=5)
Move = tuple[str, str, str, str]


def _minute(at: datetime) -> datetime:
    return at.replace(second=0, microsecond=0)


class MoveTally:
    """Thread-safe; `counts(since)` answers like `fired_moves(conn, since)`."""

    def __init__(self, store: Store, clock: Callable[[], datetime]) -> None:
        self.store = store
        self.clock = clock
        self._lock = threading.Lock()
        self._total: Counter[Move] = Counter()
        self._minutes: dict[datetime, Counter[Move]] = {}
        self._kept_from: datetime | None = None  # per-minute counts exist from here on
        self._newest: datetime | None = None  # the newest transition counted (or the load's)
        self._floor: datetime | None = None  # everything recorded before it is counted
        self._seen: dict[tuple[str, int], datetime] = {}

    def _load(self, now: datetime) -> None:
        start = now - OVERLAP
        kept_from = _minute(now - KEEP)
        with self.store.reading() as conn:
            for m in fired_moves(conn, None, before=start):
                self._total[m[:4]] += m.times
            for minute, m in moves_by_minute(conn, kept_from, start):
                self._minutes.setdefault(minute, Counter())[m[:4]] += m.times
        self._kept_from, self._newest, self._floor = kept_from, start, start

    def _refresh(self, now: datetime) -> None:
        if self._newest is None:
            self._load(now)
        assert self._newest is not None and self._kept_from is not None
        assert self._floor is not None
        look_from = self._floor  # everything recorded before it is counted
        with self.store.reading() as conn:
            rows = moves_since(conn, look_from)
        for row in rows:
            key = (row.entity_id, row.seq)
            if key in self._seen or row.recorded_at < look_from:
                continue
            self._seen[key] = row.recorded_at
            self._total[row.move] += 1
            self._minutes.setdefault(_minute(row.recorded_at), Counter())[row.move] += 1
            self._newest = max(self._newest, row.recorded_at)
        # what was recorded before `settled` has committed: it will not be read again
        settled = max(self._floor, min(self._newest, now - OVERLAP))
        self._seen = {k: at for k, at in self._seen.items() if at >= settled}
        self._floor = settled
        kept_from = _minute(now - KEEP)
        if kept_from > self._kept_from:
            self._minutes = {m: c for m, c in self._minutes.items() if m >= kept_from}
            self._kept_from = kept_from

    def counts(self, since: datetime | None) -> list[FiredMove]:
        with self._lock:
            self._refresh(self.clock())
            assert self._kept_from is not None
            if since is None:
                found = Counter(self._total)
            elif since < self._kept_from:
                found = None
            else:
                found = Counter()
                first = _minute(since)
                for minute, moves in self._minutes.items():
                    if minute >= first:
                        found.update(moves)
        if found is None:
            with self.store.reading() as conn:
                return fired_moves(conn, since)
        return [FiredMove(*move, n) for move, n in found.items() if n]
