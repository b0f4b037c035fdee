from fsm import Engine


def test_service_walk(engine: Engine) -> None:
    s = engine.create("service")
    for ev in ["job_pending", "job_running", "ping_ok"]:
        engine.fire(s.id, ev)
    assert engine.get(s.id).state == "HEALTHY"
    assert [t.seq for t in engine.history(s.id)] == [1, 2, 3]
    assert engine.verify() == []
