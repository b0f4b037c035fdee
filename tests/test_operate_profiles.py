"""Backend profiles: config parsing, routing per entity (one batched call per backend instance
per batch), an unknown profile observed as failed, a profile-driven worker to ground truth,
migration 0004 with data; and the simulator schedules nothing a state would refuse."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from backends.sim import SimBackend, populate
from fsm import Engine, ManualClock, NewEntity
from fsm.config import ConfigError, RunConfig, load_config
from fsm.errors import InvalidInput
from fsm.observation import FailureKind
from fsm.routing import ProfileRouter, Routes, routes_for
from fsm.worker import Worker, WorkerSettings


class Counting(SimBackend):
    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.batches: list[list[str]] = []

    def observe(self, entities, now):  # type: ignore[no-untyped-def]
        self.batches.append([e.id for e in entities])
        return super().observe(entities, now)


@pytest.fixture
def fast_engine(db_url: str, clock: ManualClock) -> Iterator[Engine]:
    eng = Engine(db_url, clock=clock, refresh_scale=0.05)
    yield eng
    eng.close()


def drive(worker: Worker, clock: ManualClock, limit: int = 3000) -> None:
    for _ in range(limit):
        worker.tick()
        if worker.open_work() == 0:
            return
        clock.advance(0.1)
    raise AssertionError(f"still {worker.open_work()} open")


def test_each_entity_goes_to_its_profile_one_call_per_backend_per_batch(
    fast_engine: Engine, clock: ManualClock
) -> None:
    a, b = Counting(seed=1, fates=("healthy",)), Counting(seed=2, fates=("fails",))
    routes = Routes([("a", a), ("b", b)])
    fast_engine.create_many(
        [NewEntity("service", {}, f"a{i}", profile="a") for i in range(30)]
        + [NewEntity("service", {}, f"b{i}", profile="b") for i in range(30)]
        + [NewEntity("service", {}, f"d{i}") for i in range(5)]  # the default route: a
    )
    worker = Worker(
        fast_engine,
        routes.for_worker(),
        settings=WorkerSettings(batch_size=20, max_batches_per_tick=50),
    )
    stats = worker.refresh()  # (an explicit batch count: no time budget cuts this tick)
    assert stats.claimed == 65
    calls = len(a.batches) + len(b.batches)
    assert stats.batches == 4 and calls <= 2 * stats.batches  # one call per profile per batch
    assert all(i.startswith(("a", "d")) for batch in a.batches for i in batch)
    assert all(i.startswith("b") for batch in b.batches for i in batch)
    assert sorted(i for batch in a.batches for i in batch) == sorted(
        [f"a{i}" for i in range(30)] + [f"d{i}" for i in range(5)]
    )
    for bs in (a.batches, b.batches):  # no entity twice in one call
        assert all(len(batch) == len(set(batch)) for batch in bs)
    drive(worker, clock)
    states = {e.id: e.state for e in fast_engine.list_entities()}
    assert {states[f"a{i}"] for i in range(30)} == {"TIMEOUT"}  # healthy, until its wall time
    assert {states[f"b{i}"] for i in range(30)} == {"FAILED"}
    assert {t.source for t in fast_engine.history("a0") + fast_engine.history("b0")} == {"sim"}
    assert fast_engine.verify() == []


def test_an_unknown_profile_is_a_failed_observation_and_its_commands_are_refused(
    fast_engine: Engine,
) -> None:
    sim = SimBackend(seed=3)
    fast_engine.create("service", id="lost", profile="gone")
    router = ProfileRouter(Routes([("here", sim)]))
    entity = fast_engine.get("lost")
    (seen,) = router.observe_safely([entity], fast_engine.now())
    assert seen.failure is FailureKind.MISSING and "'gone'" in seen.detail
    worker = Worker(fast_engine, [router])
    with pytest.raises(Exception, match="profile 'gone', which this config does not name"):
        worker.command("lost", "stop")
    assert fast_engine.get("lost").state == "SUBMITTED"


def test_profile_names_are_checked(fast_engine: Engine, tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="profile"):
        fast_engine.create("service", profile="-bad name")
    config = tmp_path / "run.yaml"
    config.write_text(
        "backends: [{name: x, kind: sim}, {name: x, kind: sim}, {name: '', kind: sim}]"
    )
    with pytest.raises(ConfigError, match=r"two backends are named 'x'.*name must be"):
        load_config(config)
    config.write_text("backends: [{name: laptop, kind: sim, seed: 4}, {kind: sim}]")
    routes = routes_for(load_config(config))
    assert list(routes) == ["laptop"]
    assert routes.defaults["service"] is routes.instances()[1]  # the unnamed one first
    assert routes_for(RunConfig()).for_worker()[0].name == "sim"  # no profiles: as before


def test_migration_0004_moves_a_database_with_data(tmp_path: Path) -> None:
    from alembic import command

    from storage.migrate import alembic_config

    url = f"sqlite:///{tmp_path}/old.db"
    engine = Engine(url)
    engine.create("service", {"job_id": 1}, id="kept")
    engine.fire("kept", "job_running")
    config = alembic_config()
    config.attributes["connection_url"] = url
    engine.close()
    _downgrade_and_upgrade(url)
    engine = Engine(url)
    assert engine.get("kept").profile is None and engine.get("kept").state == "STARTING"
    engine.create("service", id="new", profile="laptop")
    assert engine.get("new").profile == "laptop"
    assert engine.verify() == []
    engine.close()
    del command


def _downgrade_and_upgrade(url: str) -> None:
    from alembic import command

    from storage.migrate import alembic_config
    from storage.store import Store

    store = Store(url)
    try:
        with store.engine.begin() as conn:
            config = alembic_config()
            config.attributes["connection"] = conn
            command.downgrade(config, "0002")
            columns = [r[1] for r in conn.exec_driver_sql("PRAGMA table_info(entity)")]
            assert "profile" not in columns
            command.upgrade(config, "head")
    finally:
        store.close()


def test_the_simulator_schedules_nothing_that_would_be_refused(
    fast_engine: Engine, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    sim = SimBackend(seed=5, host_failure_rate=0.5)
    populate(fast_engine, sim, services=60, hosts=12, stop_every=3)
    assert any(sim.provision_fails(f"sim-host-{i:05d}") for i in range(12))
    worker = Worker(fast_engine, [sim])
    with caplog.at_level(logging.WARNING):
        drive(worker, clock)
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
    wrong = [e.id for e in fast_engine.list_entities() if e.state != sim.expected_final_state(e)]
    assert wrong == []


def test_the_demo_says_why_there_is_no_svg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from fsm.live_demo import _annotated_diagrams

    engine = Engine(f"sqlite:///{tmp_path}/demo.db")
    engine.create("service", id="s")
    monkeypatch.setenv("PATH", str(tmp_path))  # no `dot` here
    files, why = _annotated_diagrams(engine, tmp_path)
    assert [f.name for f in files] == ["fsm-demo-service.mmd"]
    assert why is not None and "graphviz" in why and "apt-get install graphviz" in why
    engine.close()
