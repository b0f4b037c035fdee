"""Where the engine's time goes on the persist paths: cProfile plus the SQLite floor.

    python bench/profile_hot.py                 # both paths, 100k entities, top 20 entries
    python bench/profile_hot.py --only single   # Engine.fire only
    python bench/profile_hot.py --cache-mib 64  # same, with PRAGMA cache_size raised (experiment)

For each path it prints:
- wall time per event without the profiler, and with it;
- the profile's own time grouped by layer (SQLite C calls, SQLAlchemy, fsm, storage, other);
- the top entries by own time;
- the floor: stdlib sqlite3 running the very statements the engine runs (BEGIN IMMEDIATE, the
  SELECT of the entity rows, the versioned UPDATE, the transition INSERT, COMMIT) with every
  parameter computed beforehand, i.e. what SQLite alone costs for the same work.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import pstats
import sqlite3
import tempfile
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from time import perf_counter
from typing import Any

from benchlib import (
    SERVICE,
    Rules,
    batch_event,
    build_template,
    copy_database,
    life_event,
    sqlite_url,
)
from sqlalchemy import event as sa_event

from fsm import Engine, Event, Store
from storage.database import _SQLITE_PRAGMAS
from storage.hotsql import HotSql
from storage.records import EntityUpdate, TransitionRow

Layer = Callable[[str, str], bool]
LAYERS: tuple[tuple[str, Layer], ...] = (
    ("sqlite3 C calls", lambda f, n: f == "~" and "sqlite3." in n),
    ("sqlalchemy", lambda f, n: "/sqlalchemy/" in f),
    ("fsm", lambda f, n: "/fsm/" in f),
    ("storage", lambda f, n: "/storage/" in f),
)


def open_engine(path: Path, cache_mib: int) -> Engine:
    store = Store(sqlite_url(path))
    if cache_mib:

        def bigger_cache(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.execute(f"PRAGMA cache_size=-{cache_mib * 1024}")

        sa_event.listen(store.engine, "connect", bigger_cache)
    return Engine(store)


def layers(stats: pstats.Stats, events: int) -> str:
    totals = dict.fromkeys([name for name, _ in LAYERS] + ["other"], 0.0)
    raw: dict[tuple[str, int, str], tuple[Any, ...]] = stats.stats  # type: ignore[attr-defined]
    for (filename, _line, func), (_cc, _nc, own, *_rest) in raw.items():
        for name, match in LAYERS:
            if match(filename, func):
                totals[name] += own
                break
        else:
            totals["other"] += own
    whole = sum(totals.values())
    return "\n".join(
        f"    {name:<16} {seconds / events * 1e6:8.1f} us/event  {seconds / whole:6.1%}"
        for name, seconds in totals.items()
    )


def profiled(events: int, work: Callable[[], None], top: int) -> None:
    gc.collect()
    profile = cProfile.Profile()
    started = perf_counter()
    profile.enable()
    work()
    profile.disable()
    elapsed = perf_counter() - started
    stats = pstats.Stats(profile)
    print(f"  profiled: {elapsed / events * 1e6:.1f} us/event (profiler overhead included)")
    print("  own time by layer:")
    print(layers(stats, events))
    print(f"  top {top} by own time:")
    stats.sort_stats("tottime").print_stats(top)


def raw_connection(path: Path, cache_mib: int) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    for pragma in _SQLITE_PRAGMAS:
        conn.execute(pragma)
    if cache_mib:
        conn.execute(f"PRAGMA cache_size=-{cache_mib * 1024}")
    return conn


def floor_params(
    conn: sqlite3.Connection, rules: Rules, ids: Sequence[str], events: Sequence[str]
) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """The engine's own UPDATE and INSERT parameters for moving each entity by its event."""
    hot = HotSql("sqlite")
    heads = {
        entity_id: (state, version, seq)
        for entity_id, state, version, seq in conn.execute(
            "SELECT id, state, version, seq FROM entity"
        )
    }
    now = datetime.now(UTC)
    updates, inserts = [], []
    for entity_id, name in zip(ids, events, strict=True):
        state, version, seq = heads[entity_id]
        dest = rules.dest[(state, name)]
        limit, refresh = rules.limit[dest], rules.refresh[dest]
        update = EntityUpdate(
            id=entity_id,
            expected_version=version,
            state=dest,
            terminal=dest in rules.terminal,
            version=version + 1,
            seq=seq + 1,
            state_entered_at=now,
            deadline_at=None if limit is None else now + limit,
            next_refresh_at=None if refresh is None else now + refresh,
            updated_at=now,
            definition_version=rules.version,
        )
        row = TransitionRow(
            entity_id, seq + 1, state, dest, name, "user", {}, now, now, rules.version
        )
        updates.append(hot.update_params(update))
        inserts.append(hot.transition_params(row))
    return updates, inserts


