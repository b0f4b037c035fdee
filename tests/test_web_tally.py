"""The overview's incremental move tally answers exactly what a direct grouped query over
the transitions answers, for every window, as transitions keep arriving."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from fsm import Engine, ManualClock
from fsm.web.tally import KEEP, MoveTally
from storage.moves import fired_moves

CYCLE = ("job_pending", "job_running", "ping_ok", "ping_failed", "ping_ok", "job_pending")
steps = st.lists(
    # (seconds to advance, events): often within the tally's overlap of a few seconds
    st.tuples(st.one_of(st.integers(0, 12), st.integers(0, 4000)), st.integers(0, 4)),
    min_size=1,
    max_size=12,
)


def _as_counter(moves: list) -> Counter:  # type: ignore[type-arg]
    return Counter({m[:4]: m.times for m in moves})


@settings(max_examples=25, deadline=None)
@given(
    before=steps,
    pause=st.integers(0, 12),
    after=steps,
    window_minutes=st.sampled_from([None, 1, 30, 60, 600]),
)
def test_tally_equals_a_direct_query(
    tmp_path_factory: object,
    before: list,  # type: ignore[type-arg]
    pause: int,
    after: list,  # type: ignore[type-arg]
    window_minutes: int | None,
) -> None:
    folder = tmp_path_factory.mktemp("tally")  # type: ignore[attr-defined]
    clock = ManualClock()
    engine = Engine(f"sqlite:///{folder}/t.db", clock=clock)
    ids = [engine.create("service", {}, id=f"s{i}").id for i in range(3)]
    step = {i: 0 for i in ids}

    def play(plan: list) -> None:  # type: ignore[type-arg]
        for seconds, events in plan:
            clock.advance(seconds)
            for n in range(events):
                entity = ids[n % len(ids)]
                engine.fire(entity, CYCLE[step[entity] % len(CYCLE)], {})
                step[entity] += 1

    play(before)
    clock.advance(pause)
    tally = MoveTally(engine.store, clock)
    tally.counts(None)  # loads
    play(after)
    since = None if window_minutes is None else clock() - timedelta(minutes=window_minutes)
    if since is not None:
        since = since.replace(second=0, microsecond=0)  # the tally is exact to the minute
    with engine.store.reading() as conn:
        expected = _as_counter(fired_moves(conn, since))
    assert _as_counter(tally.counts(since)) == expected
    assert _as_counter(tally.counts(since)) == expected  # asking twice counts nothing twice
    engine.close()


def test_a_window_older_than_the_minute_counts_is_answered_directly(sqlite_url: str) -> None:
    clock = ManualClock()
    engine = Engine(sqlite_url, clock=clock)
    engine.create("service", {}, id="s")
    engine.fire("s", "job_pending", {})
    clock.advance(KEEP.total_seconds() * 2)
    engine.fire("s", "job_running", {})
    tally = MoveTally(engine.store, clock)
    old = clock() - KEEP * 3
    assert sum(m.times for m in tally.counts(old)) == 2
    assert sum(m.times for m in tally.counts(clock() - timedelta(hours=1))) == 1
    engine.close()
