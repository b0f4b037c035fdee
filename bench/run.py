"""Engine benchmarks, each measured against an anchor run alongside it in the same process.

    python bench/run.py                  # full run (under 2 minutes on 2 cores), prints the table
    python bench/run.py --quick          # smaller sizes, a smoke check (not for the targets)
    python bench/run.py --only NAME      # one benchmark (repeatable); see --help for the names
    python bench/run.py --json out.json  # also write {name: {value, unit, anchor, ratio, ...}}

How the noise of a shared 2-core machine is kept out of the ratios: a measurement and its anchor
are interleaved chunk by chunk (a few hundred events or one batch at a time, the order rotating),
so both see the same momentary load; each repetition gives one ratio. The table shows medians
over the repetitions: value = median engine rate, anchor = median anchor rate, ratio = median
of the per-repetition ratios (so not exactly value/anchor), and the smallest..largest ratio.

Databases live in a fresh temporary directory; entities are created beforehand with
`Engine.create_many` (untimed) and copied as closed files for each repetition.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from time import perf_counter
from typing import Any

from benchlib import (
    SERVICE,
    MemoryStore,
    Paired,
    RawModel,
    RawSqliteWriter,
    Rules,
    alternate,
    batch_event,
    build_template,
    copy_database,
    count_transitions,
    each,
    env_summary,
    fresh_row,
    life_event,
    memory_plan,
    raw_machine,
    sliced,
    spread_slots,
    sqlite_url,
)
from sqlmodel import Session, col, select

from fsm import Engine, Event, Store
from storage.tables import EntityTable, TransitionTable

BENCH_DIR = Path(__file__).resolve().parent


# -- configuration ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Config:
    quick: bool
    batch_size: int  # events per Engine.apply in persist_batch, growth and memory_per_entity
    memory_events: int  # apply_memory: events per repetition ...
    memory_chunk: int  # ... interleaved with the anchor in chunks of this many
    memory_reps: int
    single_n: int  # persist_single: commits per repetition ...
    single_chunk: int  # ... interleaved with the anchor in chunks of this many
    single_reps: int
    big_n: int  # persist_batch entities (growth: the large size)
    small_n: int  # growth: the small size (big_n / 10)
    batch_reps: int
    small_runs: int  # small databases per repetition (the median of their times is used)
    naive_single_n: int
    naive_batch_n: int
    naive_reps: int
    tracemalloc_limit: int  # entities for the tracemalloc cross-check (0: skip it)

    @classmethod
    def full(cls, batch_size: int) -> Config:
        return cls(
            quick=False,
            batch_size=batch_size,
            memory_events=30_000,
            memory_chunk=1_000,
            memory_reps=5,
            single_n=400,
            single_chunk=20,
            single_reps=5,
            big_n=100_000,
            small_n=10_000,
            batch_reps=3,
            small_runs=3,
            naive_single_n=150,
            naive_batch_n=5_000,
            naive_reps=3,
            tracemalloc_limit=10_000,
        )

    @classmethod
    def small(cls, batch_size: int) -> Config:
        return cls(
            quick=True,
            batch_size=batch_size,
            memory_events=10_000,
            memory_chunk=1_000,
            memory_reps=3,
            single_n=150,
            single_chunk=15,
            single_reps=3,
            big_n=20_000,
            small_n=2_000,
            batch_reps=2,
            small_runs=2,
            naive_single_n=60,
            naive_batch_n=2_000,
            naive_reps=2,
            tracemalloc_limit=4_000,
        )


# -- results ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Target:
    op: str  # ">=" or "<="
    bound: float

    def met(self, ratio: float) -> bool:
        return ratio >= self.bound if self.op == ">=" else ratio <= self.bound

    def __str__(self) -> str:
        return f"{self.op} {self.bound:g}"


@dataclass(frozen=True, slots=True)
class Result:
    name: str
    value: float
    unit: str
    anchor: float
    anchor_unit: str
    ratio: float
    target: Target | None
    ratio_min: float | None = None
    ratio_max: float | None = None
    reps: int = 1
    notes: str = ""

    @property
    def passed(self) -> bool | None:
        return None if self.target is None else self.target.met(self.ratio)

    @classmethod
    def from_paired(
        cls,
        name: str,
        runs: Paired,
        unit: str,
        anchor_unit: str,
        target: Target | None,
        notes: str,
    ) -> Result:
        ratios = runs.ratios
        return cls(
            name,
            runs.value,
            unit,
            runs.anchor,
            anchor_unit,
            runs.ratio,
            target,
            min(ratios),
            max(ratios),
            len(ratios),
            notes,
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "value": self.value,
            "unit": self.unit,
            "anchor": self.anchor,
            "anchor_unit": self.anchor_unit,
            "ratio": self.ratio,
            "target": None if self.target is None else str(self.target),
            "pass": self.passed,
            "ratio_min": self.ratio_min,
            "ratio_max": self.ratio_max,
            "reps": self.reps,
            "notes": self.notes,
        }


def rate_pair(values: Sequence[float], anchors: Sequence[float], count: int) -> Paired:
    """Seconds -> per-second rates for `count` operations."""
    return Paired(tuple(count / v for v in values), tuple(count / a for a in anchors))


# -- the benchmarks --------------------------------------------------------------------------


class Bench:
    def __init__(self, cfg: Config, workdir: Path) -> None:
        self.cfg = cfg
        self.workdir = workdir
        self._templates: dict[int, tuple[Path, list[str]]] = {}
        self._copies = 0

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

    # apply_memory ------------------------------------------------------------------------------

    def apply_memory(self) -> list[Result]:
        cfg = self.cfg
        store = MemoryStore()
        engine = Engine(store, migrate=False)
        lifecycle = engine.lifecycle(SERVICE)
        names = memory_plan(cfg.memory_events)
        entity_id = "bench-memory"
        events = [Event(entity_id, name) for name in names]
        machine, model = raw_machine(lifecycle.definition)
        size = cfg.memory_chunk
        chunks = len(events) // size
        decide_s: list[float] = []
        apply_s: list[float] = []
        raw_s: list[float] = []

        for rep in range(cfg.memory_reps + 1):  # the first repetition warms up
            # Engine.stage(...).add: what Engine.apply runs per event (decide, build the transition
            # record and the outcome), without the read before it and the flush after it.
            row = fresh_row(entity_id, lifecycle, engine.clock())
            with store.transaction() as uow:
                staged = engine.stage(uow, {entity_id: row})
            store.rows = {entity_id: row}
            machine.set_state(lifecycle.initial, model=model)
            lanes = [
                sliced(events, size, each(staged.add)),
                sliced(events, size, engine.apply),
                sliced(names, size, each(model.trigger)),
            ]
            gc.collect()
            t_decide, t_apply, t_raw = alternate(chunks, lanes)
            head = staged.head(entity_id)
            final = {
                "stage": head.state if head is not None else "?",
                "apply": store.rows[entity_id].state,
                "raw": model.state,
            }
            if len(set(final.values())) != 1:
                raise RuntimeError(f"engine and anchor disagree on the final state: {final}")
            if rep:
                decide_s.append(t_decide)
                apply_s.append(t_apply)
                raw_s.append(t_raw)
        n = chunks * size
        return [
            Result.from_paired(
                "apply_memory",
                rate_pair(decide_s, raw_s, n),
                "events/s",
                "events/s",
                Target(">=", 0.8),
                f"{n:,} events on one entity (guarded ping_failed included), interleaved in "
                f"chunks of {size:,}: Engine.stage(...).add per event (decision, transition "
                "record, outcome; no database) vs a plain Machine(model=obj).trigger",
            ),
            Result.from_paired(
                "apply_memory_batch",
                rate_pair(apply_s, raw_s, n),
                "events/s",
                "events/s",
                None,
                f"reference, no target: whole Engine.apply, one call per {size:,} events, on a "
                "dict-backed store (no database)",
            ),
        ]

    # persist_single ----------------------------------------------------------------------------

    def persist_single(self) -> list[Result]:
        cfg = self.cfg
        n, size = cfg.single_n, cfg.single_chunk
        engine_db, engine_ids = self.new_database(n, "single-engine")
        raw_db, raw_ids = self.new_database(n, "single-raw")
        engine = Engine(sqlite_url(engine_db))
        writer = RawSqliteWriter(raw_db, Rules(engine.lifecycle(SERVICE)), raw_ids)
        engine_s: list[float] = []
        raw_s: list[float] = []
        for rep in range(cfg.single_reps + 1):  # the first repetition warms up
            event = life_event(rep)  # every entity moves once per repetition
            lanes = [
                sliced(engine_ids, size, each(partial(fire_one, engine, event))),
                sliced(raw_ids, size, each(partial(raw_one, writer, event))),
            ]
            gc.collect()
            t_engine, t_raw = alternate(-(-n // size), lanes)
            if rep:
                engine_s.append(t_engine)
                raw_s.append(t_raw)
        engine.close()
        writer.close()
        expected = n * (cfg.single_reps + 1)
        if count_transitions(engine_db) != expected or count_transitions(raw_db) != expected:
            raise RuntimeError("persist_single wrote an unexpected number of transitions")
        return [
            Result.from_paired(
                "persist_single",
                rate_pair(engine_s, raw_s, n),
                "commits/s",
                "commits/s",
                Target(">=", 0.5),
                f"{n} Engine.fire per repetition, interleaved in chunks of {size}, one transition "
                "per commit, SQLite file (WAL, synchronous=NORMAL); anchor: sqlite3 BEGIN "
                "IMMEDIATE, versioned UPDATE, INSERT, COMMIT on the same schema",
            )
        ]

    def new_database(self, count: int, name: str) -> tuple[Path, list[str]]:
        """A new database of `count` fresh entities (setup), not shared with other runs."""
        path = self.workdir / f"{name}.db"
        return path, build_template(path, count)

    # persist_batch and growth ------------------------------------------------------------------

    def persist_batch(self) -> list[Result]:
        """persist_batch and growth, from the same repetitions.

        Each repetition opens fresh copies of the big database and of `small_runs` small ones,
        then interleaves batch by batch: a big batch, the anchor's triggers for the same events,
        and now and then a batch of one of the small databases (spread evenly over the run).
        """
        cfg = self.cfg
        big, small, size = cfg.big_n, cfg.small_n, cfg.batch_size
        _, big_ids = self.template(big)
        _, small_ids = self.template(small)
        big_events = [Event(i, batch_event(k)) for k, i in enumerate(big_ids)]
        small_events = [Event(i, batch_event(k)) for k, i in enumerate(small_ids)]
        names = [batch_event(k) for k in range(big)]
        lifecycle = Engine(MemoryStore(), migrate=False).lifecycle(SERVICE)
        _machine, model = raw_machine(lifecycle.definition)
        big_chunks = -(-big // size)
        small_chunks = -(-small // size)
        slots = spread_slots(big_chunks, small_chunks * cfg.small_runs)
        big_s: list[float] = []
        raw_s: list[float] = []
        small_s: list[float] = []

        for _rep in range(cfg.batch_reps):
            big_path, _ = self.fresh_copy(big)
            small_paths = [self.fresh_copy(small)[0] for _ in range(cfg.small_runs)]
            engine = Engine(sqlite_url(big_path))  # opening and the schema check: setup
            smalls = SmallRuns([Engine(sqlite_url(p)) for p in small_paths], small_events, size)
            for j, slot in enumerate(slots):
                run, batch_no = divmod(j, small_chunks)
                smalls.plan(slot, run, batch_no)
            lanes = [
                sliced(big_events, size, engine.apply),
                sliced(names, size, each(partial(first_trigger, model, lifecycle.initial))),
                smalls.lane,
            ]
            gc.collect()
            t_big, t_raw, _ = alternate(big_chunks, lanes)
            engine.close()
            smalls.close()
            if count_transitions(big_path) != big or any(
                count_transitions(p) != small for p in small_paths
            ):
                raise RuntimeError("persist_batch did not record one transition per entity")
            for path in (big_path, *small_paths):
                self.discard(path)
            big_s.append(t_big)
            raw_s.append(t_raw)
            small_s.append(statistics.median(smalls.seconds))

        growth_values = tuple(b / s for b, s in zip(big_s, small_s, strict=True))
        per_big = statistics.median(big_s) / big * 1e6
        per_small = statistics.median(small_s) / small * 1e6
        growth = Result(
            "growth",
            statistics.median(growth_values),
            f"x t({big // 1000}k)/t({small // 1000}k)",
            10.0,
            "x (linear)",
            statistics.median(growth_values) / 10.0,
            Target("<=", 1.1),
            min(growth_values) / 10.0,
            max(growth_values) / 10.0,
            len(growth_values),
            f"persist_batch time at {big:,} vs {small:,} fresh entities (median of "
            f"{cfg.small_runs} small databases per repetition, their batches interleaved with "
            f"the big run); ratio = (t_big/t_small)/10, i.e. the per-entity cost ratio "
            f"({per_big:.1f} vs {per_small:.1f} us/event)",
        )
        return [
            Result.from_paired(
                "persist_batch",
                rate_pair(big_s, raw_s, big),
                "transitions/s",
                "triggers/s",
                Target(">=", 0.5),
                f"{big:,} fresh entities, one transition each, Engine.apply batches of {size:,}; "
                "anchor: the same triggers on one plain Machine model, in memory, interleaved "
                "batch by batch",
            ),
            growth,
        ]

    # memory_per_entity -------------------------------------------------------------------------

    def memory_per_entity(self) -> list[Result]:
        cfg = self.cfg
        report = self._probe(cfg.big_n, tracemalloc=False)
        value = float(report["rss_peak_per_entity"])
        notes = (
            f"fresh process; (peak VmRSS - VmRSS before the first batch) / {report['entities']:,} "
            f"entities, batches of {report['batch']:,}; peak {report['peak_rss'] / 2**20:.1f} "
            f"MiB over a {report['baseline_rss'] / 2**20:.1f} MiB baseline; growth after the "
            f"first batch {report['rss_steady_slope']:.1f} B/entity; kept after gc "
            f"{report['rss_retained_per_entity']:.1f} B/entity"
        )
        if cfg.tracemalloc_limit:
            traced = self._probe(cfg.big_n, tracemalloc=True, limit=cfg.tracemalloc_limit)
            notes += (
                f"; tracemalloc: {traced['traced_peak_per_inflight_event']:,.0f} B of Python "
                f"objects per in-flight event of a batch, "
                f"{traced['traced_retained_per_entity']:.1f} B/entity kept"
            )
        return [
            Result(
                "memory_per_entity",
                value,
                "B/entity",
                1024.0,
                "B/entity",
                value / 1024.0,
                Target("<=", 1.0),
                notes=notes,
            )
        ]

    def _probe(self, count: int, *, tracemalloc: bool, limit: int = 0) -> dict[str, Any]:
        path, _ = self.fresh_copy(count)
        command = [
            sys.executable,
            str(BENCH_DIR / "memory_probe.py"),
            "--db",
            str(path),
            "--batch",
            str(self.cfg.batch_size),
            "--limit",
            str(limit),
        ]
        if tracemalloc:
            command.append("--tracemalloc")
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        self.discard(path)
        if done.returncode != 0:
            raise RuntimeError(f"memory probe failed:\n{done.stderr}")
        report: dict[str, Any] = json.loads(done.stdout)
        return report

    # the naive ORM route, for reference --------------------------------------------------------

    def naive(self) -> list[Result]:
        cfg = self.cfg
        results = []
        for name, n, chunk in (
            ("naive_orm_single", cfg.naive_single_n, 1),
            ("naive_orm_batch", cfg.naive_batch_n, 1000),
        ):
            engine_db, engine_ids = self.new_database(n, f"{name}-engine")
            orm_db, orm_ids = self.new_database(n, f"{name}-orm")
            engine = Engine(sqlite_url(engine_db))
            orm = NaiveOrm(Store(sqlite_url(orm_db)), Rules(engine.lifecycle(SERVICE)))
            lane_size = 10 if chunk == 1 else chunk  # ten commits per lane chunk
            orm_s: list[float] = []
            engine_s: list[float] = []
            for rep in range(cfg.naive_reps + 1):  # the first repetition warms up
                event = life_event(rep)
                if chunk == 1:
                    lanes = [
                        sliced(orm_ids, lane_size, partial(orm.one_per_commit, event=event)),
                        sliced(engine_ids, lane_size, each(partial(fire_one, engine, event))),
                    ]
                else:
                    events = [Event(i, event) for i in engine_ids]
                    lanes = [
                        sliced(orm_ids, lane_size, partial(orm.batched, event=event)),
                        sliced(events, lane_size, engine.apply),
                    ]
                gc.collect()
                t_orm, t_engine = alternate(-(-n // lane_size), lanes)
                if rep:
                    orm_s.append(t_orm)
                    engine_s.append(t_engine)
            engine.close()
            orm.close()
            if chunk == 1:
                what = "session.get + modify + add transition + commit, per event"
                anchor = "Engine.fire"
            else:
                what = f"one SELECT .. IN + modify + add + commit per {chunk:,} events"
                anchor = f"Engine.apply of {chunk:,}"
            results.append(
                Result.from_paired(
                    name,
                    rate_pair(orm_s, engine_s, n),
                    "transitions/s",
                    "transitions/s",
                    None,
                    f"reference, no target: SQLModel Session, {what} ({n:,} entities); "
                    f"anchor: {anchor} on the same workload; ratio = ORM / engine",
                )
            )
        return results


def fire_one(engine: Engine, event: str, entity_id: str) -> None:
    engine.fire(entity_id, event)


def raw_one(writer: RawSqliteWriter, event: str, entity_id: str) -> None:
    writer.step(entity_id, event)


def first_trigger(model: RawModel, initial: str, name: str) -> None:
    """The anchor for a fresh entity's one event: put the one model back, then trigger."""
    model.state = initial
    model.trigger(name)


