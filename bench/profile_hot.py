"""Where the engine's time goes on the persist paths: cProfile plus the SQLite floor.

    python bench/profile_hot.py                 # the persist paths, 100k entities, top 20 entries
    python bench/profile_hot.py --only single   # Engine.fire only
    python bench/profile_hot.py --only refresh  # one refresh cycle of sim services (the worker)
    python bench/profile_hot.py --cache-mib 64  # same, with PRAGMA cache_size raised (experiment)

For each path it prints:
- wall time per event without the profiler, and with it;
- the profile's own time grouped by layer (SQLite C calls, SQLAlchemy, fsm, storage, other);
- the top entries by own time;
- the floor: stdlib sqlite3 running the very statements the engine runs (BEGIN IMMEDIATE, the
  SELECT of the entity rows, the versioned UPDATE, the transition INSERT, COMMIT) with every
  parameter computed beforehand, i.e. what SQLite alone costs for the same work.

The refresh path (`--only refresh`, not in the default run) profiles the second half of one
refresh cycle of the `refresh_cycle_100k` benchmark (sim services, about half transitioning, the
first half unprofiled to warm up) and also splits its time by phase of `Worker.refresh_batch`,
next to the anchor's in-memory triggers for the same events.
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
    CLAIM_BATCH,
    CYCLE_AT,
    SERVICE,
    batch_event,
    build_sim_template,
    build_template,
    copy_database,
    life_event,
    sim_backend,
    sim_clock,
    sim_plan,
    sqlite_url,
)
from memstore import MemoryStore
from rawfsm import Rules, raw_machine, replay
from sqlalchemy import event as sa_event

from fsm import Engine, Event, Store, Worker, WorkerSettings
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


REFRESH_LAYERS: tuple[tuple[str, Layer], ...] = (
    ("sqlite3 C calls", lambda f, n: f == "~" and "sqlite3." in n),
    ("sqlalchemy", lambda f, n: "/sqlalchemy/" in f),
    ("backends (sim)", lambda f, n: "/backends/" in f),
    ("fsm", lambda f, n: "/fsm/" in f),
    ("storage", lambda f, n: "/storage/" in f),
    ("json", lambda f, n: "/json/" in f or "_json." in n),
)
# The phases of Worker.refresh_batch: (label, file suffix, function name); cumulative time.
PHASES = (
    ("claim (SELECT due + lease UPDATE)", "storage/queue.py", "claim_due"),
    ("observe (waiting for the backend's thread)", "fsm/worker.py", "_observe"),
    ("re-read the claimed rows", "storage/queue.py", "reread_claims"),
    ("decide + stage the events", "fsm/worker.py", "_apply_observation"),
    ("write heads (with marks) + transitions", "fsm/staging.py", "flush"),
    ("bookkeeping UPDATE (the unchanged rows)", "storage/queue.py", "finish_refresh"),
    ("commits", "~", "<method 'commit' of 'sqlite3.Connection' objects>"),
    ("whole refresh_batch", "fsm/worker.py", "refresh_batch"),
)


def layers(stats: pstats.Stats, events: int, table: tuple[tuple[str, Layer], ...] = LAYERS) -> str:
    totals = dict.fromkeys([name for name, _ in table] + ["other"], 0.0)
    raw: dict[tuple[str, int, str], tuple[Any, ...]] = stats.stats  # type: ignore[attr-defined]
    for (filename, _line, func), (_cc, _nc, own, *_rest) in raw.items():
        for name, match in table:
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


def profiled(
    events: int,
    work: Callable[[], object],
    top: int,
    table: tuple[tuple[str, Layer], ...] = LAYERS,
    unit: str = "event",
) -> pstats.Stats:
    gc.collect()
    profile = cProfile.Profile()
    started = perf_counter()
    profile.enable()
    work()
    profile.disable()
    elapsed = perf_counter() - started
    stats = pstats.Stats(profile)
    print(f"  profiled: {elapsed / events * 1e6:.1f} us/{unit} (profiler overhead included)")
    print("  own time by layer:")
    print(layers(stats, events, table).replace("us/event", f"us/{unit}"))
    print(f"  top {top} by own time:")
    stats.sort_stats("tottime").print_stats(top)
    return stats


def phases(stats: pstats.Stats, entities: int) -> str:
    """Cumulative time of each phase of Worker.refresh_batch, per entity."""
    raw: dict[tuple[str, int, str], tuple[Any, ...]] = stats.stats  # type: ignore[attr-defined]
    found = dict.fromkeys([label for label, _, _ in PHASES], 0.0)
    for (filename, _line, func), (_cc, _nc, _own, cumulative, *_rest) in raw.items():
        for label, suffix, name in PHASES:
            if func == name and filename.endswith(suffix):
                found[label] += cumulative
    whole = found[PHASES[-1][0]] or 1.0
    return "\n".join(
        f"    {label:<42} {seconds / entities * 1e6:8.1f} us/entity  {seconds / whole:6.1%}"
        for label, seconds in found.items()
    )


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


def refresh(workdir: Path, entities: int, batch_size: int, top: int) -> None:
    print(
        f"\n== refresh: one Worker.refresh cycle of {entities:,} sim services, batches of "
        f"{batch_size} (the refresh_cycle_100k workload)"
    )
    template = workdir / "refresh-template.db"
    ids = build_sim_template(template, entities)
    definition = Engine(MemoryStore(), migrate=False).lifecycle(SERVICE).definition
    plan = sim_plan(template, ids, definition)
    half = entities // 2

    def open_worker(name: str) -> tuple[Engine, Worker]:
        path = copy_database(template, workdir / name)
        engine = Engine(sqlite_url(path), clock=sim_clock(CYCLE_AT))
        settings = WorkerSettings(batch_size=batch_size, max_batches_per_tick=1_000_000)
        return engine, Worker(engine, [sim_backend()], settings=settings)

    engine, worker = open_worker("refresh-plain.db")
    started = perf_counter()
    worker.refresh()
    wall = (perf_counter() - started) / entities * 1e6
    engine.close()
    _machine, model = raw_machine(definition)
    started = perf_counter()
    replay(model, plan.steps)
    anchor = (perf_counter() - started) / entities * 1e6
    print(
        f"  wall: {wall:.1f} us/entity; anchor (the same {plan.events:,} events triggered in "
        f"memory): {anchor:.1f} us/entity; {plan.moved / entities:.1%} of the entities move"
    )

    engine, worker = open_worker("refresh-profiled.db")
    due_by = engine.clock()
    for _ in range(half // batch_size):  # the first half unprofiled: cache and file warm up
        worker.refresh_batch(due_by)
    stats = profiled(
        entities - half, worker.refresh, top, REFRESH_LAYERS, "entity"
    )  # the rest of the cycle
    print("  time by phase of refresh_batch (cumulative, so nested calls overlap):")
    print(phases(stats, entities - half))
    engine.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="cProfile of the engine's persist paths")
    parser.add_argument("--only", choices=("single", "batch", "refresh"))
    parser.add_argument("--refresh-entities", type=int, default=20_000)
    parser.add_argument("--refresh-batch", type=int, default=CLAIM_BATCH)
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
        if args.only == "refresh":
            refresh(workdir, args.refresh_entities, args.refresh_batch, args.top)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
