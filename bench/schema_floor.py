"""Where the floor of persist_batch goes: our statements on our schema, then on copies with parts
of the schema taken away, next to the conventional anchor (a), all measured together.

    python bench/schema_floor.py                   # 100k entities, batches of 1000
    python bench/schema_floor.py --entities 20000  # the --quick size

The evidence behind "persist_batch_conventional is bounded by the schema": the engine runs at
its floor (persist_batch_floor ≈ 1), so its ratio to the hand-written loop can only rise as far
as the floor does. Every variant starts from the same database of fresh entities as the engine
writes it, changed by plain DDL and VACUUMed. Each runs the same batches, with the events in
one random order: BEGIN IMMEDIATE, the SELECT of the rows, executemany UPDATE of the heads,
executemany INSERT of the transitions, COMMIT, with every parameter computed beforehand
(`anchors.OwnFloor`). The lanes are interleaved batch by batch. Each line prints its time per
transition and the anchor's rate divided by its own, on the scale of
persist_batch_conventional.

Variants, each taking away more than the one before it. Only the first keeps every product
query indexed:
- floor: main's schema;
- - web sort orders: without the web view's keyset indexes on (updated_at, id) and
  (state_entered_at, id), so its pages by those orders would scan;
- - entity indexes: also without every other secondary entity index except one on lifecycle
  and state, as the anchor has one on state. Due refreshes, deadlines, leases, children,
  profiles and the overview would then scan;
- - history by time: also without `ix_transition_recorded` (`fsm watch`, the web view's recent
  changes). The history keeps its (entity_id, seq) key, as the anchor does;
- history by rowid: also with that key dropped (an append-only table, what back-pointers
  would cost at most). History by entity would then scan.

And one variant on its own, outside the ladder: history by rowid on main's schema otherwise
whole, i.e. the most an append-only history with per-entity back-pointers could save while
every other product query keeps its index.
"""

from __future__ import annotations

import argparse
import random
import sqlite3
import statistics
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from time import perf_counter

from anchors import ConventionalFsm, OwnFloor
from benchlib import SERVICE, alternate, batch_event, build_template
from benchlib import copy_database as copy
from memstore import MemoryStore
from rawfsm import Rules

from fsm import Engine

WEB_ORDERS = ("DROP INDEX ix_entity_updated_at_id", "DROP INDEX ix_entity_state_entered_at_id")
ENTITY_INDEXES = tuple(
    f"DROP INDEX {name}"
    for name in (
        "ix_entity_states",
        "ix_entity_next_refresh_at",
        "ix_entity_deadline_at",
        "ix_entity_lease_owner",
        "ix_entity_parent_id",
        "ix_entity_profile",
        "ix_entity_created_at_id",
    )
)
HISTORY_BY_TIME = ("DROP INDEX ix_transition_recorded",)
HISTORY_BY_ROWID = (
    "CREATE TABLE transition_appended AS SELECT * FROM transition WHERE 0",
    "DROP TABLE transition",
    "ALTER TABLE transition_appended RENAME TO transition",
)
# the table rebuilt by HISTORY_BY_ROWID has no index; this puts `ix_transition_recorded` back
RECORDED_INDEX = (
    "CREATE INDEX ix_transition_recorded ON transition (recorded_at, entity_id, seq,"
    " definition_version, event, from_state, to_state)",
)
VARIANTS: dict[str, tuple[str, ...]] = {
    "floor": (),
    "- web sort orders": WEB_ORDERS,
    "- entity indexes": WEB_ORDERS + ENTITY_INDEXES,
    "- history by time": WEB_ORDERS + ENTITY_INDEXES + HISTORY_BY_TIME,
    "history by rowid": WEB_ORDERS + ENTITY_INDEXES + HISTORY_BY_TIME + HISTORY_BY_ROWID,
    "floor, history by rowid": HISTORY_BY_ROWID + RECORDED_INDEX,
}


def prepared(template: Path, target: Path, ddl: Sequence[str]) -> Path:
    path = copy(template, target)
    conn = sqlite3.connect(path, isolation_level=None)
    for statement in ddl:
        conn.execute(statement)
    conn.execute("VACUUM")
    conn.close()
    return path


def conventional_lane(
    path: Path, ids: Sequence[str], rules: Rules, events: Sequence[tuple[str, str]], size: int
) -> tuple[ConventionalFsm, Callable[[int], float]]:
    ConventionalFsm.build(path, ids, "SUBMITTED")
    anchor = ConventionalFsm(path, rules)

    def lane(chunk: int) -> float:
        part = events[chunk * size : (chunk + 1) * size]
        began = perf_counter()
        anchor.apply(part)
        return perf_counter() - began

    return anchor, lane


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="the persist_batch floor, schema part by part")
    parser.add_argument("--entities", type=int, default=100_000)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args(argv)
    rules = Rules(Engine(MemoryStore(), migrate=False).lifecycle(SERVICE))
    names = [*VARIANTS, "conventional (a)"]
    times: dict[str, list[float]] = {name: [] for name in names}
    with tempfile.TemporaryDirectory(prefix="fsm-schema-floor-") as tmp:
        template = Path(tmp) / "template.db"
        ids = build_template(template, args.entities)
        events = [(i, batch_event(k)) for k, i in enumerate(ids)]
        random.Random(12).shuffle(events)
        for rep in range(args.reps):
            floors = [
                OwnFloor(
                    prepared(template, Path(tmp) / f"{rep}-{k}.db", ddl),
                    rules,
                    events,
                    args.batch_size,
                )
                for k, ddl in enumerate(VARIANTS.values())
            ]
            anchor, anchor_lane = conventional_lane(
                Path(tmp) / f"{rep}-conventional.db", ids, rules, events, args.batch_size
            )
            chunks = -(-args.entities // args.batch_size)
            totals = alternate(chunks, [f.lane for f in floors] + [anchor_lane])
            for name, total in zip(names, totals, strict=True):
                times[name].append(total)
            for f in floors:
                f.close()
            anchor.close()
    anchor_runs = times["conventional (a)"]
    print(f"{args.entities:,} entities, batches of {args.batch_size:,}, {args.reps} repetitions")
    for name, runs in times.items():
        per = statistics.median(runs) / args.entities * 1e6
        ratio = statistics.median(a / r for a, r in zip(anchor_runs, runs, strict=True))
        print(f"  {name:<20} {per:7.1f} us/transition   conventional ÷ this {ratio:5.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
