"""`/metrics`: the database's numbers in Prometheus' text format, read at scrape time.

A worker's own `--metrics-port` counts what that worker did; this counts what the database
holds, whoever wrote it, so one scrape of `fsm serve` covers every worker.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from fsm.web.reader import Reader


class DatabaseCollector(Collector):
    def __init__(self, reader: Reader) -> None:
        self.reader = reader

    def collect(self) -> Iterator[GaugeMetricFamily]:
        overview = self.reader.overview("hour")
        entities = GaugeMetricFamily(
            "fsm_entities", "Entities by lifecycle and state", labels=["lifecycle", "state"]
        )
        moved = GaugeMetricFamily(
            "fsm_transitions_last_hour",
            "Transitions recorded in the last hour",
            labels=["lifecycle", "event", "from_state", "to_state"],
        )
        failing = GaugeMetricFamily(
            "fsm_failing_observations",
            "Live entities whose last observation failed",
            labels=["lifecycle"],
        )
        overdue = GaugeMetricFamily(
            "fsm_overdue_deadlines", "Live entities past their deadline", labels=["lifecycle"]
        )
        lagging = GaugeMetricFamily(
            "fsm_lagging_refreshes", "Live entities whose refresh is overdue", labels=["lifecycle"]
        )
        for lc in overview.lifecycles:
            for state, n in lc.counts.items():
                entities.add_metric([lc.name, state], n)
            for m in lc.moves:
                moved.add_metric([lc.name, m.event, m.from_state, m.to_state], m.times)
            failing.add_metric([lc.name], lc.failing_observations)
            overdue.add_metric([lc.name], lc.overdue_deadlines)
            lagging.add_metric([lc.name], lc.lagging_refreshes)
        leases = GaugeMetricFamily("fsm_leases", "Entities leased per worker", labels=["worker"])
        for worker, n in overview.leases.items():
            leases.add_metric([worker], n)
        unreleased = GaugeMetricFamily(
            "fsm_releases_pending", "Ended entities whose release is not confirmed yet"
        )
        unreleased.add_metric([], overview.releases_pending)
        yield from (entities, moved, failing, overdue, lagging, leases, unreleased)


def exposition(reader: Reader) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DatabaseCollector(reader))
    return generate_latest(registry)
