"""Supervision by example: policy and spec validation, stops (ours and someone else's), a crash
inside a launch, two workers deciding the same launch, ensure_healthy and its reasons."""

from __future__ import annotations

from datetime import timedelta

import pytest

from backends.sim import SimBackend
from fsm import Engine, FsmError, InvalidInput, ManualClock, NewEntity
from fsm.secret_refs import SecretInArguments, secret_ref
from fsm.supervision import supervise
from fsm.supervision_policy import Policy, Spec
from fsm.supervisor import NotHealthy, Supervisor, endpoint_of
from fsm.worker import Worker
from storage import queue
from tests.supervision_support import ScriptedSim, drive, tick


@pytest.fixture
def fast(db_url: str, clock: ManualClock) -> Engine:
    eng = Engine(db_url, clock=clock, refresh_scale=0.05)
    yield eng  # type: ignore[misc]
    eng.close()


# -- policy and spec -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("policy", "field"),
    [
        ({"on": ["STOPPED", "HEALTHY"]}, "policy.on"),
        ({"on": "FAILED"}, "policy.on"),
        ({"max_restarts": -1}, "policy.max_restarts"),
        ({"max_restarts": True}, "policy.max_restarts"),
        ({"window": 0}, "policy.window"),
        ({"window": float("inf")}, "policy.window"),
        ({"backoff": {"factor": 0.5}}, "backoff.factor"),
        ({"backoff": {"jitter": 2}}, "backoff.jitter"),
        ({"backoff": {"initial": -1}}, "backoff.initial"),
        ({"backoff": {"delay": 1}}, "policy.backoff"),
        ({"restarts": 3}, "policy"),
        ({"grace": "10s"}, "policy.grace"),
    ],
)
def test_a_bad_policy_is_refused_by_field(policy: dict, field: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(InvalidInput) as caught:
        Policy.from_dict(policy)
    assert caught.value.field == field


def test_backoff_is_exponential_capped_and_replayable() -> None:
    policy = Policy.from_dict({"backoff": {"initial": 1, "factor": 2, "max": 10, "jitter": 0.5}})
    assert [policy.base_delay(n) for n in range(1, 7)] == [1, 2, 4, 8, 10, 10]
    delays = [policy.delay("svc", attempt, 3) for attempt in range(1, 200)]
    assert all(2.0 <= d <= 4.0 for d in delays)
    assert len(set(delays)) > 150  # jittered: attempts do not restart in lockstep
    assert delays == [policy.delay("svc", attempt, 3) for attempt in range(1, 200)]
    assert policy.delay("svc", 1, 3) != policy.delay("other", 1, 3)
    assert Policy.from_dict(policy.to_dict()) == policy


def test_the_spec_keeps_secret_references_and_refuses_literal_secrets(fast: Engine) -> None:
    spec = {"submit": {"process": {"argv": ["x"], "env": {"HF_TOKEN": secret_ref("HF")}}}}
    sup = Supervisor.create(fast, spec, id="svc")
    assert sup.entity().data["spec"]["submit"]["process"]["env"] == {"HF_TOKEN": {"$secret": "HF"}}
    with pytest.raises(SecretInArguments):
        Supervisor.create(fast, {"submit": {"env": {"HF_TOKEN": "hf_abcdefghijklmnop1234"}}})
    with pytest.raises(InvalidInput):
        Spec.from_dict({"lifecycle": "service", "image": "x"})
    with pytest.raises(InvalidInput):
        Supervisor.create(fast, {"lifecycle": "operation"})  # no HEALTHY state to keep
    with pytest.raises(InvalidInput):
        Supervisor.create(fast, {}, id="web-a3")  # would look like an attempt
    assert [e.id for e in fast.list_entities()] == ["svc"]


# -- the attempts ----------------------------------------------------------------------------


def test_each_attempt_is_a_child_with_the_spec_and_its_reason_in_history(
    fast: Engine, clock: ManualClock
) -> None:
    worker = Worker(fast, [ScriptedSim({1: ("fails", 3.0), 2: ("timeout", 4.0)})])
    sup = Supervisor.create(fast, {"data": {"team": "ml"}}, {"grace": 0}, id="svc")
    drive(worker, clock, sup, step=0.1, until=30)
    attempts = sup.attempts()
    assert [a.entity.id for a in attempts] == ["svc-a1", "svc-a2", "svc-a3"]
    assert all(a.entity.parent_id == "svc" for a in attempts)
    assert attempts[1].entity.data["team"] == "ml"
    assert [a.entity.state for a in attempts] == ["FAILED", "TIMEOUT", "HEALTHY"]
    ended = [t.payload for t in fast.history("svc") if t.event == "attempt_ended"]
    assert [(p["attempt"], p["ended"], p["by"]) for p in ended] == [
        (1, "FAILED", "job_failed"),
        (2, "TIMEOUT", "job_timeout"),
    ]
    assert sup.state == "RUNNING"
    assert fast.verify() == []


def test_a_stop_of_the_supervisor_ends_its_attempt_and_restarts_nothing(
    fast: Engine, clock: ManualClock
) -> None:
    worker = Worker(fast, [ScriptedSim({})])
    sup = Supervisor.create(fast, {}, id="svc")
    drive(worker, clock, sup, step=0.1, until=5)
    assert sup.state == "RUNNING"
    assert sup.stop() == "STOPPING"
    drive(worker, clock, sup, step=0.1, until=30)
    assert sup.state == "STOPPED"
    [attempt] = sup.attempts()
    assert attempt.entity.state == "STOPPED"
    assert fast.history(attempt.entity.id)[-1].event == "stop"
    for _ in range(50):
        tick(worker)
        clock.advance(1)
    assert len(sup.attempts()) == 1
    assert sup.stop() == "STOPPED"  # idempotent


def test_a_stop_during_the_backoff_launches_nothing(fast: Engine, clock: ManualClock) -> None:
    worker = Worker(fast, [ScriptedSim({1: ("fails", 2.0)})])
    sup = Supervisor.create(fast, {}, {"backoff": {"initial": 60, "jitter": 0}}, id="svc")
    while sup.state != "BACKOFF":
        tick(worker)
        clock.advance(0.1)
    assert sup.stop() == "STOPPED"
    clock.advance(120)
    tick(worker)
    assert len(sup.attempts()) == 1


@pytest.mark.parametrize(("on", "restarted"), [(None, True), (["FAILED", "TIMEOUT"], False)])
def test_a_stop_of_the_attempt_by_someone_else_is_restarted_if_the_policy_says_so(
    fast: Engine, clock: ManualClock, on: list[str] | None, restarted: bool
) -> None:
    worker = Worker(fast, [ScriptedSim({})])
    policy = {} if on is None else {"on": on}
    sup = Supervisor.create(fast, {}, policy, id="svc")
    drive(worker, clock, sup, step=0.1, until=5)
    fast.fire("svc-a1", "job_cancelled", {"reason": "scancel by alice"}, source="slurm")
    drive(worker, clock, sup, step=0.1, until=10)
    if restarted:
        assert [a.entity.id for a in sup.attempts()] == ["svc-a1", "svc-a2"]
        assert sup.state in ("STARTING", "RUNNING")
    else:
        assert sup.state == "GAVE_UP"
        assert fast.history("svc")[-1].event == "not_restarted"
        assert "STOPPED" in sup.reason()


def test_a_crash_inside_a_launch_leaves_no_trace_and_the_retry_launches_once(
    fast: Engine, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The submit command is written last in a launch's transaction: failing it there is a
    worker dying between the child's insert and the commit."""
    worker = Worker(fast, [Submitting()])
    sup = Supervisor.create(fast, {"submit": {"x": 1}}, id="svc")

    def crash(*args: object, **kwargs: object) -> int:
        raise RuntimeError("killed")

    monkeypatch.setattr(queue, "schedule_command", crash)
    with pytest.raises(RuntimeError):
        supervise(worker)
    assert sup.state == "PENDING" and sup.attempts() == []
    monkeypatch.undo()
    assert supervise(worker) == 1
    assert supervise(worker) == 0
    assert [a.entity.id for a in sup.attempts()] == ["svc-a1"]
    with fast.store.transaction() as uow:
        [submit] = queue.list_commands(uow, "svc-a1")
    assert (submit.command, submit.arguments) == ("submit", {"x": 1})


class Submitting(SimBackend):
    """A simulator whose services need a `submit` (as local processes and Slurm jobs do)."""

    commands = frozenset({"submit"})


def test_two_workers_never_double_an_attempt(fast: Engine, clock: ManualClock) -> None:
    sim = ScriptedSim({n: ("fails", 1.5) for n in range(1, 6)})
    workers = [Worker(fast, [sim], worker_id=f"w{i}") for i in range(2)]
    sup = Supervisor.create(fast, {}, {"max_restarts": 4, "backoff": {"initial": 0.2}}, id="s")
    for _ in range(400):
        for w in workers:
            tick(w)
        if sup.entity().terminal:
            break
        clock.advance(0.1)
    assert sup.state == "GAVE_UP"
    assert [a.number for a in sup.attempts()] == [1, 2, 3, 4, 5]
    launches = [t.payload["attempt"] for t in fast.history("s") if t.event == "launch"]
    assert launches == [1, 2, 3, 4, 5]


def test_an_attempt_id_held_by_another_entity_is_never_taken_over(
    fast: Engine, clock: ManualClock
) -> None:
    fast.create("service", {"owner": "someone else"}, id="svc-a1")
    worker = Worker(fast, [ScriptedSim({})])
    sup = Supervisor.create(fast, {}, id="svc")
    tick(worker)
    assert sup.state == "GAVE_UP"
    assert "not launched" in sup.reason()
    assert fast.get("svc-a1").parent_id is None


def test_a_child_of_another_parent_named_in_the_data_is_ignored(
    fast: Engine, clock: ManualClock
) -> None:
    """Supervisor data is entity data: whatever it names, only a real child counts."""
    worker = Worker(fast, [ScriptedSim({})])
    sup = Supervisor.create(fast, {}, id="svc")
    drive(worker, clock, sup, step=0.1, until=3)
    fast.create("service", {}, id="other")
    fast.create_many([NewEntity("service", {}, "intruder", parent_id="other")])
    fast.fire("svc", "stop", data={"child": "intruder"})
    drive(worker, clock, sup, step=0.1, until=5)
    assert sup.state == "STOPPED"
    assert fast.get("svc-a1").state == "STOPPED"  # its real attempt
    assert fast.get("intruder").state != "STOPPED"  # never stopped by us


# -- ensure_healthy --------------------------------------------------------------------------


def test_ensure_healthy_returns_the_endpoint_or_raises_with_the_reason(
    fast: Engine, clock: ManualClock
) -> None:
    worker = Worker(fast, [ScriptedSim({1: ("fails", 2.0)})])
    sup = Supervisor.create(fast, {}, {"max_restarts": 0}, id="svc")
    waited: list[float] = []
    with pytest.raises(NotHealthy) as caught:
        sup.ensure_healthy(1.0, every=0.5, sleep=waited.append, monotonic=lambda: len(waited))
    assert "no attempt launched yet" in str(caught.value)
    drive(worker, clock, sup, step=0.1, until=10)
    with pytest.raises(NotHealthy) as caught:
        sup.ensure_healthy(60)
    assert caught.value.state == "GAVE_UP"
    assert "attempt 1 ended FAILED by job_failed" in caught.value.reason
    assert endpoint_of({"port": 8080}) == ("127.0.0.1", 8080)
    assert endpoint_of({"node": "della-h1", "port": 9}) == ("della-h1", 9)
    tunnel = {"pid": 1, "local_port": 4000, "node": "n", "remote_port": 9}
    assert endpoint_of({"node": "n", "port": 9, "tunnel": tunnel}) == ("127.0.0.1", 4000)
    assert endpoint_of({"port": True}) is None and endpoint_of({"port": 70000}) is None


def test_a_supervisor_is_not_a_service(fast: Engine) -> None:
    fast.create("service", {}, id="plain")
    with pytest.raises(FsmError):
        Supervisor(fast, "plain").ensure_healthy(0)


def test_budget_counts_restarts_within_the_window_only(fast: Engine, clock: ManualClock) -> None:
    """Two restarts per 20 s: attempts ending every ~12 s are restarted forever, ones ending
    every ~2 s exhaust the budget."""
    slow = ScriptedSim({n: ("fails", 12.0) for n in range(1, 10)})
    worker = Worker(fast, [slow])
    policy = {"max_restarts": 2, "window": 20, "backoff": {"initial": 0.5, "jitter": 0}}
    sup = Supervisor.create(fast, {}, policy, id="slow")
    drive(worker, clock, sup, step=0.25, until=90)
    assert sup.state != "GAVE_UP" and len(sup.attempts()) >= 6
    clock.advance(timedelta(hours=1).total_seconds())
    slow.script = {n: ("fails", 2.0) for n in range(1, 30)}
    fast_sup = Supervisor.create(fast, {}, policy, id="quick")
    drive(worker, clock, fast_sup, step=0.25, until=90)
    assert fast_sup.state == "GAVE_UP"
    assert len(fast_sup.attempts()) == 3  # the first, and the two restarts the window allows


def test_restart_replaces_the_attempt_at_once_outside_the_budget(
    fast: Engine, clock: ManualClock
) -> None:
    worker = Worker(fast, [ScriptedSim({})])
    policy = {"max_restarts": 0, "backoff": {"initial": 300}}  # no restart of its own
    sup = Supervisor.create(fast, {}, policy, id="svc")
    assert sup.restart() is None  # nothing live yet
    drive(worker, clock, sup, step=0.1, until=3)
    for expected in ("svc-a1", "svc-a2"):
        assert sup.restart() == expected
        drive(worker, clock, sup, step=0.1, until=3)
    assert [a.entity.state for a in sup.attempts()] == ["STOPPED", "STOPPED", "HEALTHY"]
    ended = [t.payload for t in fast.history("svc") if t.event == "attempt_ended"]
    assert [(p["asked"], p["restart_in"]) for p in ended] == [(True, 0.0), (True, 0.0)]
    assert sup.state == "RUNNING"


def test_an_event_fired_by_hand_never_makes_a_second_live_attempt(
    fast: Engine, clock: ManualClock
) -> None:
    worker = Worker(fast, [ScriptedSim({})])
    sup = Supervisor.create(fast, {}, id="svc")
    drive(worker, clock, sup, step=0.1, until=3)
    fast.fire("svc", "attempt_ended", data={"next_attempt_at": None})  # not the worker's doing
    for _ in range(20):
        tick(worker)
        clock.advance(0.5)
    assert [a.entity.state for a in sup.attempts()] == ["HEALTHY"]


class Holding(ScriptedSim):
    """Attempts hold something until `release` is confirmed; it fails while `stuck` is set."""

    releases = True
    stuck = True

    def release(self, entity, now):  # type: ignore[no-untyped-def]
        if self.stuck:
            raise RuntimeError("controller down")


def test_no_next_attempt_while_the_last_one_may_still_hold_something(
    fast: Engine, clock: ManualClock
) -> None:
    sim = Holding({1: ("fails", 2.0)})
    worker = Worker(fast, [sim])
    sup = Supervisor.create(fast, {}, {"backoff": {"initial": 0.5, "jitter": 0}}, id="svc")
    drive(worker, clock, sup, step=0.1, until=20)
    assert sup.state == "BACKOFF" and len(sup.attempts()) == 1  # its release is not confirmed
    sim.stuck = False
    clock.advance(600)  # past the release's retry backoff
    drive(worker, clock, sup, step=0.1, until=5)
    assert len(sup.attempts()) == 2 and sup.state in ("STARTING", "RUNNING")
