"""What HOT updates would give the PostgreSQL refresh cycle (issue 12, pg_refresh_vs_sqlite).

    PYTHONPATH=. python bench/pg_hot_claims.py [ENTITIES] [REPETITIONS]

A refresh cycle rewrites each entity row two or three times (claim, head update when it moved,
finish), and none of those updates is HOT: each changes an indexed column, so PostgreSQL adds an
entry to every one of the entity table's 12 indexes per rewrite. The claim changes only
`lease_owner` and `lease_expires_at`; only `ix_entity_lease_owner` (a read index of the web
view, migration 0005) makes it non-HOT. This runs one worker's refresh cycle of the
pg_refresh_vs_sqlite workload on (A) the schema as migrated and (B) the same schema without that
index and with fillfactor 70 (room on the page for the new row version), alternating A and B,
the rows put back and VACUUM ANALYZEd before each run, and prints times and HOT counts.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import psycopg
from benchlib import build_sim_template
from refresh_runs import PgRefresh
from results import PG_URL
from suite import pg_schema

VARIANTS = ("A", "B")


def _lane(variant: str, count: int) -> PgRefresh:
    schema, url = pg_schema(PG_URL)
    build_sim_template(url, count)
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f'SET search_path TO "{schema}"')
        if variant == "B":
            conn.execute("DROP INDEX ix_entity_lease_owner")
            conn.execute("ALTER TABLE entity SET (fillfactor = 70)")
            conn.execute("VACUUM FULL entity")
        conn.execute("CREATE TABLE entity_saved AS SELECT * FROM entity")
    return PgRefresh(PG_URL, schema, url)


def _updates(schema: str) -> tuple[int, int]:
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        row = conn.execute(
            "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables "
            "WHERE relname = 'entity' AND schemaname = %s",
            (schema,),
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000
    reps = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    lanes = {v: _lane(v, count) for v in VARIANTS}
    seconds: dict[str, list[float]] = {v: [] for v in VARIANTS}
    try:
        for rep in range(reps):
            for variant in VARIANTS if rep % 2 == 0 else VARIANTS[::-1]:
                lane = lanes[variant]
                run = lane.run(100, 5)
                before = _updates(lane.schema)
                began = time.perf_counter()
                while run.worker.refresh().claimed:
                    pass
                seconds[variant].append(time.perf_counter() - began)
                run.engine.close()
                time.sleep(0.7)  # the statistics collector's delay
                after = _updates(lane.schema)
                print(
                    f"{variant} {seconds[variant][-1]:.2f}s, row updates "
                    f"{after[0] - before[0]:,}, HOT {after[1] - before[1]:,}",
                    flush=True,
                )
    finally:
        for lane in lanes.values():
            lane.close()
    for variant, times in seconds.items():
        median = statistics.median(times)
        print(f"{variant}: median {median:.2f}s, {median / count * 1e6:.0f} us/entity")


if __name__ == "__main__":
    main()
