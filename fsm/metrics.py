"""Prometheus metrics of a worker: transitions, entities by state, refresh time, failures."""

from __future__ import annotations

from collections.abc import Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from fsm.engine import Engine
from fsm.worker import WorkerListener
from storage import TransitionRow, releases


class Metrics(WorkerListener):
    """One registry per worker process; `serve(port)` exposes it over HTTP."""

    def __init__(self, engine: Engine, registry: CollectorRegistry | None = None) -> None:
        self.engine = engine
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.transitions = Counter(
            "fsm_transitions_total",
            "Transitions recorded by this worker",
            ["lifecycle", "from_state", "to_state"],
            registry=r,
        )
        self.entities = Gauge(
            "fsm_entities",
            "Entities by lifecycle and state (whole database)",
            ["lifecycle", "state"],
            registry=r,
        )
        self.refresh_seconds = Histogram(
            "fsm_refresh_duration_seconds",
            "Time to claim, observe and record one batch",
            registry=r,
        )
        self.refreshed = Counter(
            "fsm_refreshed_entities_total", "Entities observed by this worker", registry=r
        )
        self.observation_errors = Counter(
            "fsm_observation_errors_total",
            "Failed backend observations, by kind",
            ["kind"],
            registry=r,
        )
        self.lease_takeovers = Counter(
            "fsm_lease_takeovers_total", "Expired leases of other workers taken over", registry=r
        )
        self.pending_releases = Gauge(
            "fsm_releases_pending",
            "Ended entities whose backend has not yet confirmed their release (whole database)",
            registry=r,
        )
        engine.subscribe(self.on_transitions)

    def on_transitions(self, transitions: Sequence[TransitionRow]) -> None:
        names = {lc.version: lc.name for lc in self.engine.lifecycles.values()}
        for t in transitions:
            lifecycle = names.get(t.definition_version, "?")
            self.transitions.labels(lifecycle, t.from_state, t.to_state).inc()

    def observation_failed(self, kind: str) -> None:
        self.observation_errors.labels(kind).inc()

    def lease_taken_over(self, count: int) -> None:
        self.lease_takeovers.inc(count)

    def refresh_done(self, seconds: float, entities: int) -> None:
        self.refresh_seconds.observe(seconds)
        self.refreshed.inc(entities)

    def update_entities(self) -> None:
        self.entities.clear()
        for count in self.engine.counts():
            self.entities.labels(count.lifecycle, count.state).set(count.total)
        with self.engine.store.reading() as conn:
            self.pending_releases.set(releases.pending(conn, limit=0)[0])

    def serve(self, port: int, address: str = "127.0.0.1") -> None:
        start_http_server(port, addr=address, registry=self.registry)
