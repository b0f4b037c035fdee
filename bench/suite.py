"""The shared part of the benchmark suites: settings, databases made once and copied, PostgreSQL
schemas."""

from __future__ import annotations

import random
import sys
import uuid
from pathlib import Path
from time import perf_counter

import psycopg
from benchlib import SimPlan, build_template, copy_database
from results import PG_URL, Config, T


class Suite:
    """What every suite shares: the settings, a working directory, databases made once."""

    def __init__(self, cfg: Config, workdir: Path, pg_url: str = PG_URL) -> None:
        self.cfg = cfg
        self.workdir = workdir
        self.pg_url = pg_url
        self.skipped: list[str] = []
        self._templates: dict[int, tuple[Path, list[str]]] = {}
        self._sim_templates: dict[int, tuple[Path, SimPlan]] = {}
        self._copies = 0

    def new_database(self, count: int, name: str) -> tuple[Path, list[str]]:
        """A new database of `count` fresh entities (setup), not shared with other runs."""
        path = self.workdir / f"{name}.db"
        return path, build_template(path, count)

    def log(self, text: str) -> None:
        print(f"  .. {text}", file=sys.stderr, flush=True)

    def template(self, count: int) -> tuple[Path, list[str]]:
        """A closed database of `count` fresh entities (setup, untimed), built once per run."""
        if count not in self._templates:
            path = self.workdir / f"template-{count}.db"
            started = perf_counter()
            ids = build_template(path, count)
            took = perf_counter() - started
            self.log(f"setup: {count:,} entities via Engine.create_many in {took:.1f}s")
            self._templates[count] = (path, ids)
        return self._templates[count]

    def fresh_copy(self, count: int) -> tuple[Path, list[str]]:
        template, ids = self.template(count)
        self._copies += 1
        return copy_database(template, self.workdir / f"run-{self._copies}.db"), ids

    def discard(self, path: Path) -> None:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)


def pg_reachable(bench: Suite, name: str) -> bool:
    try:
        with psycopg.connect(bench.pg_url, connect_timeout=3):
            return True
    except psycopg.Error as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
        bench.skipped.append(f"{name}: PostgreSQL at {bench.pg_url}: {reason}")
        return False


def pg_schema(pg_url: str) -> tuple[str, str]:
    """A new schema (its name) and the SQLAlchemy URL whose search_path is that schema."""
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    base = pg_url.replace("postgresql://", "postgresql+psycopg://", 1)
    return schema, f"{base}{'&' if '?' in base else '?'}options=-csearch_path%3D{schema}"


def drop_schema(pg_url: str, schema: str) -> None:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


def shuffled(items: list[T]) -> list[T]:
    """`items` in a fixed random order (the same in every run)."""
    random.Random(12).shuffle(items)
    return items
