"""`fsm run`: APScheduler drives one worker's ticks until a signal (or idleness) stops it.

APScheduler 3 only schedules inside this process; its job stores must never be shared between
processes, so the database is the durable queue and every process runs its own scheduler.
"""

from __future__ import annotations

import fcntl
import logging
import os
import signal
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import IO

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
)
from storage import StorageError, WorkerRefused

log = logging.getLogger(__name__)


class SingleWorkerLock:
    """SQLite has one writer: a second worker on the same file is refused, not queued."""

    def __init__(self, url: str) -> None:
        parsed = make_url(url)
        self.path: Path | None = None
        self._file: IO[str] | None = None
        if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
            self.path = Path(f"{parsed.database}.worker-lock")

    def __enter__(self) -> SingleWorkerLock:
        if self.path is None:
            return self
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        handle = os.fdopen(fd, "r+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = handle.read().strip() or "another process"
            handle.close()
            raise WorkerRefused(
                f"a worker ({holder}) already runs on {self.path.with_suffix('')}; SQLite allows "
                "one worker per database file — use PostgreSQL to run several"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}")
        handle.flush()
        self._file = handle
        return self

    def __exit__(self, *exc: object) -> None:
        if self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None


class Runner:
    """Ticks a worker every `interval` seconds; stops on SIGTERM/SIGINT after the batch in
    flight, gives its leases back, and returns 0."""

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

    def stop(self, *_: object) -> None:
        self.stopping.set()

    def _tick(self) -> None:
        if self.stopping.is_set():
            return
        try:
            stats = self.worker.tick()
            self.ticks += 1
            if self.metrics is not None:
                self.metrics.update_entities()
            if self.on_tick is not None:
                self.on_tick(stats)
            if self.exit_when_idle and self.worker.open_work() == 0:
                self.idle.set()
                self.stopping.set()
        except StorageError as exc:  # the database went away: log, and try again next tick
            self.errors += 1
            log.error("tick failed: %s", exc)
        except Exception:
            self.errors += 1
            log.exception("tick failed")

    def run(self) -> int:
        with SingleWorkerLock(self.worker.engine.store.url):
            previous = self._install_signals()
            scheduler = BackgroundScheduler(
                timezone=UTC,
                job_defaults={"max_instances": 1, "coalesce": True, "misfire_grace_time": 60},
            )
            scheduler.add_job(
                self._tick,
                "interval",
                seconds=self.interval,
                jitter=self.interval * 0.1,
                id="tick",
                next_run_time=datetime.now(UTC),
            )
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
        return 0

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
    try:
        for lifecycle in lifecycles:
            engine.register(lifecycle)
        metrics = Metrics(engine) if metrics_port is not None else None
        listeners: list[WorkerListener] = [m for m in (metrics,) if m is not None]
        if lease_audit is not None:
            listeners.append(LeaseAudit(lease_audit))
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
        engine.close()
