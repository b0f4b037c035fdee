"""One worker process of the `pg_two_workers` benchmark (run by bench/run.py, not by hand).

It opens its engine and the simulated backend, prints `ready PID` (the pid of its PostgreSQL
backend, for CPU accounting), then for each line `go` on stdin refreshes every entity due at that
moment, batch after batch, exactly as `Worker.refresh` does with a fixed `due_by` (claim with a
lease under `FOR UPDATE SKIP LOCKED`, one observe call per batch, one transaction per batch), and
prints one JSON line: what it did, when (wall clock, comparable across processes) and the CPU
seconds it used. Several of these share the due work through the database only.

    python bench/pg_worker.py --db URL [--batch-size 100] [--worker-id NAME]
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from backends.sim import SimBackend
from fsm import Engine
from fsm.worker import Worker, WorkerSettings

# Observed entities come back due only after (10 s x this): never within one benchmark run.
REFRESH_SCALE = 1000.0
# Sim durations stretched so that every service is still queued (job_pending) when observed.
TIME_SCALE = 1000.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--db", required=True)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--worker-id", default=None)
    args = parser.parse_args(argv)
    engine = Engine(args.db, refresh_scale=REFRESH_SCALE, migrate=False)
    sim = SimBackend(0, time_scale=TIME_SCALE)
    worker = Worker(
        engine, [sim], worker_id=args.worker_id, settings=WorkerSettings(batch_size=args.batch_size)
    )
    try:
        with engine.store.engine.connect() as conn:  # the one connection this worker uses
            backend = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar()
        print(f"ready {backend}", flush=True)
        for line in sys.stdin:
            if line.strip() != "go":
                break
            started = time.time()
            cpu = time.process_time()
            due_by = engine.clock()
            claimed = transitions = batches = calls = 0
            while (stats := worker.refresh_batch(due_by)) is not None:
                claimed += stats.claimed
                transitions += stats.transitions
                batches += stats.batches
                calls += stats.backend_calls
            ended = time.time()
            cpu = time.process_time() - cpu
            report = {
                "worker": worker.id,
                "claimed": claimed,
                "transitions": transitions,
                "batches": batches,
                "backend_calls": calls,
                "started": started,
                "ended": ended,
                "cpu": cpu,
            }
            print(json.dumps(report), flush=True)
    finally:
        engine.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
