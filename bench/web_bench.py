"""`fsm serve` under 100k entities: every page and API answer timed over real HTTP.

    python bench/web_bench.py                    # 100k entities on SQLite
    python bench/web_bench.py --entities 20000   # smaller
    python bench/web_bench.py --pg URL           # on PostgreSQL (a fresh schema)
    python bench/web_bench.py --json out.json
    python bench/web_bench.py --db sqlite:///big.db   # an existing database, as it is

Each page is requested `--repeat` times through uvicorn (the server `fsm serve` runs), the
overview's short cache switched off so that every request computes, after one warm-up pass
over all of them (right after a bulk load, whichever page comes first pays for reading the
database into the cache). The anchor is
`/api/health` measured in the same run: the cost of HTTP and the framework alone. A page
passes when its p95 is under 300 ms (the issue's bar).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fsm import Engine, Event, NewEntity
from fsm.web.app import ServeSettings, create_app
from tests.web_support import serving

BAR_MS = 300.0
PLAN = ("job_pending", "job_running", "ping_ok", "ping_failed", "stop")


def populate(url: str, count: int) -> None:
    """`count` services and hosts; services take 0..5 steps of PLAN (so every state occurs)."""
    engine = Engine(url)
    chunk = 5000
    try:
        for start in range(0, count, chunk):
            items = [
                NewEntity(
                    "host" if i % 10 == 0 else "service",
                    {"name": f"entity {i}", "team": ("red", "blue", "green")[i % 3], "n": i},
                    f"e-{i:07d}",
                )
                for i in range(start, min(count, start + chunk))
            ]
            engine.create_many(items)
            for step, name in enumerate(PLAN):
                events = [
                    Event(item.id, name, {"step": step})
                    for item in items
                    if item.lifecycle == "service" and int(item.id[2:]) % (len(PLAN) + 1) > step
                ]
                if events:
                    engine.apply(events)
    finally:
        engine.close()


def time_get(client: httpx.Client, path: str, repeat: int) -> list[float]:
    times = []
    client.get(path).raise_for_status()  # warm: first use of a query plan, a cache
    for _ in range(repeat):
        began = time.perf_counter()
        answer = client.get(path)
        times.append((time.perf_counter() - began) * 1000)
        answer.raise_for_status()
    return times


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[-1] if len(values) >= 2 else values[0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--entities", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--pg", metavar="URL", help="PostgreSQL server URL (a fresh schema)")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--db", metavar="URL", help="measure this database as it is")
    args = parser.parse_args()
    if args.db:
        return measure(args.db, args)
    with tempfile.TemporaryDirectory() as tmp:
        schema = None
        if args.pg:
            schema = f"bench_{uuid.uuid4().hex[:10]}"
            with psycopg.connect(args.pg, autocommit=True) as conn:
                conn.execute(f'CREATE SCHEMA "{schema}"')
            base = args.pg.replace("postgresql://", "postgresql+psycopg://", 1)
            url = f"{base}{'&' if '?' in base else '?'}options=-csearch_path%3D{schema}"
        else:
            url = f"sqlite:///{tmp}/bench.db"
        try:
            began = time.perf_counter()
            populate(url, args.entities)
            print(f"populated {args.entities} entities in {time.perf_counter() - began:.1f} s")
            return measure(url, args)
        finally:
            if schema is not None:
                with psycopg.connect(args.pg, autocommit=True) as conn:
                    conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


def measure(url: str, args: argparse.Namespace) -> int:
    app = create_app(ServeSettings(url))
    app.state.reader.cache_seconds = 0.0  # every overview computed, none served from cache
    middle = f"e-{args.entities // 2:07d}"
    with serving(app) as base, httpx.Client(base_url=base, timeout=30) as client:
        deep = client.get("/api/entities", params={"limit": 50, "after": None}).json()
        cursor = None
        for _ in range(3):  # a cursor a few pages in; its cost is the same at page 10 000
            cursor = client.get(
                "/api/entities", params={"limit": 50, **({"after": cursor} if cursor else {})}
            ).json()["next_cursor"]
        del deep
        pages = {
            "anchor: /api/health": "/api/health",
            "overview (day)": "/?window=day",
            "overview (all)": "/?window=all",
            "entities": "/entities",
            "entities, lifecycle+state": "/entities?lifecycle=service&state=HEALTHY",
            "entities, by updated desc": "/entities?sort=updated_at&desc=true",
            "entities, later page": f"/entities?after={cursor}",
            "entities, text search": "/entities?q=entity+4242",
            "entities, search no match": "/entities?q=no-such-text",
            "one entity": f"/entities/{middle}",
            "api: entities": "/api/entities?lifecycle=service&limit=100",
            "api: overview (all)": "/api/overview?window=all",
            "api: history": f"/api/entities/{middle}/history",
            "metrics": "/metrics",
        }
        for path in pages.values():  # one pass first: the database's pages into the cache
            client.get(path).raise_for_status()
        results = {}
        for name, path in pages.items():
            values = time_get(client, path, args.repeat)
            results[name] = {"p50_ms": statistics.median(values), "p95_ms": p95(values)}
    anchor = results["anchor: /api/health"]["p95_ms"]
    print(f"{'page':<30} {'p50 ms':>8} {'p95 ms':>8} {'x anchor':>9}  < {BAR_MS:.0f} ms")
    failed = 0
    for name, r in results.items():
        ok = r["p95_ms"] < BAR_MS
        failed += not ok
        r["ratio_to_anchor"] = r["p95_ms"] / anchor
        r["passed"] = ok
        print(
            f"{name:<30} {r['p50_ms']:8.1f} {r['p95_ms']:8.1f} {r['ratio_to_anchor']:9.1f}"
            f"  {'ok' if ok else 'SLOW'}"
        )
    if args.json:
        args.json.write_text(json.dumps({"entities": args.entities, "pages": results}, indent=2))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
