"""Every documented rule of the service lifecycle, each as its own property.

A rule is checked after a random prefix of events that brings a fresh service into the state the
rule is about: a random walk over events that keep it alive, with random time passing between
them, then the shortest way into the state wanted (computed from the definition). Everything
runs on the real engine and database; a few properties also run on PostgreSQL.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, cast

import psycopg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fsm import Engine, Entity, InvalidEvent, ManualClock, builtin_definition
from fsm.definition import SAME_STATE

SERVICE = builtin_definition("service")
STARTING_LIMIT = SERVICE.state("STARTING").time_limit or 0.0
LIVE = tuple(s.name for s in SERVICE.states if not s.terminal)
TERMINAL = tuple(sorted(SERVICE.terminal_states))
TRIGGERS = SERVICE.triggers


def _moves() -> dict[str, dict[str, str]]:
    """state -> trigger -> destination, for unguarded triggers that keep a service alive."""
    moves: dict[str, dict[str, str]] = {s: {} for s in LIVE}
    for t in SERVICE.transitions:
        if t.guards or t.unless:
            continue
        for source in t.sources:
            dest = source if t.dest == SAME_STATE else t.dest
            # ping_failed in STARTING is only harmless before the time limit: leave it out
            harmless = (t.trigger, source) != ("ping_failed", "STARTING")
            if dest not in SERVICE.terminal_states and t.trigger not in moves[source] and harmless:
                moves[source][t.trigger] = dest
    return moves


MOVES = _moves()


def _path(start: str, goal: str) -> list[str]:
    """The shortest list of triggers from `start` to `goal` over MOVES."""
    came: dict[str, tuple[str, str] | None] = {start: None}
    queue = deque([start])
    while queue:
        state = queue.popleft()
        for trigger, dest in sorted(MOVES[state].items()):
            if dest not in came:
                came[dest] = (state, trigger)
                queue.append(dest)
    assert goal in came, f"{goal} cannot be reached from {start} without ending the service"
    triggers: list[str] = []
    at = goal
    while (step := came[at]) is not None:
        at, trigger = step
        triggers.append(trigger)
    return triggers[::-1]


@dataclass
class Services:
    """A real engine on a real database, with its manual clock; ids are unique per example."""

    engine: Engine
    clock: ManualClock
    ids: Iterator[int]

    def new(self) -> Entity:
        return self.engine.create("service", id=f"svc-{next(self.ids)}")

    def fire(self, entity: Entity, event: str, *, after: float = 0.0) -> Entity:
        self.clock.advance(after)
        self.engine.fire(entity.id, event)
        return self.engine.get(entity.id)

    def wait_within(self, entity: Entity, fraction: float) -> None:
        """Move the clock `fraction` (in [0, 1)) of the way to the entity's deadline."""
        assert entity.deadline_at is not None
        left = entity.deadline_at - self.clock()
        self.clock.now += timedelta(
            microseconds=int(fraction * (left // timedelta(microseconds=1)))
        )


@st.composite
def _walk(draw: st.DrawFn, max_steps: int = 4) -> list[tuple[str, float]]:
    """A random walk over MOVES from SUBMITTED: (trigger, seconds before it) pairs."""
    state = SERVICE.initial
    steps: list[tuple[str, float]] = []
    for _ in range(draw(st.integers(0, max_steps))):
        trigger = draw(st.sampled_from(sorted(MOVES[state])))
        # time passes, but never past STARTING's limit: that ends the service (rule tested below)
        limit = STARTING_LIMIT - 1 if state == "STARTING" else 10_000.0
        steps.append((trigger, draw(st.floats(0, limit))))
        state = MOVES[state][trigger]
    return steps


def _reachable_from(start: str) -> set[str]:
    seen = {start}
    queue = deque([start])
    while queue:
        for dest in MOVES[queue.popleft()].values():
            if dest not in seen:
                seen.add(dest)
                queue.append(dest)
    return seen


REACHES = {state: _reachable_from(state) for state in LIVE}


def _prefix(services: Services, walk: list[tuple[str, float]], goal: str) -> Entity:
    """A new service, moved along `walk` (skipping steps after which `goal` could not be
    reached any more: SUBMITTED, say), then by the shortest path into `goal`."""
    entity_id = services.new().id
    state = SERVICE.initial
    in_starting = 0.0  # time spent in STARTING so far: stay well within its limit
    for trigger, seconds in walk:
        dest = MOVES[state].get(trigger)
        if dest is None or goal not in REACHES[dest]:
            continue
        if state == "STARTING":
            seconds = max(0.0, min(seconds, STARTING_LIMIT - 1 - in_starting))
            in_starting += seconds
        else:
            in_starting = 0.0
        services.clock.advance(seconds)
        state = services.engine.fire(entity_id, trigger).state or ""
        assert state == dest
    for trigger in _path(state, goal):
        state = services.engine.fire(entity_id, trigger).state or ""
    entity = services.engine.get(entity_id)
    assert entity.state == goal
    return entity


def _open(url: str) -> Iterator[Services]:
    clock = ManualClock()
    engine = Engine(url, clock=clock)
    yield Services(engine, clock, itertools.count())
    engine.close()


@pytest.fixture(scope="module")
def sqlite_services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    yield from _open(f"sqlite:///{tmp_path_factory.mktemp('rules')}/fsm.db")


@pytest.fixture(scope="module")
def postgres_services(pg_server: str) -> Iterator[Services]:
    schema = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    base = pg_server.replace("postgresql://", "postgresql+psycopg://", 1)
    sep = "&" if "?" in base else "?"
    yield from _open(f"{base}{sep}options=-csearch_path%3D{schema}")
    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


def service_rule(
    *, postgres: bool = False, **strategies: st.SearchStrategy[Any]
) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """A property over `strategies` on SQLite (and, with `postgres`, on PostgreSQL as well).

    Each example costs a handful of database round trips, so a rule runs a quarter of the
    profile's examples on SQLite (50 in "ci", 500 in "long") and a twentieth on PostgreSQL.
    """

    def decorate(check: Callable[..., None]) -> Callable[..., None]:
        backends: list[Any] = ["sqlite"]
        if postgres:
            backends.append(pytest.param("postgres", marks=pytest.mark.postgres))

        @pytest.mark.parametrize("backend", backends)
        @functools.wraps(check)
        def test(request: pytest.FixtureRequest, backend: str) -> None:
            services: Services = request.getfixturevalue(f"{backend}_services")
            share = 4 if backend == "sqlite" else 20
            examples = max(10, settings().max_examples // share)  # of the loaded profile

            @settings(max_examples=examples)
            @given(**strategies)
            def run(**drawn: Any) -> None:
                check(services, **drawn)

            run()

        del test.__wrapped__  # pytest must see (request, backend), not the check's arguments
        return cast(Callable[..., None], test)

    return decorate


def _transitions(services: Services, entity: Entity) -> list[tuple[str, str, str]]:
    return [(t.from_state, t.event, t.to_state) for t in services.engine.history(entity.id)]


# -- the rules ----------------------------------------------------------------------------------


@service_rule(postgres=True, walk=_walk(), state=st.sampled_from(["SUBMITTED", "PENDING"]))
def test_job_pending_means_pending(
    services: Services, walk: list[tuple[str, float]], state: str
) -> None:
    """A service whose job waits in the queue is PENDING (first submission or later)."""
    entity = services.fire(_prefix(services, walk, state), "job_pending")
    assert entity.state == "PENDING"


@service_rule(postgres=True, walk=_walk(), state=st.sampled_from(["SUBMITTED", "PENDING"]))
def test_job_running_means_starting(
    services: Services, walk: list[tuple[str, float]], state: str
) -> None:
    """When the job starts running, the service is STARTING: a running job says nothing
    about health yet."""
    entity = services.fire(_prefix(services, walk, state), "job_running")
    assert entity.state == "STARTING"


@service_rule(walk=_walk(), state=st.sampled_from(["STARTING", "HEALTHY", "UNHEALTHY"]))
def test_job_running_again_changes_nothing(
    services: Services, walk: list[tuple[str, float]], state: str
) -> None:
    """A job seen running again leaves a started service's health as it was."""
    before = _prefix(services, walk, state)
    after = services.fire(before, "job_running")
    assert (after.state, after.seq) == (before.state, before.seq)


@service_rule(
    postgres=True, walk=_walk(), state=st.sampled_from(["STARTING", "HEALTHY", "UNHEALTHY"])
)
def test_ping_ok_means_healthy(
    services: Services, walk: list[tuple[str, float]], state: str
) -> None:
    """A good health ping makes a started service HEALTHY."""
    assert services.fire(_prefix(services, walk, state), "ping_ok").state == "HEALTHY"


@service_rule(
    walk=_walk(),
    events=st.lists(
        st.tuples(st.sampled_from(TRIGGERS), st.floats(0, 2 * STARTING_LIMIT)), max_size=12
    ),
)
def test_starting_never_becomes_unhealthy(
    services: Services, walk: list[tuple[str, float]], events: list[tuple[str, float]]
) -> None:
    """STARTING can never become UNHEALTHY, whatever the events and the time between them."""
    entity = _prefix(services, walk, "STARTING")
    for event, seconds in events:
        services.clock.advance(seconds)
        with contextlib.suppress(InvalidEvent):
            services.engine.fire(entity.id, event)
    moves = _transitions(services, entity)
    assert not [m for m in moves if (m[0], m[2]) == ("STARTING", "UNHEALTHY")]


@service_rule(walk=_walk(), pings=st.integers(1, 4), fraction=st.floats(0, 1, exclude_max=True))
def test_failed_pings_before_the_time_limit_keep_starting(
    services: Services, walk: list[tuple[str, float]], pings: int, fraction: float
) -> None:
    """While STARTING is within its time limit, failed pings leave it STARTING."""
    entity = _prefix(services, walk, "STARTING")
    services.wait_within(entity, fraction)
    for _ in range(pings):
        entity = services.fire(entity, "ping_failed")
        assert entity.state == "STARTING"


@service_rule(postgres=True, walk=_walk(), late=st.floats(0, 3 * STARTING_LIMIT))
def test_failed_ping_after_the_time_limit_times_out(
    services: Services, walk: list[tuple[str, float]], late: float
) -> None:
    """A failed ping once STARTING's time limit has passed (at or after the deadline) makes
    the service TIMEOUT."""
    entity = _prefix(services, walk, "STARTING")
    assert entity.deadline_at is not None
    services.clock.now = entity.deadline_at + timedelta(seconds=late)
    assert services.fire(entity, "ping_failed").state == "TIMEOUT"


@service_rule(
    walk=_walk(),
    queued=st.floats(0, 100 * STARTING_LIMIT),
    waited=st.floats(0, 2 * STARTING_LIMIT),
)
def test_time_limit_counts_from_entering_starting(
    services: Services, walk: list[tuple[str, float]], queued: float, waited: float
) -> None:
    """STARTING's time limit counts from entering STARTING, not from submission: however long
    the job waited in the queue, a failed ping times out only `time_limit` after it started."""
    entity = _prefix(services, walk, "PENDING")
    services.clock.advance(queued)
    entity = services.fire(entity, "job_running")
    assert entity.state == "STARTING"
    assert entity.state_entered_at == services.clock()
    assert entity.deadline_at == entity.state_entered_at + timedelta(seconds=STARTING_LIMIT)
    entity = services.fire(entity, "ping_failed", after=waited)
    # compared at the clock's resolution (microseconds), as the engine compares
    late = timedelta(seconds=waited) >= timedelta(seconds=STARTING_LIMIT)
    assert entity.state == ("TIMEOUT" if late else "STARTING")


@service_rule(
    walk=_walk(), first=st.floats(0, STARTING_LIMIT - 1), second=st.floats(0, STARTING_LIMIT)
)
def test_requeue_restarts_the_time_limit(
    services: Services, walk: list[tuple[str, float]], first: float, second: float
) -> None:
    """A service requeued from STARTING and started again gets a whole new time limit."""
    entity = _prefix(services, walk, "STARTING")
    entity = services.fire(entity, "job_requeued", after=first)
    entity = services.fire(entity, "job_running")
    entity = services.fire(entity, "ping_failed", after=second)
    late = timedelta(seconds=second) >= timedelta(seconds=STARTING_LIMIT)
    assert entity.state == ("TIMEOUT" if late else "STARTING")


@service_rule(walk=_walk(), waited=st.floats(0, 3 * STARTING_LIMIT))
def test_starting_time_limit_event_times_out_only_after_the_limit(
    services: Services, walk: list[tuple[str, float]], waited: float
) -> None:
    """The time-limit event ends a STARTING service as TIMEOUT once the limit is exceeded, and
    changes nothing before, whoever sends it (the seed: ping unsuccessful *and* time limit
    exceeded -> TIMEOUT)."""
    entity = _prefix(services, walk, "STARTING")
    assert entity.deadline_at is not None
    late = services.clock() + timedelta(seconds=waited) >= entity.deadline_at
    entity = services.fire(entity, "time_limit", after=waited)
    assert entity.state == ("TIMEOUT" if late else "STARTING")


@service_rule(postgres=True, walk=_walk(), state=st.sampled_from(LIVE))
def test_job_timed_out_means_timeout(
    services: Services, walk: list[tuple[str, float]], state: str
) -> None:
    """A job that ran out of time makes the service TIMEOUT, from any live state."""
    assert services.fire(_prefix(services, walk, state), "job_timeout").state == "TIMEOUT"


@service_rule(walk=_walk(), state=st.sampled_from(LIVE))
def test_job_failed_means_failed(
    services: Services, walk: list[tuple[str, float]], state: str
) -> None:
    """A failed job makes the service FAILED, from any live state."""
    assert services.fire(_prefix(services, walk, state), "job_failed").state == "FAILED"


@service_rule(walk=_walk(), bad=st.integers(1, 4))
def test_healthy_failed_ping_means_unhealthy_until_a_good_ping(
    services: Services, walk: list[tuple[str, float]], bad: int
) -> None:
    """A HEALTHY service whose ping fails is UNHEALTHY (and stays so while pings fail); the
    next good ping makes it HEALTHY again."""
    entity = _prefix(services, walk, "HEALTHY")
    for _ in range(bad):
        entity = services.fire(entity, "ping_failed")
        assert entity.state == "UNHEALTHY"
    assert services.fire(entity, "ping_ok").state == "HEALTHY"


@service_rule(walk=_walk(), event=st.sampled_from(["job_failed", "job_timeout"]))
def test_unhealthy_job_end(services: Services, walk: list[tuple[str, float]], event: str) -> None:
    """An UNHEALTHY service whose job fails is FAILED; whose job times out is TIMEOUT."""
    entity = services.fire(_prefix(services, walk, "UNHEALTHY"), event)
    assert entity.state == {"job_failed": "FAILED", "job_timeout": "TIMEOUT"}[event]


@service_rule(
    walk=_walk(), state=st.sampled_from(LIVE), event=st.sampled_from(["stop", "job_cancelled"])
)
def test_stop_means_stopped(
    services: Services, walk: list[tuple[str, float]], state: str, event: str
) -> None:
    """A stop command, or a cancelled job, makes the service STOPPED, from any live state."""
    assert services.fire(_prefix(services, walk, state), event).state == "STOPPED"


@service_rule(
    postgres=True,
    walk=_walk(),
    state=st.sampled_from(LIVE),
    end=st.sampled_from(["job_failed", "job_timeout", "stop", "job_cancelled"]),
    events=st.lists(st.sampled_from(TRIGGERS), min_size=1, max_size=4),
)
def test_final_states_cannot_be_restarted(
    services: Services, walk: list[tuple[str, float]], state: str, end: str, events: list[str]
) -> None:
    """FAILED, TIMEOUT and STOPPED are final: every event on them is refused, nothing is
    recorded, and the service stays as it is (no requeue, no restart)."""
    ended = services.fire(_prefix(services, walk, state), end)
    assert ended.state in TERMINAL and ended.terminal
    for event in events:
        with pytest.raises(InvalidEvent) as refused:
            services.engine.fire(ended.id, event)
        assert refused.value.allowed == ()
    after = services.engine.get(ended.id)
    assert (after.state, after.version, after.seq) == (ended.state, ended.version, ended.seq)


@service_rule(
    postgres=True,
    walk=_walk(),
    state=st.sampled_from(["STARTING", "HEALTHY", "UNHEALTHY"]),
    event=st.sampled_from(["job_requeued", "job_pending"]),
)
def test_requeued_means_pending(
    services: Services, walk: list[tuple[str, float]], state: str, event: str
) -> None:
    """A requeued (or suspended, or preempted) job goes back to PENDING: job_requeued, or
    job_pending seen while STARTING, HEALTHY or UNHEALTHY."""
    entity = services.fire(_prefix(services, walk, state), event)
    assert entity.state == "PENDING"
    assert entity.deadline_at is None
