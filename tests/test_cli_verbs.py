"""`fsm create / command / submit / stop / cancel / commands`, `fsm --version`, profiles in
status and history: each prints what it recorded, and a refused one writes nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fsm import Engine
from fsm.cli import main

JOB = """\
name: job
states:
  - {name: QUEUED, initial: true}
  - {name: RUNNING}
  - {name: DONE, terminal: true}
  - {name: STOPPED, terminal: true}
transitions:
  - {trigger: begin, source: QUEUED, dest: RUNNING}
  - {trigger: progress, source: RUNNING, dest: "="}
  - {trigger: finish, source: RUNNING, dest: DONE}
  - {trigger: stop, source: "*", dest: STOPPED}
"""
CONFIG = """\
db: {db}
lifecycles: [job.yaml]
backends:
  - {{name: laptop, kind: sim, lifecycles: [service]}}
  - {{name: lab, kind: sim, seed: 7}}
"""


def fsm(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def config(tmp_path: Path, db_url: str) -> str:
    path = tmp_path / "run.yaml"
    (tmp_path / "job.yaml").write_text(JOB)
    path.write_text(CONFIG.format(db=json.dumps(db_url)))
    return str(path)


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = fsm(capsys, "--version")
    assert code == 0 and out.startswith("fsm ") and out.split()[1][0].isdigit()


def test_create_command_schedule_cancel_stop(
    capsys: pytest.CaptureFixture[str], config: str, db_url: str
) -> None:
    code, out, err = fsm(
        capsys,
        "create",
        "service",
        "--id",
        "s1",
        "--config",
        config,
        "--backend",
        "laptop",
        "--data",
        '{"owner": "ann"}',
    )
    assert (code, err) == (0, "")
    assert out == "created service s1 in SUBMITTED (version 1, profile laptop)\n"
    assert fsm(capsys, "create", "job", "--id", "j1", "--config", config)[0] == 0
    code, out, _ = fsm(capsys, "command", "j1", "begin", "--config", config)
    assert out == "j1: begin: QUEUED -> RUNNING (transition 1, version 2)\n"
    code, out, _ = fsm(capsys, "command", "j1", "progress", "--config", config, "--json")
    (outcome,) = json.loads(out)["outcomes"]
    assert (outcome["state"], outcome["transition"], outcome["held"]) == ("RUNNING", None, [])
    code, out, err = fsm(capsys, "command", "s1", "job_running", "--config", config)
    assert code == 1 and "the simulator has no 'job_running'" in err and "nothing recorded" in err
    code, out, _ = fsm(capsys, "command", "s1", "stop", "--in", "3600", "--config", config)
    assert code == 0 and out.startswith("scheduled #1: stop on s1 at ")
    code, out, _ = fsm(capsys, "commands", "s1", "--config", config, "--json")
    assert [(c["id"], c["command"], c["done_at"]) for c in json.loads(out)] == [(1, "stop", None)]
    code, out, _ = fsm(capsys, "cancel", "1", "--config", config)
    assert code == 0 and out.startswith("cancelled #1: stop on s1")
    code, _, err = fsm(capsys, "cancel", "1", "--config", config)
    assert code == 1 and "is done already" in err and "cancelled" in err
    code, _, err = fsm(capsys, "cancel", "99", "--config", config)
    assert code == 1 and "no scheduled command #99" in err
    code, out, err = fsm(capsys, "stop", "s1", "nope", "j1", "--config", config)
    assert code == 1
    assert out.splitlines() == [
        "s1: stop: SUBMITTED -> STOPPED (transition 1, version 2)",
        "j1: stop: RUNNING -> STOPPED (transition 2, version 3)",
    ]
    assert err == "fsm: error: nope: stop refused: no entity with id 'nope'\n"
    code, out, _ = fsm(capsys, "history", "s1", "--db", db_url)
    assert "profile laptop" in out.splitlines()[0]
    code, out, _ = fsm(capsys, "status", "--db", db_url, "--json")
    assert json.loads(out)["profiles"] == [
        {"profile": "laptop", "lifecycle": "service", "live": 0, "count": 1}
    ]
    engine = Engine(db_url)
    assert engine.get("s1").profile == "laptop"
    assert [t.event for t in engine.history("s1")] == ["stop"]
    assert engine.get("s1").data["sim_stop_at"]  # the backend acted, then it was recorded
    assert engine.verify() == []
    engine.close()


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["create", "nosuch"], 2, "unknown lifecycle 'nosuch'"),
        (["create", "host", "--backend", "laptop"], 2, "drives service, not 'host'"),
        (["create", "service", "--backend", "nope"], 2, "not a profile of the config: lab, laptop"),
        (["create", "service", "--data", "[1]"], 2, "--data must be a JSON object"),
        (["create", "service", "--id", ""], 1, "entity id must not be empty"),
        (["command", "nope", "stop"], 1, "no entity with id 'nope'"),
        (["command", "s0", "finish"], 1, "neither an event of lifecycle 'service'"),
        (["command", "s0", "ping_ok"], 1, "'ping_ok' is not allowed"),
        (["command", "s0", "job_failed"], 1, "the simulator has no 'job_failed'"),
        (["command", "s0", "stop", "--at", "2026-01-01T00:00"], 2, "needs a timezone"),
        (["command", "s0", "stop", "--at", "x", "--in", "1"], 2, "exclude each other"),
        (["command", "s0", "stop", "--in", "nan"], 2, "Invalid value for '--in'"),
        (["command", "s0", "stop", "--args", '{"password": 1'], 2, "not valid JSON"),
        (["cancel", "0"], 2, "greater than or equal to 1"),
    ],
)
def test_a_refused_verb_is_one_line_and_writes_nothing(
    capsys: pytest.CaptureFixture[str],
    config: str,
    db_url: str,
    args: list[str],
    code: int,
    message: str,
) -> None:
    engine = Engine(db_url)
    engine.create("service", id="s0")
    before = (engine.list_entities(), engine.history("s0"))
    got, out, err = fsm(capsys, *args, "--config", config)
    assert got == code, (out, err)
    assert message in err and err.count("\n") == 1 and err.startswith("fsm: error: ")
    assert (engine.list_entities(), engine.history("s0")) == before
    engine.close()


def test_writing_verbs_never_create_a_database_except_create(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    db = f"sqlite:///{tmp_path}/new.db"
    for args in (["command", "x", "stop"], ["stop", "x"], ["cancel", "1"], ["commands"]):
        code, _, err = fsm(capsys, *args, "--db", db)
        assert code == 1 and "does not exist" in err, (args, err)
    assert list(tmp_path.iterdir()) == []
    assert fsm(capsys, "create", "service", "--db", db, "--data", "{")[0] == 2
    assert list(tmp_path.iterdir()) == []  # a refused argument: no database either
    assert fsm(capsys, "create", "service", "--db", db)[0] == 0
    assert (tmp_path / "new.db").exists()


def test_machines_lists_the_configs_lifecycles_too(
    capsys: pytest.CaptureFixture[str], config: str
) -> None:
    code, out, _ = fsm(capsys, "machines", "--config", config, "--json")
    assert code == 0
    infos = {m["name"]: m for m in json.loads(out)}
    assert {n: infos[n]["source"] for n in ("service", "host", "operation")} == dict.fromkeys(
        ("service", "host", "operation"), "built-in"
    )
    assert infos["job"]["source"].endswith("job.yaml") and infos["job"]["initial"] == "QUEUED"
