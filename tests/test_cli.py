"""The `fsm` command: output, exit codes, and one-line errors instead of tracebacks."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from fsm import BUILTIN_NAMES, Definition, DefinitionError, Engine, ManualClock, builtin_definition
from fsm.cli import app, main
from fsm.definition import SAME_STATE
from fsm.diagram_moves import families as diagram_families
from fsm.lifecycles import builtin_lifecycles
from tests.components import unavailable

runner = CliRunner()
LIFECYCLE_DIR = Path(__file__).resolve().parent.parent / "fsm" / "lifecycles"

BROKEN = {
    "name": "broken",
    "states": [
        {"name": "A", "initial": True, "colour": "red"},
        {"name": "B", "time_limit": -5},
        {"name": "C"},
    ],
    "transitions": [
        {"trigger": "go", "source": "A", "dest": "NOWHERE"},
        {"trigger": "check", "source": "A", "dest": "B", "guards": "no_such_guard"},
    ],
}


def run(*args: str) -> tuple[int, str, str]:
    """The real entry point in-process: (exit code, stdout, stderr)."""
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def run_main(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """`main()`, which also turns the parser's usage errors into one line."""
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def fsm_script() -> list[str]:
    script = Path(sys.executable).with_name("fsm")
    return [str(script)] if script.exists() else [sys.executable, "-m", "fsm.cli"]


def run_process(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*fsm_script(), *args], capture_output=True, text=True, timeout=120, cwd=cwd, check=False
    )


def populate(engine: Engine, clock: ManualClock) -> dict[str, str]:
    """A few entities, walked through the engine like a backend would."""
    web = engine.create("service", id="svc-web").id
    api = engine.create("service", id="svc-api").id
    host = engine.create("host", id="host-1").id
    for event in ("job_pending", "job_running", "ping_ok"):
        clock.advance(5)
        engine.fire(web, event)
    for event in ("job_pending", "job_running", "ping_ok", "ping_failed", "stop"):
        clock.advance(5)
        engine.fire(api, event, payload={"why": event} if event == "stop" else None)
    engine.fire(host, "provision")
    return {"web": web, "api": api, "host": host}


# -- machines ----------------------------------------------------------------------------------


def test_machines_json_lists_the_builtins() -> None:
    code, out, _ = run("machines", "--json")
    assert code == 0
    infos = json.loads(out)
    assert [i["name"] for i in infos] == list(BUILTIN_NAMES)
    service = infos[0]
    assert service["version"] == builtin_definition("service").version
    assert service["terminal"] == ["FAILED", "TIMEOUT", "STOPPED"]
    assert service["time_limits"] == {"STARTING": 600.0}


def test_machines_table_is_plain_when_not_a_terminal() -> None:
    code, out, _ = run("machines")
    assert code == 0
    assert "╭" not in out and "\x1b[" not in out
    lines = out.splitlines()
    assert lines[0].split() == ["NAME", "VERSION", "SOURCE", "STATES", "TERMINAL", "TIME", "LIMITS"]
    assert [line.split()[0] for line in lines[1:]] == list(BUILTIN_NAMES)
    assert all(line == line.rstrip() for line in lines)


# -- lint --------------------------------------------------------------------------------------


def test_lint_lists_every_problem_of_a_broken_definition(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(BROKEN))
    with pytest.raises(DefinitionError) as caught:
        Definition.from_dict(BROKEN)
    expected = caught.value.problems
    assert len(expected) >= 5  # unknown key, bad time limit, bad dest, bad guard, no terminal...

    code, out, _ = run("lint", str(path))
    assert code == 1
    for problem in expected:
        assert f"  - {problem}" in out.splitlines()

    code, out, _ = run("lint", "--json", str(path))
    assert code == 1
    report = json.loads(out)
    assert report["ok"] is False
    assert report["files"][0]["problems"] == list(expected)


def test_lint_valid_definitions_exit_zero() -> None:
    files = sorted(str(p) for p in LIFECYCLE_DIR.glob("*.yaml"))
    assert len(files) == len(BUILTIN_NAMES)
    code, out, _ = run("lint", *files)
    assert code == 0, out
    assert out.count(": ok ") == len(files)


def test_lint_reports_each_file_and_fails_if_any_fails(tmp_path: Path) -> None:
    good = LIFECYCLE_DIR / "service.yaml"
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    missing = tmp_path / "missing.yaml"
    code, out, _ = run("lint", "--json", str(good), str(bad), str(missing))
    assert code == 1
    files = {Path(f["file"]).name: f for f in json.loads(out)["files"]}
    assert files["service.yaml"]["ok"] is True
    assert "not valid JSON" in files["bad.json"]["problems"][0]
    assert "cannot read" in files["missing.yaml"]["problems"][0]