class SmallRuns:
    """The small databases of the growth measurement, run beside chunks of the big one."""

    def __init__(self, engines: list[Engine], events: Sequence[Event], size: int) -> None:
        self.engines = engines
        self.events = events
        self.size = size
        self.seconds = [0.0] * len(engines)
        self._beside: dict[int, list[tuple[int, int]]] = {}

    def plan(self, big_chunk: int, run: int, batch_no: int) -> None:
        self._beside.setdefault(big_chunk, []).append((run, batch_no * self.size))

    def lane(self, big_chunk: int) -> float:
        spent = 0.0
        for run, start in self._beside.get(big_chunk, ()):
            part = self.events[start : start + self.size]
            started = perf_counter()
            self.engines[run].apply(part)
            elapsed = perf_counter() - started
            self.seconds[run] += elapsed
            spent += elapsed
        return spent

    def close(self) -> None:
        for engine in self.engines:
            engine.close()


class NaiveOrm:
    """The route the engine replaces: SQLModel objects, the unit of work, commit."""

    def __init__(self, store: Store, rules: Rules) -> None:
        self.store = store
        self.rules = rules

    def _move(self, session: Session, entity: EntityTable, event: str) -> None:
        rules = self.rules
        now = datetime.now(UTC)
        source = entity.state
        dest = rules.dest[(source, event)]
        limit = rules.limit[dest]
        refresh = rules.refresh[dest]
        entity.state = dest
        entity.terminal = dest in rules.terminal
        entity.version += 1
        entity.seq += 1
        entity.state_entered_at = now
        entity.deadline_at = None if limit is None else now + limit
        entity.next_refresh_at = None if refresh is None else now + refresh
        entity.updated_at = now
        session.add(entity)
        session.add(
            TransitionTable(
                entity_id=entity.id,
                seq=entity.seq,
                from_state=source,
                to_state=dest,
                event=event,
                source="user",
                payload={},
                observed_at=now,
                recorded_at=now,
                definition_version=rules.version,
            )
        )

    def one_per_commit(self, ids: Sequence[str], event: str) -> None:
        """One commit per entity of `ids`."""
        with Session(self.store.engine) as session:
            for entity_id in ids:
                entity = session.get(EntityTable, entity_id)
                if entity is None:
                    raise RuntimeError(f"no entity {entity_id}")
                self._move(session, entity, event)
                session.commit()

    def batched(self, ids: Sequence[str], event: str) -> None:
        """All of `ids` in one commit (one SELECT .. IN to load them)."""
        with Session(self.store.engine) as session:
            query = select(EntityTable).where(col(EntityTable.id).in_(list(ids)))
            for entity in session.exec(query):
                self._move(session, entity, event)
            session.commit()

    def close(self) -> None:
        self.store.close()


