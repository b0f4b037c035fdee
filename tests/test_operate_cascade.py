"""A finished operation moves its host in the transaction that records it (fsm.cascade)."""

from __future__ import annotations

import pytest

from fsm import Definition, DefinitionError, Engine, Event, NewEntity
from fsm import children as fsm_children
from fsm.children import Child
from fsm.lifecycles import builtin_definition


def _host_with_operation(engine: Engine, command: str = "provision") -> tuple[str, str]:
    op = engine.create("operation", {"command": command}, id=f"op-{command}", parent_id="h#1")
    engine.fire("h#1", command, {"operation": op.id}, data={"operation": op.id})
    engine.fire(op.id, "start")
    return "h#1", op.id


@pytest.fixture
def engine(db_url: str) -> Engine:
    eng = Engine(db_url)
    eng.create("host", id="h#1")
    yield eng  # type: ignore[misc]
    eng.close()


def test_a_failed_operation_fails_its_host_in_the_same_commit(engine: Engine) -> None:
    host, op = _host_with_operation(engine)
    outcome = engine.fire(op, "fail", {"error": "quota"})
    assert outcome.state == "FAILED"
    assert engine.get(host).state == "FAILED"
    last_op, last_host = engine.history(op)[-1], engine.history(host)[-1]
    assert last_host.event == "operation_failed"
    assert last_host.payload == {
        "child": op,
        "child_lifecycle": "operation",
        "child_state": "FAILED",
        "operation": op,
    }
    assert last_host.recorded_at == last_op.recorded_at  # one commit
    assert engine.verify() == []


def test_a_succeeded_operation_confirms_the_command(engine: Engine) -> None:
    host, op = _host_with_operation(engine)
    engine.fire(op, "succeed")
    assert engine.get(host).state == "RUNNING"
    assert [t.event for t in engine.history(host)] == ["provision", "operation_succeeded"]


def test_only_the_current_operation_moves_the_host(engine: Engine) -> None:
    host, old = _host_with_operation(engine)
    engine.fire(host, "running")  # an observation got there first
    engine.fire(host, "stop", data={"operation": "op-stop"})
    engine.create("operation", {"command": "stop"}, id="op-stop", parent_id=host)
    result = engine.apply([Event(old, "fail")])  # a late failure of the provisioning
    assert result.outcomes[0].state == "FAILED"
    assert engine.get(host).state == "STOPPING"  # held by current_operation
    engine.fire("op-stop", "succeed")
    assert engine.get(host).state == "STOPPED"
    assert engine.verify() == []


def test_a_parent_elsewhere_is_left_alone(engine: Engine) -> None:
    host, op = _host_with_operation(engine)
    engine.fire(host, "deleted")  # DEPROVISIONED: operation_failed is not allowed there
    assert engine.fire(op, "fail").state == "FAILED"
    assert engine.get(host).state == "DEPROVISIONED"


def test_parent_events_are_validated() -> None:
    body = builtin_definition("operation").to_dict()
    assert body["parent_events"]["FAILED"] == "operation_failed"
    for bad, message in (
        ({"RUNNING": "x"}, "RUNNING is not terminal"),
        ({"NOPE": "x"}, "unknown state 'NOPE'"),
        ({"FAILED": "not an event"}, "must be an event name"),
        (["FAILED"], "must map terminal states"),
    ):
        with pytest.raises(DefinitionError, match=message):
            Definition.from_dict({**body, "parent_events": bad})
    assert Definition.from_dict(body).version == builtin_definition("operation").version


# -- children of a command result (fsm.children): the worker's side of a host command --------


class _Refusing:
    """A worker whose backend refuses the operation's `start` (nothing reached the cloud)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def command(
        self, entity_id: str, command: str, arguments: object = None, *, source: str = "user"
    ) -> None:
        self.calls.append((entity_id, command))
        raise RuntimeError("QuotaExceeded")


def _record_with_children(engine: Engine, fail_inside: bool = False) -> list[Child]:
    children = [Child(NewEntity("operation", {"command": "start"}, "op-1", "h#1"), "start", {})]
    if engine.get("h#1").state == "NEW":
        engine.fire("h#1", "adopted_stopped")
    with engine.store.transaction() as uow:
        batch = engine.stage(uow, uow.lock_entities(["h#1"]))
        created = fsm_children.create(engine, uow, children)
        assert [r.id for r in created] == ["op-1"]
        event = Event("h#1", "start", {"operation": "op-1"}, data={"operation": "op-1"})
        assert batch.add(event).state == "STARTING"
        batch.flush()
        if fail_inside:
            raise RuntimeError("the transaction fails after both were staged")
    engine.committed(batch)
    return children


def test_children_commit_with_the_command_or_not_at_all(engine: Engine) -> None:
    with pytest.raises(RuntimeError, match="after both were staged"):
        _record_with_children(engine, fail_inside=True)
    assert engine.get("h#1").state == "STOPPED"
    assert [e.id for e in engine.list_entities(lifecycle="operation")] == []
    children = _record_with_children(engine)
    op = engine.get("op-1")
    assert (op.parent_id, op.state, engine.get("h#1").state) == ("h#1", "PENDING", "STARTING")
    worker = _Refusing()
    fsm_children.start(worker, engine, children, "schedule")
    assert worker.calls == [("op-1", "start")]
    # the refused start is recorded on the operation, which moves its host in that commit
    assert engine.get("op-1").state == "FAILED"
    assert engine.get("h#1").state == "FAILED"
    assert engine.history("h#1")[-1].event == "operation_failed"
    assert engine.verify() == []
