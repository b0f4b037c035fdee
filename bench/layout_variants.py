"""The floor of the persist_batch statements on variants of the history layout, measured together.

    python bench/layout_variants.py                  # 100k entities, batches of 1000
    python bench/layout_variants.py --entities 20000 # smaller

Evidence for a future history-layout migration (none is on main yet). Every variant starts from
the same database of fresh entities as the engine writes it with main's schema (history keyed
by (entity_id, seq)), changed by plain DDL, then VACUUMed so all
start equally compact. Each then runs the same batches (events in one random order): BEGIN
IMMEDIATE, the SELECT of the rows, executemany UPDATE of the heads, executemany INSERT of the
transitions, COMMIT, every parameter computed beforehand. The variants run interleaved batch by
batch; times are relative to the first (the old layout).

Variants:
- old: main's layout, transition keyed by (entity_id, seq): every append dirties a random
  page of that index;
- backptr: transition keyed by an integer id (appends are local), each row pointing at the
  entity's previous transition, the entity at its last; history = a walk along the pointers;
- backptr+partial: also the mostly-NULL deadline_at / parent_id indexes made partial;
- backptr+partial+ckpt: also PRAGMA wal_autocheckpoint=10000;
- old+ckpt: the old layout with that checkpoint setting only.
"""

from __future__ import annotations

import argparse
import random
import sqlite3
import statistics
import tempfile
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from time import perf_counter
from typing import Any

from benchlib import SERVICE, alternate, batch_event, build_template
from benchlib import copy_database as copy
from memstore import MemoryStore
from rawfsm import Rules

from fsm import Engine
from storage.database import _SQLITE_PRAGMAS