# -- the command line ------------------------------------------------------------------------

GROUPS: dict[str, tuple[str, ...]] = {
    "apply_memory": ("apply_memory", "apply_memory_batch"),
    "persist_single": ("persist_single",),
    "persist_batch": ("persist_batch", "growth"),
    "memory_per_entity": ("memory_per_entity",),
    "naive": ("naive_orm_single", "naive_orm_batch"),
}
ORDER = [name for names in GROUPS.values() for name in names]


def run_group(bench: Bench, group: str) -> list[Result]:
    runner: dict[str, Callable[[], list[Result]]] = {
        "apply_memory": bench.apply_memory,
        "persist_single": bench.persist_single,
        "persist_batch": bench.persist_batch,
        "memory_per_entity": bench.memory_per_entity,
        "naive": bench.naive,
    }
    return runner[group]()


def format_number(value: float, unit: str) -> str:
    if unit.endswith("/s"):
        return f"{value:,.0f} {unit}"
    if unit.startswith("x"):
        return f"{value:.2f}{unit[1:2]}"
    return f"{value:,.1f} {unit}"


def render(results: Sequence[Result]) -> str:
    header = ("benchmark", "value", "anchor", "ratio", "min..max", "target", "result")
    rows = []
    for r in results:
        spread = (
            f"{r.ratio_min:.2f}..{r.ratio_max:.2f}"
            if r.ratio_min is not None and r.ratio_max is not None and r.reps > 1
            else "-"
        )
        verdict = {True: "PASS", False: "FAIL", None: "(ref)"}[r.passed]
        rows.append(
            (
                r.name,
                format_number(r.value, r.unit),
                format_number(r.anchor, r.anchor_unit),
                f"{r.ratio:.3f}",
                spread,
                str(r.target) if r.target else "-",
                verdict,
            )
        )
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    right = {1, 2, 3, 4}

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    out = [line(header), line(["-" * w for w in widths])]
    out += [line(row) for row in rows]
    out.append("")
    out += [f"{r.name}: {r.notes}" for r in results if r.notes]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="FSM engine benchmarks against anchors measured in the same run."
    )
    parser.add_argument("--quick", action="store_true", help="smaller sizes (not for targets)")
    parser.add_argument(
        "--only", action="append", choices=ORDER, metavar="NAME", help=f"one of {', '.join(ORDER)}"
    )
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the results here")
    parser.add_argument("--batch-size", type=int, default=2000, help="events per Engine.apply")
    parser.add_argument("--check", action="store_true", help="exit 1 if any target is missed")
    args = parser.parse_args(argv)

    cfg = Config.small(args.batch_size) if args.quick else Config.full(args.batch_size)
    wanted = list(dict.fromkeys(args.only or ORDER))
    groups = [g for g, names in GROUPS.items() if any(n in wanted for n in names)]
    env = ", ".join(f"{k} {v}" for k, v in env_summary().items())
    print(f"fsm engine benchmarks ({'quick' if cfg.quick else 'full'} run; {env})", flush=True)

    started = time.perf_counter()
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="fsm-bench-") as tmp:
        bench = Bench(cfg, Path(tmp))
        for group in groups:
            gc.collect()
            began = perf_counter()
            results += [r for r in run_group(bench, group) if r.name in wanted]
            bench.log(f"{group}: {perf_counter() - began:.1f}s")
    results.sort(key=lambda r: ORDER.index(r.name))
    print(render(results))
    print(f"\ntotal {time.perf_counter() - started:.0f}s")
    if args.json is not None:
        args.json.write_text(json.dumps({r.name: r.as_json() for r in results}, indent=2) + "\n")
    failed = [r.name for r in results if r.passed is False]
    return 1 if failed and args.check else 0


if __name__ == "__main__":
    raise SystemExit(main())
