"""Durable releases (TEAM contract 1): retry a backend's `release` until it confirms.

The obligation was written with the terminal transition (`WorkerBase._request_releases`); here
a worker claims due obligations, calls `release` (bounded by `release_timeout`) outside any
transaction, and records either "released" or the error and the next attempt, with exponential
backoff capped by `WorkerSettings.max_release_backoff`. A dead worker's claims expire.
"""

from __future__ import annotations

from datetime import timedelta

from fsm.redaction import redact_text
from fsm.worker_base import WorkerBase, log
from fsm.worker_settings import call_timeout
from storage import EntityNotFound, releases


class ReleaseMixin(WorkerBase):
    def run_releases(self, limit: int = 100) -> int:
        """Attempt every due release of the lifecycles this worker drives; returns how many
        were confirmed."""
        engine = self.engine
        drives = sorted(name for name, backend in self.routes.items() if backend.releases)
        if not drives:
            return 0
        now = engine.clock()
        longest = max(call_timeout(self.routes[name], "release") for name in drives)
        until = now + timedelta(seconds=max(self.settings.lease_seconds, longest + 5.0))
        with engine.store.transaction() as uow:
            due = releases.claim(uow, self.id, now, until, limit, drives)
        confirmed = 0
        for obligation in due:
            error = self._attempt_release(obligation.entity_id)
            attempts = obligation.attempts + 1
            delay = min(self.settings.max_release_backoff, 2.0 ** min(attempts - 1, 30))
            delay *= self.rng.uniform(0.5, 1.0)
            finished_at = engine.clock()
            with engine.store.transaction() as uow:
                mine = releases.finish(
                    uow,
                    obligation.entity_id,
                    self.id,
                    finished_at,
                    error=error,
                    retry_at=finished_at + timedelta(seconds=delay),
                )
            if error is None and mine:
                confirmed += 1
            elif error is not None:
                log.warning(
                    "release of %s failed (attempt %d), next in %.1fs: %s",
                    obligation.entity_id,
                    attempts,
                    delay,
                    error,
                )
        return confirmed

    def _attempt_release(self, entity_id: str) -> str | None:
        """None when the backend confirmed; otherwise why not (redacted)."""
        try:
            entity = self.engine.get(entity_id)
            backend = self.routes[entity.lifecycle]
            timeout = call_timeout(backend, "release")
            self.calls.call(
                backend,
                "release",
                backend.name,
                timeout,
                backend.release,
                entity,
                self.engine.clock(),
            )
        except EntityNotFound:
            return None  # nothing of it is left to hold anything
        except Exception as exc:  # any failure: the backend could not confirm
            return redact_text(f"{type(exc).__name__}: {exc}")
        return None
