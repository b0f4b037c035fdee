"""What every part of a worker shares: its engine, routes, settings, and two small steps that
refresh, deadlines and commands all take (fire a time limit, ask for releases)."""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from datetime import datetime

from fsm.engine import Engine
from fsm.events import Event, Outcome
from fsm.staging import StagedBatch
from fsm.worker_calls import BoundedCalls
from fsm.worker_listeners import WorkerListener
from fsm.worker_settings import BackendLike, WorkerSettings
from storage import TransitionRow, UnitOfWork, releases

log = logging.getLogger("fsm.worker")


class WorkerBase:
    engine: Engine
    id: str
    settings: WorkerSettings
    rng: random.Random
    listener: WorkerListener | None
    routes: dict[str, BackendLike]
    calls: BoundedCalls

    def _fire_limit(self, batch: StagedBatch, entity_id: str, now: datetime) -> Outcome | None:
        """Stage the time-limit event of the entity's current state (the rule allowed it)."""
        head = batch.head(entity_id)
        if head is None or head.terminal or head.deadline_at is None:
            return None
        event = self.engine.lifecycle(head.row.lifecycle).states[head.state].on_time_limit
        if event is None:
            return None
        payload = {"deadline_at": head.deadline_at.isoformat()}
        outcome = batch.add(Event(entity_id, event, payload, "timer", now))
        if outcome.error is not None:
            log.warning("time limit of %s not applied: %s", entity_id, outcome.error)
        return outcome

    def _request_releases(
        self, uow: UnitOfWork, transitions: Sequence[TransitionRow], now: datetime
    ) -> int:
        """In the transaction of terminal transitions: the obligation to free what those
        entities still hold, for the backends of this worker that hold anything."""
        by_version = {lc.version: lc for lc in self.engine.lifecycles.values()}
        wanted = []
        for t in transitions:
            lifecycle = by_version.get(t.definition_version)
            if lifecycle is None or t.to_state not in lifecycle.terminal:
                continue
            backend = self.routes.get(lifecycle.name)
            if backend is None or not backend.releases:
                continue
            wanted.append((t.entity_id, t.to_state))
        return releases.request(uow, wanted, now)