OLD_INSERT = (
    "INSERT INTO transition (entity_id, seq, from_state, to_state, event, source, payload, "
    "observed_at, recorded_at, definition_version) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
PTR_INSERT = (
    "INSERT INTO transition (id, entity_id, seq, from_state, to_state, event, source, payload, "
    "observed_at, recorded_at, definition_version, prev_id) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
HEAD = (
    "state = ?, terminal = ?, version = ?, seq = ?, state_entered_at = ?, deadline_at = ?, "
    "next_refresh_at = ?, updated_at = ?, definition_version = ?"
)
OLD_UPDATE = f"UPDATE entity SET {HEAD} WHERE id = ? AND version = ?"
PTR_UPDATE = f"UPDATE entity SET {HEAD}, last_transition_id = ? WHERE id = ? AND version = ?"

BACKPTR_DDL = (
    "ALTER TABLE entity ADD COLUMN last_transition_id INTEGER",
    "DROP TABLE transition",
    "CREATE TABLE transition (id INTEGER PRIMARY KEY, entity_id VARCHAR(200) NOT NULL "
    "REFERENCES entity (id), seq INTEGER NOT NULL, from_state VARCHAR(200) NOT NULL, "
    "to_state VARCHAR(200) NOT NULL, event VARCHAR(200) NOT NULL, source VARCHAR(200) NOT NULL,"
    " payload JSON NOT NULL, observed_at VARCHAR NOT NULL, recorded_at VARCHAR NOT NULL, "
    "definition_version VARCHAR(64) NOT NULL, prev_id INTEGER)",
    "CREATE INDEX ix_transition_recorded_at ON transition (recorded_at)",
)
PARTIAL_DDL = (
    "DROP INDEX ix_entity_deadline_at",
    "CREATE INDEX ix_entity_deadline_at ON entity (deadline_at) WHERE deadline_at IS NOT NULL",
    "DROP INDEX ix_entity_parent_id",
    "CREATE INDEX ix_entity_parent_id ON entity (parent_id) WHERE parent_id IS NOT NULL",
)
VARIANTS: dict[str, tuple[tuple[str, ...], bool, bool]] = {  # DDL, back-pointers, checkpoint
    "old": ((), False, False),
    "backptr": (BACKPTR_DDL, True, False),
    "backptr+partial": (BACKPTR_DDL + PARTIAL_DDL, True, False),
    "backptr+partial+ckpt": (BACKPTR_DDL + PARTIAL_DDL, True, True),
    "old+ckpt": ((), False, True),
}


class Variant:
    def __init__(
        self,
        path: Path,
        ddl: Sequence[str],
        pointers: bool,
        checkpoint: bool,
        rules: Rules,
        events: Sequence[tuple[str, str]],
        size: int,
    ) -> None:
        conn = sqlite3.connect(path, isolation_level=None)
        for statement in ddl:
            conn.execute(statement)
        conn.execute("VACUUM")
        for pragma in _SQLITE_PRAGMAS:
            conn.execute(pragma)
        if checkpoint:
            conn.execute("PRAGMA wal_autocheckpoint=10000")
        self.conn, self.pointers, self.size = conn, pointers, size
        heads = {
            i: (s, v, q)
            for i, s, v, q in conn.execute("SELECT id, state, version, seq FROM entity")
        }
        stamp = datetime.now(UTC).isoformat(timespec="microseconds")
        self.ids = [e[0] for e in events]
        self.updates: list[tuple[Any, ...]] = []
        self.inserts: list[tuple[Any, ...]] = []
        for n, (entity_id, name) in enumerate(events, start=1):
            state, version, seq = heads[entity_id]
            dest = rules.dest[(state, name)]
            head = (dest, dest in rules.terminal, version + 1, seq + 1, stamp, None, stamp, stamp)
            row = (entity_id, seq + 1, state, dest, name, "user", "{}", stamp, stamp, rules.version)
            if pointers:
                self.updates.append((*head, rules.version, n, entity_id, version))
                self.inserts.append((n, *row, None))
            else:
                self.updates.append((*head, rules.version, entity_id, version))
                self.inserts.append(row)

    def lane(self, chunk: int) -> float:
        start, end = chunk * self.size, (chunk + 1) * self.size
        conn = self.conn
        began = perf_counter()
        conn.execute("BEGIN IMMEDIATE")
        if self.pointers:  # how the engine learns the next ids, under the write lock
            conn.execute("SELECT max(id) FROM transition").fetchone()
        part = self.ids[start:end]
        for at in range(0, len(part), 500):
            wanted = part[at : at + 500]
            marks = ", ".join("?" * len(wanted))
            conn.execute(f"SELECT * FROM entity WHERE id IN ({marks})", wanted).fetchall()
        conn.executemany(PTR_UPDATE if self.pointers else OLD_UPDATE, self.updates[start:end])
        conn.executemany(PTR_INSERT if self.pointers else OLD_INSERT, self.inserts[start:end])
        conn.commit()
        return perf_counter() - began


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="history layout variants, floor statements")
    parser.add_argument("--entities", type=int, default=100_000)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--reps", type=int, default=2)
    args = parser.parse_args(argv)
    rules = Rules(Engine(MemoryStore(), migrate=False).lifecycle(SERVICE))
    with tempfile.TemporaryDirectory(prefix="fsm-layout-") as tmp:
        template = Path(tmp) / "template.db"
        ids = build_template(template, args.entities)
        events = [(i, batch_event(k)) for k, i in enumerate(ids)]
        random.Random(12).shuffle(events)
        times: dict[str, list[float]] = {name: [] for name in VARIANTS}
        for rep in range(args.reps):
            variants = [
                Variant(
                    copy(template, Path(tmp) / f"{rep}-{k}.db"),
                    *spec,
                    rules,
                    events,
                    args.batch_size,
                )
                for k, spec in enumerate(VARIANTS.values())
            ]
            totals = alternate(-(-args.entities // args.batch_size), [v.lane for v in variants])
            for name, total in zip(VARIANTS, totals, strict=True):
                times[name].append(total)
            for v in variants:
                v.conn.close()
    base = times["old"]
    print(f"{args.entities:,} entities, batches of {args.batch_size:,}, {args.reps} repetitions")
    for name, runs in times.items():
        per = statistics.median(runs) / args.entities * 1e6
        rel = statistics.median(r / b for r, b in zip(runs, base, strict=True))
        print(f"  {name:<22} {per:7.1f} us/transition  {rel:5.2f} x old")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
