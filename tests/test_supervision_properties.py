"""Property tests of supervision on the simulator with a manual clock: attempts that end at
random times (and a stop at a random time) give exactly the restarts the policy allows, at the
backoff it gives, never two live attempts, GAVE_UP exactly when the budget is spent, and no
restart after a stop. The oracle below judges from the attempts' own histories."""

from __future__ import annotations

import itertools
import uuid
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fsm import Engine, ManualClock
from fsm.supervision_policy import RESTARTABLE
from fsm.supervisor import Supervisor
from fsm.worker import Worker
from tests.supervision_support import ScriptedSim, drive, in_window, lived

STEP = 0.25
EPS = 1e-6

policies = st.fixed_dictionaries(
    {
        "on": st.lists(st.sampled_from(RESTARTABLE), unique=True, min_size=1),
        "max_restarts": st.integers(0, 4),
        "window": st.one_of(st.none(), st.floats(5, 60)),
        "backoff": st.fixed_dictionaries(
            {
                "initial": st.floats(0.25, 2),
                "factor": st.floats(1, 3),
                "max": st.floats(0.5, 8),
                "jitter": st.floats(0, 0.5),
            }
        ),
        "grace": st.one_of(st.just(0.0), st.floats(0.25, 3)),
    }
)
# an attempt that ends within a second never answers its health check: half of them do
lifetimes = st.one_of(st.floats(0.3, 0.95), st.floats(1.0, 12))
scripts = st.lists(
    st.tuples(st.sampled_from(["fails", "timeout", "cancelled"]), lifetimes), max_size=6
)


def _base(policy: dict, in_a_row: int) -> float:  # type: ignore[type-arg]
    b = policy["backoff"]
    return float(min(b["max"], b["initial"] * b["factor"] ** (in_a_row - 1)))


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    policy=policies,
    script=scripts,
    stop_at=st.one_of(st.none(), st.floats(0, 60)),
)
def test_restarts_follow_the_policy(
    tmp_path: Path,
    policy: dict,
    script: list,
    stop_at: float | None,  # type: ignore[type-arg]
) -> None:
    clock = ManualClock()
    engine = Engine(f"sqlite:///{tmp_path / uuid.uuid4().hex}.db", clock=clock, refresh_scale=0.05)
    try:
        sim = ScriptedSim({n: step for n, step in enumerate(script, start=1)})
        worker = Worker(engine, [sim])
        sup = Supervisor.create(engine, {"data": {}}, policy, id="svc")
        stopped = drive(worker, clock, sup, step=STEP, until=150, stop_at=stop_at)
        _judge(engine, sup, policy, stopped, clock)
        assert engine.verify() == []
    finally:
        engine.close()


def _judge(engine, sup, policy, stopped, clock) -> None:  # type: ignore[no-untyped-def]
    final = sup.entity()
    attempts = [a.entity for a in sup.attempts()]
    assert [a.number for a in sup.attempts()] == list(range(1, len(attempts) + 1))
    runs = lived(engine, attempts)
    history = engine.history(sup.id)
    started_record = {t.payload["attempt"] for t in history if t.event == "attempt_started"}
    # never two live attempts: each starts after the previous one ended
    for prev, nxt in itertools.pairwise(runs):
        assert prev.end is not None and nxt.created >= prev.end
    # nothing launched once a stop was asked
    if stopped is not None:
        assert all(r.created < stopped for r in runs)
        assert final.state == "STOPPED", final.state
        assert runs == [] or runs[-1].end is not None
    restarts: list = []  # type: ignore[type-arg]
    in_a_row = 0
    for i, run in enumerate(runs):
        last = i == len(runs) - 1
        if run.end is None:
            assert last
            assert final.state in ("STARTING", "RUNNING") or stopped is not None
            return
        if stopped is not None and run.end >= stopped:
            assert last  # ended after the stop: never restarted
            return
        if run.state not in policy["on"]:
            assert last and final.state == "GAVE_UP"
            assert history[-1].event == "not_restarted"
            return
        if in_window(restarts, run.end, policy["window"]) >= policy["max_restarts"]:
            assert last and final.state == "GAVE_UP", (i, final.state)
            assert history[-1].event == "budget_spent"
            return
        restarts.append(run.end)
        grace = policy["grace"]
        if grace == 0:
            started = run.ever_healthy
        elif run.healthy_for < grace:
            started = False
        elif run.healthy_for >= grace + 2 * STEP + EPS:
            started = True
        else:  # within a tick of the grace: either reading is right
            started = run.number in started_record
        assert started == (run.number in started_record), run
        in_a_row = 1 if started else in_a_row + 1
        base = _base(policy, in_a_row)
        low = base * (1 - policy["backoff"]["jitter"])
        if last:  # still in its backoff when the run ended (or stopped during it)
            assert final.state in ("BACKOFF", "STOPPED")
            if final.state == "BACKOFF":
                waited = (clock.now - run.end).total_seconds()
                assert waited < base + STEP + EPS
            return
        gap = (runs[i + 1].created - run.end).total_seconds()
        assert low - EPS <= gap <= base + STEP + EPS, (gap, low, base)
    assert final.state in ("PENDING", "STOPPED", "STARTING")
