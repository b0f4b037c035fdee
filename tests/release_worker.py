"""Run by test_worker_releases.py in a subprocess: a worker whose backend's `release` fails
while a marker file exists (the controller is down) and, once it is gone, records each release
in a file. `create` makes 20 operations and ticks forever (printing the failed attempts so far);
`drain` ticks until nothing is left to do."""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from backends.base import Backend, CommandResult
from fsm import Engine, NewEntity
from fsm.observation import Observation
from fsm.worker import Worker, WorkerSettings
from storage import EntityRow
from storage.tables import release_table


class Controller(Backend):
    name = "controller"
    lifecycles = frozenset({"operation"})
    releases = True

    def __init__(self, down: Path, done: Path) -> None:
        self.down = down
        self.done = done

    def observe(self, entities: Sequence[EntityRow], now: datetime) -> list[Observation]:
        return [Observation(e.id, ("fail",), observed_at=now) for e in entities]

    def execute(self, entity: EntityRow, command: str, arguments: Any, now: datetime) -> Any:
        return CommandResult()

    def release(self, entity: EntityRow, now: datetime) -> None:
        if self.down.exists():
            raise ConnectionError("slurmctld is not answering")
        with self.done.open("a") as out:
            out.write(entity.id + "\n")


def main(url: str, down: str, done: str, mode: str) -> int:
    engine = Engine(url)
    settings = WorkerSettings(max_release_backoff=0.2)
    worker = Worker(engine, [Controller(Path(down), Path(done))], settings=settings)
    if mode == "create":
        engine.create_many([NewEntity("operation", id=f"op-{i:02d}") for i in range(20)])
    while True:
        worker.tick()
        with engine.store.reading() as conn:
            tried = conn.execute(
                select(func.count()).select_from(release_table).where(release_table.c.attempts > 0)
            ).scalar_one()
        print("failed-attempts", tried, flush=True)
        if mode == "drain" and worker.open_work() == 0:
            return 0
        time.sleep(0.05)


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:5]))