def single(workdir: Path, fires: int, cache_mib: int, top: int) -> None:
    print(f"\n== persist_single: Engine.fire, one transition per commit ({fires} per run)")
    path = workdir / "single.db"
    ids = build_template(path, fires)
    engine = open_engine(path, cache_mib)
    for entity_id in ids:  # warm-up round
        engine.fire(entity_id, life_event(0))
    started = perf_counter()
    for entity_id in ids:
        engine.fire(entity_id, life_event(1))
    print(f"  wall: {(perf_counter() - started) / fires * 1e6:.1f} us/event")

    def work() -> None:
        for entity_id in ids:
            engine.fire(entity_id, life_event(2))

    profiled(fires, work, top)
    rules = Rules(engine.lifecycle(SERVICE))
    engine.close()

    hot = HotSql("sqlite")
    select = hot.select_by_ids(1, lock=False)[0]
    conn = raw_connection(path, cache_mib)
    updates, inserts = floor_params(conn, rules, ids, [life_event(3)] * len(ids))
    started = perf_counter()
    for entity_id, update, insert in zip(ids, updates, inserts, strict=True):
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(select, (entity_id,)).fetchall()
        conn.execute(hot.update_head, update)
        conn.execute(hot.insert_transition, insert)
        conn.commit()
    floor = (perf_counter() - started) / fires * 1e6
    print(
        f"  floor (sqlite3: BEGIN IMMEDIATE, SELECT, UPDATE, INSERT, COMMIT): {floor:.1f} us/event"
    )
    conn.close()


def batch(workdir: Path, entities: int, size: int, cache_mib: int, top: int) -> None:
    print(f"\n== persist_batch: Engine.apply, {entities:,} fresh entities, batches of {size:,}")
    template = workdir / "batch-template.db"
    ids = build_template(template, entities)
    events = [Event(i, batch_event(k)) for k, i in enumerate(ids)]
    half = entities // 2

    path = copy_database(template, workdir / "batch-plain.db")
    engine = open_engine(path, cache_mib)
    started = perf_counter()
    for start in range(0, entities, size):
        engine.apply(events[start : start + size])
    print(f"  wall: {(perf_counter() - started) / entities * 1e6:.1f} us/event")
    rules = Rules(engine.lifecycle(SERVICE))
    engine.close()

    path = copy_database(template, workdir / "batch-profiled.db")
    engine = open_engine(path, cache_mib)
    for start in range(0, half, size):  # first half unprofiled: the cache and file warm up
        engine.apply(events[start : start + size])

    def work() -> None:
        for start in range(half, entities, size):
            engine.apply(events[start : start + size])

    profiled(entities - half, work, top)
    engine.close()

    path = copy_database(template, workdir / "batch-floor.db")
    hot = HotSql("sqlite")
    conn = raw_connection(path, cache_mib)
    updates, inserts = floor_params(conn, rules, ids, [e.name for e in events])
    started = perf_counter()
    for start in range(0, entities, size):
        conn.execute("BEGIN IMMEDIATE")
        part = ids[start : start + size]
        for chunk in range(0, len(part), 500):
            wanted = part[chunk : chunk + 500]
            conn.execute(hot.select_by_ids(len(wanted), lock=False)[0], wanted).fetchall()
        conn.executemany(hot.update_head, updates[start : start + size])
        conn.executemany(hot.insert_transition, inserts[start : start + size])
        conn.commit()
    floor = (perf_counter() - started) / entities * 1e6
    print(f"  floor (sqlite3: same SELECTs, executemany UPDATE + INSERT): {floor:.1f} us/event")
    conn.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="cProfile of the engine's persist paths")
    parser.add_argument("--only", choices=("single", "batch"))
    parser.add_argument("--entities", type=int, default=100_000)
    parser.add_argument("--batch-size", type=int, default=2000)
    parser.add_argument("--fires", type=int, default=1000)
    parser.add_argument("--top", type=int, default=20)
    parser.add_argument("--cache-mib", type=int, default=0, help="experiment: PRAGMA cache_size")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="fsm-profile-") as tmp:
        workdir = Path(tmp)
        if args.only in (None, "single"):
            single(workdir, args.fires, args.cache_mib, args.top)
        if args.only in (None, "batch"):
            batch(workdir, args.entities, args.batch_size, args.cache_mib, args.top)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