def test_lint_accepts_guards_the_caller_declares(tmp_path: Path) -> None:
    body = builtin_definition("operation").to_dict()
    body["transitions"][0]["guards"] = ["capacity_free"]
    path = tmp_path / "op.json"
    path.write_text(json.dumps(body))
    assert run("lint", str(path))[0] == 1
    assert run("lint", "--guard", "capacity_free", str(path))[0] == 0


# -- diagram -----------------------------------------------------------------------------------

_STATE = re.compile(r'^\s*state "[^"]*" as (\w+)$')
_EDGE = re.compile(r"^\s*(\w+|\[\*\]) --> (\w+|\[\*\])(?::\s*(.*))?$")


def parse_mermaid(text: str) -> tuple[list[str], dict[tuple[str, str], list[str]]]:
    """States, and edges (source, dest) -> trigger labels, from Mermaid stateDiagram text."""
    states: list[str] = []
    edges: dict[tuple[str, str], list[str]] = {}
    for line in text.splitlines():
        if found := _STATE.match(line):
            states.append(found.group(1))
        elif found := _EDGE.match(line):
            labels = [part.strip() for part in (found.group(3) or "").split("|") if part.strip()]
            edges[(found.group(1), found.group(2))] = labels
    return states, edges


def test_service_diagram_has_its_eight_states_and_no_starting_to_unhealthy() -> None:
    code, out, _ = run("diagram", "service", "--format", "mermaid")
    assert code == 0
    states, edges = parse_mermaid(out)
    assert states == [
        "SUBMITTED",
        "PENDING",
        "STARTING",
        "HEALTHY",
        "UNHEALTHY",
        "FAILED",
        "TIMEOUT",
        "STOPPED",
    ]
    assert ("HEALTHY", "UNHEALTHY") in edges  # the parser does see edges
    assert ("STARTING", "UNHEALTHY") not in edges
    assert ("[*]", "SUBMITTED") in edges
    for terminal in ("FAILED", "TIMEOUT", "STOPPED"):
        assert (terminal, "[*]") in edges
    assert "ping_failed [time_limit_exceeded]" in edges[("STARTING", "TIMEOUT")]


def test_diagram_edges_are_exactly_the_definitions_moves() -> None:
    for name, lifecycle in builtin_lifecycles().items():
        code, out, _ = run("diagram", name)
        assert code == 0
        _, edges = parse_mermaid(out)
        drawn = {e for e in edges if "[*]" not in e}
        live = {s.name for s in lifecycle.definition.states if not s.terminal}
        # a move from every live state is one line in its destination, not an edge from each
        from_any = [
            t for t in lifecycle.definition.transitions if len(live) >= 4 and set(t.sources) == live
        ]
        # three or more moves out of one state named after their destinations: one line there
        family = {t for ts in diagram_families(lifecycle).values() for t in ts}
        for t in family:
            assert t.trigger.endswith("_" + t.dest.lower())
            line = re.search(rf"{t.sources[0]}<br>[^\"]*_<state> → [^\"]*\b{t.dest}\b", out)
            assert line, (name, t)
        assert bool(family) == (name == "host"), name
        moves = {
            (s, t.dest)
            for t in lifecycle.definition.transitions
            for s in t.sources
            if t.dest not in (SAME_STATE, s) and t not in from_any and t not in family
        }
        assert drawn == moves, name
        for t in from_any:
            assert re.search(rf"{t.dest}<br>.*from any live state: [^\"]*\b{t.trigger}\b", out)
        assert bool(from_any) == (name in ("service", "host")), name


def test_diagram_of_a_file_and_to_a_file(tmp_path: Path) -> None:
    out_file = tmp_path / "op.dot"
    code, _, err = run(
        "diagram", str(LIFECYCLE_DIR / "operation.yaml"), "-f", "dot", "-o", str(out_file)
    )
    assert code == 0
    assert "wrote" in err
    assert out_file.read_text().startswith('digraph "operation lifecycle')


def test_diagram_svg() -> None:
    if shutil.which("dot") is None:
        unavailable("graphviz's dot is not installed (CI installs it)")
    code, out, _ = run("diagram", "host", "--format", "svg")
    assert code == 0
    assert "<svg" in out and "DEPROVISIONED" in out


def test_diagram_of_a_broken_file_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(BROKEN))
    code, out, err = run("diagram", str(path))
    assert code == 1
    assert out == ""
    assert len(err.splitlines()) == 1 and "fsm lint" in err


