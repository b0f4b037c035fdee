"""(e) The refresh floor: the worker's statements alone, every parameter computed beforehand."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path
from time import perf_counter
from typing import Any

from anchors import raw_connection
from benchlib import SimPlan
from rawfsm import Rules, raw_machine

from fsm.lifecycle import Lifecycle
from storage.hotsql import ENTITY_COLUMNS, HotSql
from storage.records import EntityUpdate, RefreshMark, TransitionRow

Write = tuple[str | None, Any, Any]  # head statement (None: bookkeeping only), moves, params


def planned_writes(
    hot: HotSql,
    stored: dict[str, Any],
    plan: SimPlan,
    lifecycle: Lifecycle,
    rules: Rules,
    now: datetime,
    owner: str,
) -> dict[str, Write]:
    """Per entity, what the write transaction of its batch runs, parameters computed: the
    head's statement and parameters with its mark (a changed head), or its mark alone (a look
    that changed nothing: the bookkeeping UPDATE gets the `RefreshMark`), and its transitions.
    `stored` holds each row's values in ENTITY_COLUMNS order, as `hot`'s driver returns them."""
    _machine, model = raw_machine(lifecycle.definition)
    writes: dict[str, Write] = {}
    for entity_id, (state, events), seen in zip(plan.ids, plan.steps, plan.data, strict=True):
        values = stored[entity_id]
        version, seq = values[5], values[6]
        model.state = state
        moves = []
        for name in events:
            before = model.state
            model.trigger(name)
            if model.state != before:
                seq += 1
                row = TransitionRow(
                    entity_id, seq, before, model.state, name, "sim", {}, now, now, rules.version
                )
                moves.append(hot.transition_params(row))
        dest = model.state
        raw = values[15]
        stored_data = json.loads(raw) if isinstance(raw, str) else dict(raw or {})
        data = {**stored_data, **seen}
        changed = data != stored_data
        refresh = rules.refresh[dest]
        mark = RefreshMark(entity_id, None if refresh is None else now + refresh, 0, now)
        if not moves and not changed:  # the look changed nothing: the bookkeeping UPDATE
            writes[entity_id] = (None, (), mark)
            continue
        limit = rules.limit[dest]
        head = EntityUpdate(
            entity_id,
            version,
            dest,
            dest in rules.terminal,
            version + len(moves) + changed,
            seq,
            now,
            None if limit is None else now + limit,
            None if refresh is None else now + refresh,
            now,
            rules.version,
            data if changed else None,
        )
        sql = hot.update_statements[(changed, True)]  # the head records the mark too
        writes[entity_id] = (sql, moves, hot.update_params(head, None, mark))
    return writes


class TickedLane:
    """A floor's lane: one chunk is up to `tick` batches, as one `Worker.refresh()` call."""

    OWNER = "floor"  # the lease owner the floor claims as
    tick: int

    def _batch(self) -> bool:
        raise NotImplementedError

    def lane(self, _chunk: int) -> float:
        began = perf_counter()
        for _ in range(self.tick):
            if not self._batch():
                break
        return perf_counter() - began


class RefreshFloor(TickedLane):
    """(e) One refresh cycle as the worker's statements alone: per batch a claim transaction
    (the due SELECT in next_refresh_at order + the lease UPDATE) and a write transaction (the
    re-read of the claimed rows; executemany of the heads the look changed, with their data
    where it changed and their next-refresh mark in the same UPDATE; the transitions; the
    bookkeeping UPDATE of the rows the look left as they were), every parameter computed
    beforehand from the sim plan, grouped by statement as the store groups them."""

    def __init__(
        self,
        path: Path,
        plan: SimPlan,
        lifecycle: Lifecycle,
        rules: Rules,
        now: datetime,
        batch: int,
        tick: int,
    ) -> None:
        self.conn = raw_connection(path)
        self.hot = hot = HotSql("sqlite")
        self.batch, self.tick = batch, tick
        out = hot.codec.time_out
        self.now_text, self.lease_text = out(now), out(now + timedelta(seconds=30))
        stored = {
            v[0]: v for v in self.conn.execute(f"SELECT {', '.join(ENTITY_COLUMNS)} FROM entity")
        }
        self.writes = planned_writes(hot, stored, plan, lifecycle, rules, now, self.OWNER)
        for entity_id, (sql, moves, mark) in self.writes.items():
            if sql is None:  # SQLite's bookkeeping UPDATE takes one row of parameters per mark
                params = (out(mark.next_refresh_at), 0, out(now), entity_id, self.OWNER)
                self.writes[entity_id] = (None, moves, params)
        self.claim = (
            f"SELECT {', '.join(ENTITY_COLUMNS)} FROM entity WHERE next_refresh_at <= ? AND "
            "(lease_expires_at IS NULL OR lease_expires_at <= ?) AND +lifecycle IN (?) "
            "ORDER BY next_refresh_at LIMIT ?"
        )
        self.claimed = 0

    def _batch(self) -> bool:
        conn, hot = self.conn, self.hot
        conn.execute("BEGIN IMMEDIATE")
        rows = conn.execute(
            self.claim, (self.now_text, self.now_text, "service", self.batch)
        ).fetchall()
        ids = [r[0] for r in rows]
        if ids:
            marks = ", ".join("?" * len(ids))
            conn.execute(
                f"UPDATE entity SET lease_owner = ?, lease_expires_at = ? WHERE id IN ({marks})",
                (self.OWNER, self.lease_text, *ids),
            )
        conn.commit()
        if not ids:
            return False
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(hot.select_by_ids(len(ids), lock=False)[0], ids).fetchall()
        writes = [self.writes[i] for i in ids]
        heads: dict[str, list[tuple[Any, ...]]] = {}  # the store's grouping by statement
        for sql, _moves, params in writes:
            if sql is not None:
                heads.setdefault(sql, []).append(params)
        for sql, rows in heads.items():
            conn.executemany(sql, rows)
        conn.executemany(hot.insert_transition, [m for w in writes for m in w[1]])
        conn.executemany(hot.finish_refresh, [w[2] for w in writes if w[0] is None])
        conn.commit()
        self.claimed += len(ids)
        return True

    def close(self) -> None:
        self.conn.close()
