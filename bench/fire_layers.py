"""Where persist_single's gap lies: one commit per event, the engine's parts composed with fewer
and fewer of its layers, next to the persist_single anchor, interleaved round by round.

    python bench/fire_layers.py [--dir /dev/shm] [--entities 200] [--rounds 30]

Lanes, each on its own copy of one database of fresh services, every entity fired once per
round (an event that changes its state):

- fire: `Engine.fire`, the real path;
- staged: the store's transaction, `Engine.stage`, `add_checked`, `flush`, `committed`
  (without `apply`'s batch bookkeeping: the checked-event list, the retry closure, the result);
- unit: the store's transaction and unit of work (`lock_entities`, `write`) around the
  engine's decision on one `Head` (without the staging);
- driver: the engine's check, read, row conversion, decision, records and parameters on the
  driver connection alone (BEGIN IMMEDIATE .. COMMIT), without the store's transaction
  handling: a prototype of the least a persisted fire does with the engine's own parts, not a
  path the engine has (it has no cascade, data merge, retry after a full disk, or error
  translation);
- anchor: persist_single's raw sqlite3 writer (no read, no decision).

Prints the median µs per commit of each lane over the rounds after the first five, and each
lane's ratio to the anchor. Reference only (no target): it explains persist_single.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
from collections.abc import Callable
from pathlib import Path
from time import perf_counter

from benchlib import SERVICE, build_template, life_event, sqlite_url
from rawfsm import RawSqliteWriter, Rules

from fsm import Engine, Event
from fsm.staging import Head, check_event
from storage.records import TransitionRow

Lane = Callable[[str, str], object]


def staged(engine: Engine) -> Lane:
    def fire(entity_id: str, name: str) -> object:
        event = Event(entity_id, name)
        checked = check_event(event)
        with engine.store.transaction() as uow:
            batch = engine.stage(uow, uow.lock_entities([entity_id]))
            outcome = batch.add_checked(event, checked)
            batch.flush()
        engine.committed(batch)
        return outcome

    return fire


def unit(engine: Engine) -> Lane:
    def fire(entity_id: str, name: str) -> object:
        checked = check_event(Event(entity_id, name))
        with engine.store.transaction() as uow:
            head = Head(uow.lock_entities([entity_id])[entity_id])
            now = engine.now()
            transition = engine._step(head, checked, now)
            assert isinstance(transition, TransitionRow)
            uow.write([head.update(now)], [transition])
        return transition

    return fire


def driver(engine: Engine) -> Lane:
    store = engine.store
    hot = store._hot
    select, _ = hot.select_by_ids(1, lock=False)

    def fire(entity_id: str, name: str) -> object:
        checked = check_event(Event(entity_id, name))
        conn = store._writer().connection.driver_connection
        assert conn is not None
        conn.execute("BEGIN IMMEDIATE")
        try:
            cursor = conn.cursor()
            head = Head(hot.entity_from(cursor.execute(select, (entity_id,)).fetchall()[0]))
            now = engine.now()
            transition = engine._step(head, checked, now)
            assert isinstance(transition, TransitionRow)
            if cursor.execute(hot.update_head, hot.update_params(head.update(now))).rowcount != 1:
                raise RuntimeError(f"version conflict on {entity_id}")
            cursor.execute(hot.insert_transition, hot.transition_params(transition))
            conn.commit()
        except BaseException:
            conn.rollback()
            raise
        return transition

    return fire


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", type=Path, default=None, help="where the databases go")
    parser.add_argument("--entities", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="fire-layers-", dir=args.dir))
    try:
        template = work / "template.db"
        ids = build_template(template, args.entities)
        lanes: dict[str, Lane] = {}
        engines: list[Engine] = []
        for name, make in (("fire", None), ("staged", staged), ("unit", unit), ("driver", driver)):
            path = work / f"{name}.db"
            shutil.copy(template, path)
            engine = Engine(sqlite_url(path))
            engine.lifecycle(SERVICE)
            engines.append(engine)
            lanes[name] = engine.fire if make is None else make(engine)
        anchor_path = work / "anchor.db"
        shutil.copy(template, anchor_path)
        writer = RawSqliteWriter(anchor_path, Rules(engines[0].lifecycle(SERVICE)), ids)
        lanes["anchor"] = writer.step
        times: dict[str, list[float]] = {name: [] for name in lanes}
        for round_no in range(args.rounds):
            event = life_event(round_no)
            order = list(lanes)
            order = order[round_no % len(order) :] + order[: round_no % len(order)]
            for name in order:
                lane = lanes[name]
                began = perf_counter()
                for entity_id in ids:
                    lane(entity_id, event)
                times[name].append((perf_counter() - began) / len(ids) * 1e6)
        anchor = statistics.median(times["anchor"][5:])
        print(f"{args.entities} entities, {args.rounds} rounds, databases in {work.parent}")
        for name, values in times.items():
            per = statistics.median(values[5:])
            print(f"  {name:7s} {per:7.1f} us/commit   anchor / it {anchor / per:.3f}")
        writer.close()
        for engine in engines:
            engine.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
