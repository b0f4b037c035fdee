"""Real processes: two PostgreSQL workers against one, Slurm calls per cycle, the demo's wall
time."""

from __future__ import annotations

import gc
import json
import os
import statistics
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from time import perf_counter
from typing import Any

from benchlib import CLAIM_BATCH, Paired, sqlite_url
from pg_worker import TIME_SCALE as PG_TIME_SCALE
from results import BENCH_DIR, Result, Target
from run_lag import SAMPLE_SECONDS
from run_lag import measure as measure_run_lag
from slurm_bench import measure_slurm_calls
from suite import Suite, drop_schema, pg_reachable, pg_schema

from backends.sim import SimBackend, populate
from fsm import (
    Engine,
)


class RuntimeSuite(Suite):
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

    # pg_two_workers ---------------------------------------------------------------------------

    def run_lag(self) -> list[Result]:
        """run_lag_100k: the worst lag of one real `fsm run` on its default settings."""
        cfg = self.cfg
        folder = self.workdir / "run-lag"
        folder.mkdir()
        run = measure_run_lag(folder, cfg.lag_count, cfg.lag_seconds)
        if run.observed != run.count:
            raise RuntimeError(f"fsm run looked at {run.observed} of {run.count} services")
        return [
            Result(
                "run_lag_100k",
                run.worst,
                "s",
                2.0,
                "s",
                run.worst / 2.0,
                Target("<=", 1.0),
                notes=f"`fsm run` (default settings: batches sized by the worker, 1 s interval) "
                f"over {run.count:,} sim services on a SQLite file, each PENDING and due every "
                f"10 s, the due times spread evenly over the cycle; worst lag (now - "
                f"next_refresh_at of the oldest due, unleased entity, sampled every "
                f"{SAMPLE_SECONDS:g} s) over {run.seconds:g} s: {run.worst:.2f} s, median "
                f"sample {run.median:.2f} s ({run.samples} samples; every service looked at)",
            )
        ]

    def pg_two_workers(self) -> list[Result]:
        cfg = self.cfg
        if not pg_reachable(self, "pg_two_workers"):
            return []
        schema, url = pg_schema(self.pg_url)
        batch = CLAIM_BATCH
        one: list[float] = []
        two: list[float] = []
        usage: dict[int, list[Usage]] = {1: [], 2: []}
        shares: list[list[int]] = []
        engine: Engine | None = None
        workers: PgWorkers | None = None
        try:
            engine = Engine(url)  # creates the schema's tables
            workers = PgWorkers(url, 2, batch, self.workdir)
            sim = SimBackend(0, time_scale=PG_TIME_SCALE)
            for pair in range(cfg.pg_pairs):
                for n in (1, 2) if pair % 2 == 0 else (2, 1):
                    populate(engine, sim, services=cfg.pg_per_run, prefix=f"r{pair}w{n}")
                    with engine.store.engine.begin() as conn:
                        conn.exec_driver_sql("ANALYZE entity")  # as autovacuum would
                    gc.collect()
                    rate, used, reports = workers.run(n, cfg.pg_per_run)
                    (one if n == 1 else two).append(rate)
                    usage[n].append(used)
                    if n == 2:
                        shares.append([r["claimed"] for r in reports])
        finally:
            if workers is not None:
                workers.close()
            if engine is not None:
                engine.close()
            drop_schema(self.pg_url, schema)
        split = ", ".join("/".join(str(c) for c in s) for s in shares)
        return [
            Result.from_paired(
                "pg_two_workers",
                Paired(tuple(two), tuple(one)),
                "entities/s",
                "entities/s",
                Target(">=", 1.3),
                f"PostgreSQL, real processes (bench/pg_worker.py, started once, each told when "
                f"to go): {cfg.pg_pairs} pairs of runs, 1 worker then 2 or the reverse, each run "
                f"refreshing {cfg.pg_per_run:,} newly created due sim services once (claim with "
                f"lease + SKIP LOCKED, one observe call and one transaction per batch of {batch}"
                f"); rate = services / (last worker's end - first worker's start); shares of "
                f"the 2-worker runs: {split}; {describe_usage(usage)}",
            )
        ]

    # slurm_calls_per_cycle --------------------------------------------------------------------

    def slurm_calls(self) -> list[Result]:
        found = measure_slurm_calls()
        value = float(found["value"])
        return [
            Result(
                "slurm_calls_per_cycle",
                value,
                "calls/cycle",
                2.0,
                "calls/cycle",
                value / 2.0,
                Target("<=", 2.0, on="value"),
                notes=f"bench/slurm_bench.py on the {found['source']}: {found['tracked']} "
                f"tracked jobs, scheduler calls per cycle {found['calls_per_cycle']} (the worst "
                f"is the value), cycle seconds {found['cycle_seconds']}",
            )
        ]

    # demo_wall_seconds ------------------------------------------------------------------------

    def demo(self) -> list[Result]:
        folder = self.workdir / "demo"
        folder.mkdir()
        command = [sys.executable, "-m", "fsm", "demo", "--db", sqlite_url(folder / "fsm-demo.db")]
        started = perf_counter()
        done = subprocess.run(
            command, cwd=folder, capture_output=True, text=True, timeout=300, check=False
        )
        wall = perf_counter() - started
        if done.returncode != 0:
            raise RuntimeError(
                f"fsm demo exited {done.returncode}:\n{done.stdout[-2000:]}{done.stderr[-2000:]}"
            )
        own = next(
            (line.strip() for line in done.stdout.splitlines() if "finished in" in line), "?"
        )
        return [
            Result(
                "demo_wall_seconds",
                wall,
                "s",
                40.0,
                "s",
                wall / 40.0,
                Target("<=", 40.0, on="value"),
                notes=f"wall time of `python -m fsm demo --db sqlite:///<tmp>/fsm-demo.db` as a "
                f"subprocess in a temporary directory, exit 0 (interpreter start-up and the "
                f"closing summary included); the demo itself says: {own}",
            )
        ]


