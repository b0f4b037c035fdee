"""run_lag_100k: how far behind one real `fsm run` (default settings) falls on SQLite when
`count` simulated services are each due every 10 s, spread evenly over the cycle.

The lag of an entity is how long after its `next_refresh_at` a worker claims it. A reader in
this process samples, every `SAMPLE_SECONDS`, the oldest due entity nobody holds a lease on
(the index order of `next_refresh_at`, so the sample costs one index step): `now` minus its
`next_refresh_at` is the lag it would have if it were claimed now. The worst sample is the
figure; it is at most one sample period short of the true worst lag at claim time.

    python bench/run_lag.py --count 100000 --seconds 40
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import yaml
from benchlib import sqlite_url

from backends.sim import SimBackend, populate
from fsm import Engine, Event
from storage.types import sqlite_time

SAMPLE_SECONDS = 0.1
PERIOD = 10.0  # PENDING's refresh interval in the service lifecycle
#: the sim's durations stretched so far that every service stays PENDING for the whole run
TIME_SCALE = 1e6
SEED = 7
FAR = timedelta(days=1)


@dataclass(frozen=True)
class LagRun:
    count: int
    seconds: float
    worst: float  # seconds
    median: float  # of the samples
    samples: int
    observed: int  # entities looked at since the spread began (should be all)
    exit_code: int


def build(path: Path, count: int, chunk: int = 5000) -> list[str]:
    """`count` sim services recorded PENDING (each look then finds them unchanged, due again in
    10 s), none due yet: setup, untimed."""
    engine = Engine(sqlite_url(path))
    try:
        sim = SimBackend(SEED, time_scale=TIME_SCALE)
        ids = populate(engine, sim, services=count, chunk=chunk)
        now = engine.clock()
        for start in range(0, count, chunk):
            events = [Event(i, "job_pending", None, "sim", now) for i in ids[start : start + chunk]]
            engine.apply(events)
    finally:
        engine.close()
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE entity SET next_refresh_at = ?", (sqlite_time(now + FAR),))
    return ids


def spread(conn: sqlite3.Connection, ids: list[str], start: datetime) -> None:
    """Make the services due one after the other over one period from `start`."""
    step = PERIOD / len(ids)
    rows = [(sqlite_time(start + timedelta(seconds=i * step)), x) for i, x in enumerate(ids)]
    with conn:
        conn.executemany("UPDATE entity SET next_refresh_at = ? WHERE id = ?", rows)


def wait_started(log: Path, proc: subprocess.Popen[bytes], timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"fsm run exited {proc.returncode}:\n{log.read_text()[-2000:]}")
        if " started on " in log.read_text():
            return
        time.sleep(0.1)
    raise RuntimeError(f"fsm run did not start within {timeout:g}s:\n{log.read_text()[-2000:]}")


def measure(workdir: Path, count: int, seconds: float, env: dict[str, str] | None = None) -> LagRun:
    """Build, start `fsm run` on defaults, spread the due times, sample the lag for `seconds`
    after the first entity fell due, stop the worker with SIGTERM."""
    path = workdir / f"run-lag-{count}.db"
    ids = build(path, count)
    config = workdir / "run-lag.yaml"
    config.write_text(
        yaml.safe_dump({"backends": [{"kind": "sim", "seed": SEED, "time_scale": TIME_SCALE}]})
    )
    log = workdir / "run-lag.log"
    command = [
        sys.executable,
        "-m",
        "fsm",
        "run",
        "--db",
        sqlite_url(path),
        "--config",
        str(config),
    ]
    with log.open("wb") as err:
        proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=err, env=env)
    lags: list[float] = []
    try:
        wait_started(log, proc)
        conn = sqlite3.connect(path, timeout=60)
        start = datetime.now(UTC) + timedelta(seconds=1)
        spread(conn, ids, start)
        query = (
            "SELECT next_refresh_at FROM entity WHERE next_refresh_at <= ? AND lease_owner IS NULL"
            " ORDER BY next_refresh_at LIMIT 1"
        )
        end = start + timedelta(seconds=seconds)
        while (now := datetime.now(UTC)) < end:
            if now >= start:
                row = conn.execute(query, (sqlite_time(now),)).fetchone()
                due = datetime.fromisoformat(row[0]) if row else now
                lags.append(max(0.0, (now - due).total_seconds()))
            time.sleep(SAMPLE_SECONDS)
        (observed,) = conn.execute(
            "SELECT count(*) FROM entity WHERE last_observed_at >= ?", (sqlite_time(start),)
        ).fetchone()
        conn.close()
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait()
    if code != 0:
        raise RuntimeError(f"fsm run exited {code}:\n{log.read_text()[-2000:]}")
    return LagRun(
        count, seconds, max(lags), statistics.median(lags), len(lags), int(observed), code
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--seconds", type=float, default=40.0)
    args = parser.parse_args(argv)
    import tempfile

    with tempfile.TemporaryDirectory(prefix="fsm-lag-") as tmp:
        run = measure(Path(tmp), args.count, args.seconds, dict(os.environ))
    print(json.dumps(run.__dict__))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
