"""Deadlines the refresh did not settle: fire time limits the rule allows, ask for looks.

Most time limits of entities a backend drives fire in the refresh, right after the look the rule
asks for (`fsm.deadline_rule`). This pass covers the rest: entities no backend of this worker
drives (timed out on the clock alone — unless something observed them: another worker's backend
drives those, and they wait for the bound), limits whose look already succeeded, and entities whose
next look was scheduled (by another path) later than any backoff of the worker: made due now.
"""

from __future__ import annotations

from datetime import timedelta

from fsm.deadline_rule import may_fire
from fsm.worker_base import WorkerBase
from storage import queue


class DeadlineMixin(WorkerBase):
    def fire_timeouts(self, limit: int = 500) -> int:
        """Fire the time-limit event of every entity whose state outlived its limit, where the
        deadline rule allows it; returns how many transitions that made."""
        engine = self.engine
        now = engine.clock()
        # a look will come for the others (the refresh decides them); only one scheduled later
        # than any backoff of ours (by another path) is made due now
        latest = now + timedelta(seconds=self.settings.max_backoff)
        with engine.store.transaction() as uow:
            fire, look = [], []
            for row in queue.due_deadlines(uow, now, limit, sorted(self.routes), latest):
                assert row.deadline_at is not None
                routed = row.lifecycle in self.routes
                observed = row.last_observed_at
                if observed is not None and observed >= row.deadline_at:
                    fire.append(row)
                    continue
                if not routed and may_fire(  # another worker observes it: wait for the bound
                    now=now,
                    deadline_at=row.deadline_at,
                    state_entered_at=row.state_entered_at,
                    last_observed_at=observed,
                    routed=observed is not None,
                ):
                    fire.append(row)
                    continue
                if row.next_refresh_at is None or row.next_refresh_at > latest:
                    look.append(row.id)
            batch = engine.stage(uow, {r.id: r for r in fire})
            for row in fire:
                self._fire_limit(batch, row.id, now)
            batch.flush()
            self._request_releases(uow, batch.transitions, now)
            queue.pull_refresh(uow, look, now)
        engine.committed(batch)
        return len(batch.transitions)