def describe_usage(usage: dict[int, list[Usage]]) -> str:
    """Medians of the CPU figures of the 1- and 2-worker runs, for the notes."""
    parts = []
    for n, runs in usage.items():
        worker = statistics.median(u.worker_per_entity for u in runs) * 1e6
        text = f"{n} worker{'s' if n > 1 else ''}: {worker:.0f} us CPU/service in the worker"
        servers = [u.server_per_entity for u in runs if u.server_per_entity is not None]
        if servers:
            text += f" + {statistics.median(servers) * 1e6:.0f} us in its PostgreSQL backend"
        busy = [u.machine_busy for u in runs if u.machine_busy is not None]
        if busy:
            text += f", machine {statistics.median(busy):.2f} of {os.cpu_count()} cores busy"
        parts.append(text)
    cores = os.cpu_count() or 1
    alone = [u.machine_busy for u in usage[1] if u.machine_busy is not None]
    if alone and statistics.median(alone) > cores - 0.5:
        parts.append(
            "other processes already kept the machine busy during the 1-worker runs: there was "
            "little spare CPU for a second worker, so this ratio measures the load as much as "
            "the engine"
        )
    return "; ".join(parts)


@dataclass(frozen=True, slots=True)
class Usage:
    """CPU during one pg_two_workers run."""

    machine_busy: float | None  # cores busy on the whole machine (every process, ours or not)
    worker_per_entity: float  # CPU seconds of the worker processes per service refreshed
    server_per_entity: float | None  # ... of their PostgreSQL backends (None: not readable)


def machine_cpu() -> tuple[int, int] | None:
    """(all jiffies, idle jiffies) of the machine so far, from /proc/stat (None elsewhere)."""
    try:
        with open("/proc/stat", encoding="ascii") as stat:
            fields = [int(v) for v in stat.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    return sum(fields), fields[3] + fields[4]


def process_cpu(pid: int | None) -> float | None:
    """User + system CPU seconds of a local process (None: not local or not readable)."""
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class PgWorkers:
    """Worker processes (bench/pg_worker.py) kept running; `run(n)` lets the first n refresh
    what is due and returns the rate over the span from the first start to the last end."""

    def __init__(self, url: str, count: int, batch: int, workdir: Path) -> None:
        self.procs: list[subprocess.Popen[str]] = []
        self.logs = [workdir / f"pg-worker-{i}.log" for i in range(count)]
        self.backends: list[int | None] = []
        try:
            self._start(url, batch)
        except BaseException:
            self.close()
            raise

    def _start(self, url: str, batch: int) -> None:
        for i, log in enumerate(self.logs):
            with log.open("w") as err:
                command = [
                    sys.executable,
                    str(BENCH_DIR / "pg_worker.py"),
                    "--db",
                    url,
                    "--batch-size",
                    str(batch),
                    "--worker-id",
                    f"bench-{i}",
                ]
                self.procs.append(
                    subprocess.Popen(
                        command,
                        stdin=subprocess.PIPE,
                        stdout=subprocess.PIPE,
                        stderr=err,
                        text=True,
                    )
                )
        for i in range(len(self.logs)):
            word, _, pid = self._line(i).partition(" ")
            if word != "ready":
                raise RuntimeError(f"pg worker {i} said {word!r}, not 'ready'")
            self.backends.append(int(pid) if pid.isdigit() else None)

    def _line(self, i: int) -> str:
        proc = self.procs[i]
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"pg worker {i} ended:\n{self.logs[i].read_text()[-2000:]}")
        return line.strip()

    def run(self, n: int, due: int) -> tuple[float, Usage, list[dict[str, Any]]]:
        """Let the first `n` workers refresh the `due` services; their rate and CPU use."""
        machine = machine_cpu()
        servers = [process_cpu(pid) for pid in self.backends[:n]]
        for proc in self.procs[:n]:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        reports = [json.loads(self._line(i)) for i in range(n)]
        machine_after = machine_cpu()
        servers_after = [process_cpu(pid) for pid in self.backends[:n]]
        claimed = sum(r["claimed"] for r in reports)
        if claimed != due or sum(r["transitions"] for r in reports) != due:
            raise RuntimeError(f"pg workers refreshed {claimed} of {due} due services: {reports}")
        if any(r["backend_calls"] != r["batches"] for r in reports):
            raise RuntimeError(f"pg workers made more than one observe call per batch: {reports}")
        span = max(r["ended"] for r in reports) - min(r["started"] for r in reports)
        busy = None
        if machine is not None and machine_after is not None:
            total = machine_after[0] - machine[0]
            idle = machine_after[1] - machine[1]
            busy = (1 - idle / total) * (os.cpu_count() or 1) if total else None
        server: float | None = None
        spent = [
            b - a
            for a, b in zip(servers, servers_after, strict=True)
            if a is not None and b is not None
        ]
        if len(spent) == n:
            server = sum(spent) / due
        usage = Usage(busy, sum(r["cpu"] for r in reports) / due, server)
        return due / span, usage, reports

    def close(self) -> None:
        for proc in self.procs:
            if proc.stdin is not None:
                proc.stdin.close()
        for proc in self.procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
