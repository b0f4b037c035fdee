"""The database, engine and clock a machine's examples share, and the machine's settings."""

from __future__ import annotations

import shutil
import tempfile
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from fsm.clock import ManualClock
from fsm.engine import Engine
from fsm.lifecycle import Lifecycle
from fsm.testkit.model import START, EntityInvariant
from fsm.testkit.reference import Kit
from storage.tables import entity_table, scheduled_command_table, transition_table

# -- the database each example runs on ----------------------------------------------------------


class Resources:
    """One engine, clock and (by default) temporary SQLite file shared by a machine's examples.

    Opening an engine and migrating costs far more than an example, so every example of a machine
    class reuses them; the tables are emptied before and after each example instead.
    """

    def __init__(self, db_url: str | None, lifecycles: Sequence[Lifecycle]) -> None:
        self.folder: str | None = None
        if db_url is None:
            self.folder = tempfile.mkdtemp(prefix="fsm-testing-")
            db_url = f"sqlite:///{Path(self.folder) / 'fsm.db'}"
        self.clock = ManualClock(START)
        self.engine = Engine(db_url, lifecycles=lifecycles, clock=self.clock)
        if self.engine.list_entities(limit=1):
            self.engine.close()
            raise ValueError(
                "lifecycle_state_machine needs an empty scratch database (it deletes every entity "
                "and transition in it between examples), but this one has entities"
            )
        self._finalizer = weakref.finalize(self, _release, self.engine, self.folder)

    def wipe(self) -> None:
        with self.engine.store.engine.begin() as conn:
            conn.execute(transition_table.delete())
            conn.execute(scheduled_command_table.delete())
            conn.execute(entity_table.delete())

    def close(self) -> None:
        self._finalizer()


def _release(engine: Engine, folder: str | None) -> None:
    engine.close()
    if folder is not None:
        shutil.rmtree(folder, ignore_errors=True)


@dataclass(frozen=True, slots=True)
class KitConfig:
    kits: Mapping[str, Kit]
    db_url: str | None
    invariants: tuple[EntityInvariant, ...]
    max_entities: int
    max_advance: float
    verify_every_step: bool
    callbacks_may_raise: bool
