"""`fsm run`: APScheduler drives one worker's ticks until a signal (or idleness) stops it.

APScheduler 3 only schedules inside this process; its job stores must never be shared between
processes, so the database is the durable queue and every process runs its own scheduler.
"""

from __future__ import annotations

import fcntl
import logging
import os
import random
import signal
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType

from apscheduler.schedulers.background import BackgroundScheduler
from sqlalchemy.engine import make_url

from fsm.config import RunConfig, config_lifecycles
from fsm.engine import Engine
from fsm.metrics import Metrics
from fsm.routing import routes_for
from fsm.worker import (
    FanOut,
    LeaseAudit,
    TickStats,
    Worker,
    WorkerListener,
    WorkerSettings,
    WorkerStuck,
)
from storage import DatabaseCorrupt, StorageError, WorkerRefused
from storage.sqlite_file import read_only_fs

log = logging.getLogger(__name__)

#: failing ticks in a row after which a run with `exit_when_idle` stops (it cannot get idle)
MAX_FAILING_TICKS = 10


class SingleWorkerLock:
    """SQLite has one writer: a second worker on the same file is refused, not queued.

    The lock is an `flock` on the database file itself, so it keys on the file's identity
    (device + inode): a second worker reaching the file through a symlink, a hard link or
    another spelling of its path is refused too, and nothing is left behind. (SQLite's own
    locks are POSIX record locks, which `flock` does not touch on Linux.)
    """

    def __init__(self, url: str) -> None:
        parsed = make_url(url)
        self.path: Path | None = None
        self._fd: int | None = None
        if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
            self.path = Path(parsed.database or "")

    def __enter__(self) -> SingleWorkerLock:
        if self.path is None:
            return self
        try:  # opened for writing (never written): a file we cannot write fails here, not
            # at every tick (read-only file system, mode, owner, an immutable/append-only flag)
            fd = os.open(self.path, os.O_RDWR | os.O_CLOEXEC)
        except OSError as exc:
            if read_only_fs(self.path):
                raise WorkerRefused(
                    f"cannot run a worker on {self.path}: its file system is read-only; nothing "
                    "is wrong with the file (copy it to a writable folder, or remount read-write)"
                ) from None
            raise WorkerRefused(
                f"cannot open {self.path} to lock it: {exc.strerror} (a worker must write it)"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = _flock_holder(os.fstat(fd))
            os.close(fd)
            raise WorkerRefused(
                f"a worker ({holder}) already runs on {self.path} (or on another name of the "
                "same file); SQLite allows one worker per database file — use PostgreSQL to "
                "run several"
            ) from None
        self._fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock
            self._fd = None


def _flock_holder(stat: os.stat_result) -> str:
    """'pid N' of the process holding an flock on the file, from /proc/locks; best effort."""
    wanted = f"{os.major(stat.st_dev):02x}:{os.minor(stat.st_dev):02x}:{stat.st_ino}"
    try:
        lines = Path("/proc/locks").read_text().splitlines()
    except OSError:
        return "another process"
    for line in lines:
        fields = line.split()
        if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5] == wanted:
            return f"pid {fields[4]}"
    return "another process"


