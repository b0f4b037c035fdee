"""`fsm supervise start|list|show` and `fsm stop`, in-process: one-line errors, nothing half
written, and what they show after a worker ran."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fsm import Engine, ManualClock
from fsm.cli import main
from fsm.supervisor import Supervisor
from fsm.worker import Worker
from tests.supervision_support import ScriptedSim, drive


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("[1, 2]", "must be a mapping"),
        ("{service: {}, restart: always}", "unknown keys ['restart']"),
        ("{policy: {max_restarts: -2}}", "policy.max_restarts must be between"),
        ("{service: {submit: {env: {API_TOKEN: s3cr3t-v4lue-abcdef}}}}", "by reference"),
        ("{id: [x]}", "id must be a string"),
    ],
)
def test_a_bad_file_is_one_line_and_records_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, message: str
) -> None:
    db = f"sqlite:///{tmp_path}/fsm.db"
    spec = tmp_path / "sup.yaml"
    spec.write_text(content)
    code, _out, err = run(capsys, "supervise", "start", str(spec), "--db", db)
    assert code in (1, 2)
    assert message in err and len(err.strip().splitlines()) == 1
    assert "s3cr3t" not in err
    if (tmp_path / "fsm.db").exists():
        engine = Engine.open_existing(db)
        assert engine.list_entities() == []
        engine.close()


def test_start_list_show_stop(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = f"sqlite:///{tmp_path}/fsm.db"
    spec = tmp_path / "sup.yaml"
    spec.write_text("id: web\nservice: {data: {team: ml}}\npolicy: {max_restarts: 2}\n")
    code, out, err = run(capsys, "supervise", "start", str(spec), "--db", db)
    assert code == 0, err
    assert "web recorded" in out
    code, _, err = run(capsys, "supervise", "start", str(spec), "--db", db)
    assert code == 1 and "web" in err  # the id is taken: one line
    clock = ManualClock()
    engine = Engine(db, clock=clock, refresh_scale=0.05)
    worker = Worker(engine, [ScriptedSim({1: ("fails", 2.0)})])
    drive(worker, clock, Supervisor(engine, "web"), step=0.1, until=10)
    code, out, _ = run(capsys, "supervise", "list", "--db", db, "--json")
    [row] = json.loads(out)["supervisors"]
    assert (row["id"], row["state"], row["attempts"], row["current"]) == (
        "web",
        "RUNNING",
        2,
        "web-a2",
    )
    code, out, _ = run(capsys, "supervise", "show", "web", "--db", db)
    assert "attempt 1 ended FAILED by job_failed (sim); restart 1 in" in out
    assert "web-a2" in out
    code, out, _ = run(capsys, "status", "--db", db)
    assert "web-a2 HEALTHY" in out
    code, out, _ = run(capsys, "stop", "web", "--db", db)
    assert code == 0 and "STOPPING" in out
    drive(worker, clock, Supervisor(engine, "web"), step=0.1, until=10)
    assert engine.get("web").state == "STOPPED" and engine.get("web-a2").state == "STOPPED"
    code, out, _ = run(capsys, "stop", "web", "--db", db)
    assert code == 0 and "STOPPED" in out
    code, out, err = run(capsys, "stop", "nobody", "--db", db)
    assert code == 1 and "nobody" in err
    engine.create("service", {}, id="plain")
    code, out, _ = run(capsys, "stop", "plain", "--db", db)
    assert code == 0 and "SUBMITTED -> STOPPED" in out  # not a supervisor: stopped at once
    assert engine.get("plain").state == "STOPPED"
    engine.close()


def test_stop_never_creates_a_database(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "stop", "web", "--db", f"sqlite:///{tmp_path}/none.db")
    assert code == 1 and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "none.db").exists()