# -- bad arguments: exit 2, one line -----------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["diagram", "nosuch"], "unknown lifecycle 'nosuch'"),
        (["diagram", "service", "--format", "png"], "'png' is not one of"),
        (["status", "--bogus"], "No such option: --bogus"),
        (["frobnicate"], "No such command 'frobnicate'"),
        (["history"], "Missing argument 'ID'"),
        (["status", "--db", "not a url"], "not a database URL"),
        (["verify", "--db", "mysql://u@localhost/x"], "unsupported database"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(
    capsys: pytest.CaptureFixture[str], args: list[str], needle: str
) -> None:
    code, out, err = run_main(capsys, *args)
    assert code == 2
    assert out == ""
    assert len(err.splitlines()) == 1, err
    assert err.startswith("fsm: error: ") and needle in err


def test_unknown_lifecycle_or_state_filter_exits_2(
    capsys: pytest.CaptureFixture[str], sqlite_url: str, clock: ManualClock
) -> None:
    with_engine = Engine(sqlite_url, clock=clock)
    populate(with_engine, clock)
    with_engine.close()
    for args, needle in (
        (["--lifecycle", "nope"], "unknown lifecycle 'nope'"),
        (["-l", "service", "-s", "RUNNING"], "unknown state 'RUNNING' in lifecycle 'service'"),
    ):
        code, _, err = run_main(capsys, "status", "--db", sqlite_url, *args)
        assert code == 2
        assert len(err.splitlines()) == 1 and needle in err


def test_no_arguments_shows_help(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_main(capsys)
    assert code == 0
    for command in ("machines", "lint", "diagram", "history", "verify", "status", "demo"):
        assert command in out


# -- unreachable or corrupt databases: exit 1, one line, no traceback --------------------------


def _bad_databases(tmp_path: Path) -> dict[str, tuple[str, str]]:
    text = tmp_path / "notes.db"
    text.write_text("these are notes, not a database\n" * 20)
    empty = tmp_path / "empty.db"
    empty.touch()
    return {
        "server down": ("postgresql://nobody@127.0.0.1:1/x", "cannot use"),
        "not sqlite": (f"sqlite:///{text}", "is not a SQLite database"),
        "empty file": (f"sqlite:///{empty}", "empty file"),
        "directory": (f"sqlite:///{tmp_path}", "is a directory"),
        "no folder": (f"sqlite:///{tmp_path}/no/such/dir/fsm.db", "does not exist"),
        "no file": (f"sqlite:///{tmp_path}/nonexistent.db", "does not exist"),
    }


@pytest.mark.parametrize("command", ["status", "verify", "history"])
def test_unusable_database_is_one_clear_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, command: str
) -> None:
    args = [command, "some-id"] if command == "history" else [command]
    for what, (url, needle) in _bad_databases(tmp_path).items():
        code, out, err = run_main(capsys, *args, "--db", url)
        assert code == 1, what
        assert out == "", what
        assert len(err.splitlines()) == 1, (what, err)
        assert needle in err, (what, err)
        assert "Traceback" not in err
    assert not (tmp_path / "nonexistent.db").exists()  # reading never creates a database
    assert (tmp_path / "empty.db").stat().st_size == 0  # nor writes into an empty file


def test_real_process_reports_database_errors_without_traceback(tmp_path: Path) -> None:
    missing = tmp_path / "nonexistent.db"
    result = run_process("status", "--db", f"sqlite:///{missing}")
    assert result.returncode == 1
    assert result.stderr.strip() == f"fsm: error: database {missing} does not exist"
    assert not missing.exists()
    result = run_process("status", "--db", "postgresql://nobody@127.0.0.1:1/x")
    assert result.returncode == 1
    assert len(result.stderr.splitlines()) == 1 and "Traceback" not in result.stderr


def test_status_uses_fsm_db_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FSM_DB", f"sqlite:///{tmp_path}/from-env.db")
    code, _, err = run_main(capsys, "status")
    assert code == 1 and "from-env.db does not exist" in err


# -- history, verify, status on a database the engine wrote ------------------------------------


def test_history_json(engine: Engine, clock: ManualClock, db_url: str) -> None:
    ids = populate(engine, clock)
    code, out, _ = run("history", ids["api"], "--db", db_url, "--json")
    assert code == 0
    report = json.loads(out)
    assert report["entity"]["state"] == "STOPPED"
    assert report["entity"]["terminal"] is True
    moves = [(t["seq"], t["event"], t["from_state"], t["to_state"]) for t in report["transitions"]]
    assert moves == [
        (1, "job_pending", "SUBMITTED", "PENDING"),
        (2, "job_running", "PENDING", "STARTING"),
        (3, "ping_ok", "STARTING", "HEALTHY"),
        (4, "ping_failed", "HEALTHY", "UNHEALTHY"),
        (5, "stop", "UNHEALTHY", "STOPPED"),
    ]
    assert report["transitions"][-1]["payload"] == {"why": "stop"}
    assert report["transitions"][0]["observed_at"].startswith("2026-01-01T00:00:")


def test_history_table_and_unknown_id(engine: Engine, clock: ManualClock, db_url: str) -> None:
    ids = populate(engine, clock)
    code, out, _ = run("history", ids["web"], "--db", db_url)
    assert code == 0
    assert "service svc-web is HEALTHY" in out
    assert re.search(
        r"^3\s+2026-01-01 00:00:\d\d\s+ping_ok\s+STARTING\s+HEALTHY\s+user$", out, re.M
    )
    code, out, err = run("history", "nobody", "--db", db_url)
    assert code == 1
    assert out == ""
    assert err.strip() == "fsm: error: no entity with id 'nobody'"


def test_verify_json_clean(engine: Engine, clock: ManualClock, db_url: str) -> None:
    populate(engine, clock)
    code, out, _ = run("verify", "--db", db_url, "--json")
    assert code == 0
    assert json.loads(out) == {"ok": True, "entities": 3, "violations": []}
    code, out, _ = run("verify", "--db", db_url)
    assert code == 0 and "verified 3 entities: no violations" in out


def test_verify_reports_a_tampered_head(engine: Engine, clock: ManualClock, db_url: str) -> None:
    ids = populate(engine, clock)
    with engine.store.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE entity SET state = 'PENDING' WHERE id = 'svc-web'")
    code, out, _ = run("verify", "--db", db_url, "--json")
    assert code == 1
    report = json.loads(out)
    assert report["ok"] is False
    assert {(v["entity_id"], v["kind"]) for v in report["violations"]} == {(ids["web"], "head")}
    code, out, _ = run("verify", "--db", db_url)
    assert code == 1 and "1 violation(s) in 3 entities" in out


def test_status_json_and_filters(engine: Engine, clock: ManualClock, db_url: str) -> None:
    populate(engine, clock)
    code, out, _ = run("status", "--db", db_url, "--json")
    assert code == 0
    report = json.loads(out)
    assert report["total"] == 3
    assert [(r["lifecycle"], r["state"], r["count"], r["terminal"]) for r in report["counts"]] == [
        ("service", "HEALTHY", 1, False),
        ("service", "STOPPED", 1, True),
        ("host", "PROVISIONING", 1, False),
    ]
    code, out, _ = run("status", "--db", db_url, "--json", "-l", "service", "-s", "HEALTHY")
    assert code == 0
    assert json.loads(out) == {
        "total": 1,
        "counts": [{"lifecycle": "service", "state": "HEALTHY", "count": 1, "terminal": False}],
        "pending_releases": 0,
        "oldest_pending_releases": [],
        "profiles": [],  # by backend profile: only without filters, and only entities with one
    }
    code, out, _ = run("status", "--db", db_url)
    assert code == 0
    assert re.search(r"^service\s+STOPPED \(terminal\)\s+1$", out, re.M)
    assert out.splitlines()[-1] == "3 entities"


def test_status_of_an_empty_database(engine: Engine, db_url: str) -> None:
    code, out, _ = run("status", "--db", db_url)
    assert code == 0 and out.strip() == "no entities"


# -- demo --------------------------------------------------------------------------------------


def test_demo_runs_twice_and_ends_verified(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for _ in range(2):  # the second run deletes and recreates the demo database
        code, out, err = run("demo", "--scripted")
        assert code == 0, err
        assert "refused as expected" in out
        assert "demo-svc-slow: ping_failed: STARTING -> TIMEOUT" in out
        assert "service demo-svc-api is STOPPED (terminal)" in out
        assert re.search(r"verified \d+ entities: no violations", out)
        assert f"database: {tmp_path / 'fsm-demo.db'}" in out
    code, out, _ = run("verify", "--db", "sqlite:///fsm-demo.db", "--json")
    assert code == 0 and json.loads(out)["ok"] is True
    history = json.loads(
        run("history", "demo-svc-api", "--db", "sqlite:///fsm-demo.db", "--json")[1]
    )
    states = [t["to_state"] for t in history["transitions"]]
    assert states.count("UNHEALTHY") >= 2 and states[-1] == "STOPPED"  # it flapped, then stopped


def test_demo_will_not_delete_a_database_it_did_not_make(
    sqlite_url: str, clock: ManualClock
) -> None:
    other = Engine(sqlite_url, clock=clock)
    other.create("service", id="precious")
    other.close()
    code, _, err = run("demo", "--db", sqlite_url)
    assert code == 1
    assert "refusing to delete" in err and len(err.splitlines()) == 1
    reopened = Engine(sqlite_url, clock=clock, migrate=False)
    assert reopened.get("precious").state == "SUBMITTED"
    reopened.close()


@pytest.mark.slow
def test_demo_as_a_real_process(tmp_path: Path) -> None:
    result = run_process("demo", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "no violations" in result.stdout
    assert (tmp_path / "fsm-demo.db").exists()