class Runner:
    """Ticks a worker every `interval` seconds, and again at once while a tick ends behind
    (`TickStats.behind`); stops on SIGTERM/SIGINT after the batch in flight, gives its leases
    back, and returns 0 (1 when it stopped because it could not make progress)."""

    def __init__(
        self,
        worker: Worker,
        *,
        interval: float = 1.0,
        exit_when_idle: bool = False,
        metrics: Metrics | None = None,
        on_tick: Callable[[TickStats], None] | None = None,
    ) -> None:
        self.worker = worker
        self.interval = interval
        self.exit_when_idle = exit_when_idle
        self.metrics = metrics
        self.on_tick = on_tick
        self.stopping = threading.Event()
        self.idle = threading.Event()
        self.ticks = 0
        self.errors = 0
        self.failing = 0
        self.exit_code = 0
        self._last_error: str | None = None
        self._scheduler: BackgroundScheduler | None = None
        self._scheduled = 0

    def stop(self, *_: object) -> None:
        self.stopping.set()

    def _tick(self) -> None:
        """One tick, then the next one scheduled: at once while the worker is behind, else
        `interval` (with 10 % jitter) after this one started."""
        started = datetime.now(UTC)
        behind = False
        try:
            behind = self._tick_once()
        finally:
            if not self.stopping.is_set():
                jitter = self.interval * random.uniform(-0.1, 0.1)
                at = started + timedelta(seconds=self.interval + jitter)
                self._schedule(datetime.now(UTC) if behind else at)

    def _schedule(self, at: datetime) -> None:
        """Each tick schedules the next as a one-off job with its own id: only one is ever
        pending or running (the worker is not thread-safe), none is skipped as a second
        instance, and a late one still runs (no misfire limit)."""
        if self._scheduler is None:
            return
        self._scheduled += 1
        now = datetime.now(UTC)
        self._scheduler.add_job(
            self._tick,
            "date",
            run_date=max(at, now),
            id=f"tick-{self._scheduled}",
            misfire_grace_time=None,
        )

    def _tick_once(self) -> bool:
        """Run one tick; True when the worker is behind and should tick again at once."""
        if self.stopping.is_set():
            return False
        try:
            stats = self.worker.tick()
            self.ticks += 1
            self.failing = 0
            self._last_error = None
            if self.metrics is not None:
                self.metrics.update_entities()
            if self.on_tick is not None:
                self.on_tick(stats)
            if self.exit_when_idle and not stats.behind and self.worker.open_work() == 0:
                self.idle.set()
                self.stopping.set()
            return stats.behind
        except (WorkerStuck, DatabaseCorrupt) as exc:  # no tick can succeed: say so, stop
            self._give_up(str(exc))
        except StorageError as exc:  # the database went away: log, and try again next tick
            self._failed(str(exc))
        except Exception as exc:
            self._failed(f"{type(exc).__name__}: {exc}", trace=True)
        return False

    def _failed(self, why: str, *, trace: bool = False) -> None:
        """Log a failing tick once per distinct reason; a run that must end when idle gives up
        after `MAX_FAILING_TICKS` in a row instead of failing forever."""
        self.errors += 1
        self.failing += 1
        if why != self._last_error:
            log.error("tick failed: %s", why, exc_info=trace)
            self._last_error = why
        if self.exit_when_idle and self.failing >= MAX_FAILING_TICKS:
            self._give_up(f"{self.failing} ticks in a row failed, last: {why}")

    def _give_up(self, why: str) -> None:
        log.error("worker %s cannot make progress, stopping: %s", self.worker.id, why)
        self.exit_code = 1
        self.stopping.set()

    def run(self) -> int:
        with SingleWorkerLock(self.worker.engine.store.url):
            previous = self._install_signals()
            scheduler = BackgroundScheduler(
                timezone=UTC, job_defaults={"max_instances": 1, "coalesce": True}
            )
            self._scheduler = scheduler
            self._schedule(datetime.now(UTC))
            log.info("worker %s started on %s", self.worker.id, self.worker.engine.store)
            scheduler.start()
            try:
                while not self.stopping.wait(0.1):
                    pass
            finally:
                scheduler.shutdown(wait=True)  # lets the tick in flight finish its batch
                self._restore_signals(previous)
                try:
                    released = self.worker.release()
                    log.info("worker %s stopped; released %d lease(s)", self.worker.id, released)
                except StorageError as exc:
                    log.error("could not release leases: %s", exc)
        return self.exit_code

    def _install_signals(self) -> dict[int, object]:
        if threading.current_thread() is not threading.main_thread():
            return {}
        previous: dict[int, object] = {}
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, self._on_signal)
        return previous

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        log.info("received %s: finishing the batch in flight", signal.Signals(signum).name)
        self.stopping.set()

    def _restore_signals(self, previous: dict[int, object]) -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]


def run_from_config(
    config: RunConfig,
    *,
    db: str | None = None,
    exit_when_idle: bool = False,
    metrics_port: int | None = None,
    worker_id: str | None = None,
    lease_audit: Path | None = None,
) -> int:
    """Everything `fsm run` does after parsing its arguments."""
    backends = routes_for(config).for_worker()  # refused before a db exists; profiles
    lifecycles = config_lifecycles(config)  # and their guards: refused before a db exists
    engine = Engine(db or config.db, refresh_scale=config.refresh_scale)
    closing = [engine.close]
    try:
        for lifecycle in lifecycles:
            engine.register(lifecycle)
        metrics = Metrics(engine) if metrics_port is not None else None
        listeners: list[WorkerListener] = [m for m in (metrics,) if m is not None]
        if lease_audit is not None:
            audit = LeaseAudit(lease_audit)  # refused here, before any lease is taken
            closing.append(audit.close)
            listeners.append(audit)
        settings = WorkerSettings(
            batch_size=config.batch_size,
            lease_seconds=config.lease_seconds,
            max_backoff=config.max_backoff,
            max_batches_per_tick=config.max_batches_per_tick,
        )
        worker = Worker(
            engine, backends, worker_id=worker_id, settings=settings, listener=FanOut(listeners)
        )
        if metrics is not None and metrics_port is not None:
            metrics.serve(metrics_port)
        return Runner(
            worker, interval=config.interval, exit_when_idle=exit_when_idle, metrics=metrics
        ).run()
    finally:
        for close in reversed(closing):
            close()
