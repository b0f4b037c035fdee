"""Supervision with real parts: a real local process that crashes twice and then stays up, kept
HEALTHY by `fsm run` and driven from the CLI; and a real `fsm run` worker SIGKILLed 20 times
at random moments, which must launch exactly the attempts an unkilled run launches."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import pytest

from backends.sim import SimBackend
from fsm import Engine, ManualClock
from fsm.supervisor import Supervisor
from fsm.worker import Worker
from tests.local_support import alive
from tests.supervision_support import tick

ROOT = Path(__file__).resolve().parent.parent

#: crashes on its first two starts (counted in a file), then serves /health on $PORT
FLAKY_SERVICE = """
import os, sys, time
from http.server import BaseHTTPRequestHandler, HTTPServer
count_file = sys.argv[1]
starts = int(open(count_file).read()) + 1 if os.path.exists(count_file) else 1
open(count_file, "w").write(str(starts))
if starts <= 2:
    time.sleep(0.5)
    sys.exit(1)
class Health(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.end_headers(); self.wfile.write(b"ok")
    def log_message(self, *args):
        pass
HTTPServer(("127.0.0.1", int(os.environ["PORT"])), Health).serve_forever()
"""


def fsm(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fsm.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        check=False,
    )


def worker_process(config: Path, db: str, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "fsm.cli", "run", "--config", str(config), "--db", db, *extra],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )


def wait_for(check, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.slow
def test_a_local_process_that_crashes_twice_is_kept_healthy(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path}/fsm.db"
    script = tmp_path / "flaky.py"
    script.write_text(FLAKY_SERVICE)
    process = {"argv": [sys.executable, str(script), str(tmp_path / "starts")]}
    process["health"] = {"http": "/"}  # type: ignore[assignment]
    spec = {
        "id": "web",
        "service": {"submit": {"process": process}},
        "policy": {"max_restarts": 3, "backoff": {"initial": 0.5, "max": 2}, "grace": 1},
    }
    (tmp_path / "web.json").write_text(json.dumps(spec))
    config = tmp_path / "run.yaml"
    state_dir = tmp_path / "procs"
    config.write_text(
        f"interval: 0.2\nrefresh_scale: 0.1\nbackends:\n"
        f"  - {{kind: local, state_dir: '{state_dir}', grace: 2}}\n"
    )
    started = fsm("supervise", "start", str(tmp_path / "web.json"), "--db", db)
    assert started.returncode == 0, started.stderr
    worker = worker_process(config, db, "--exit-when-idle")
    try:
        engine = Engine.open_existing(db)
        sup = Supervisor(engine, "web")
        wait_for(lambda: sup.state == "RUNNING", 90, "the third attempt to count as started")
        attempts = sup.attempts()
        assert [a.entity.state for a in attempts] == ["FAILED", "FAILED", "HEALTHY"]
        host, port = sup.ensure_healthy(10)
        with urllib.request.urlopen(f"http://{host}:{port}/", timeout=5) as answer:
            assert answer.status == 200
        ended = [t.payload for t in engine.history("web") if t.event == "attempt_ended"]
        assert [(p["attempt"], p["ended"], p["by"]) for p in ended] == [
            (1, "FAILED", "job_failed"),
            (2, "FAILED", "job_failed"),
        ]
        status = fsm("status", "--db", db, "--json")
        [row] = json.loads(status.stdout)["supervisors"]
        assert (row["id"], row["attempts"], row["current"]) == ("web", 3, "web-a3")
        pid = attempts[-1].entity.data["pid"]
        assert alive(pid)
        stopped = fsm("stop", "web", "--db", db)
        assert stopped.returncode == 0, stopped.stderr
        assert worker.wait(timeout=60) == 0, worker.stderr.read() if worker.stderr else ""
        assert sup.state == "STOPPED"
        assert [a.entity.state for a in sup.attempts()] == ["FAILED", "FAILED", "STOPPED"]
        assert not alive(pid)
        shown = fsm("supervise", "show", "web", "--db", db)
        assert "attempt 2 ended FAILED by job_failed" in shown.stdout
        assert engine.verify() == []
        engine.close()
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()


SIM = {"kind": "sim", "seed": 5, "time_scale": 0.3, "fates": ["fails"]}
POLICY = {"max_restarts": 24, "window": None, "backoff": {"initial": 0.2, "max": 1}}
SUPERVISORS = 6
ATTEMPTS = list(range(1, 26))


def open_supervisors(engine: Engine) -> list[str]:
    return [e.id for e in engine.list_entities(lifecycle="supervisor") if not e.terminal]


def _launches(engine: Engine, sup_id: str) -> list[int]:
    return [t.payload["attempt"] for t in engine.history(sup_id) if t.event == "launch"]


def test_without_kills_each_supervisor_makes_exactly_its_budget_of_attempts(
    tmp_path: Path,
) -> None:
    """The baseline the SIGKILL test compares with: on a manual clock, every attempt fails and
    each supervisor gives up after 1 + max_restarts attempts."""
    clock = ManualClock()
    engine = Engine(f"sqlite:///{tmp_path}/base.db", clock=clock, refresh_scale=0.05)
    sim = SimBackend(**{k: v for k, v in SIM.items() if k != "kind"})  # type: ignore[arg-type]
    worker = Worker(engine, [sim])
    for i in range(SUPERVISORS):
        Supervisor.create(engine, {}, POLICY, id=f"sup{i}")
    while worker.open_work():
        tick(worker)
        clock.advance(0.25)
    for i in range(SUPERVISORS):
        assert Supervisor(engine, f"sup{i}").state == "GAVE_UP"
        assert _launches(engine, f"sup{i}") == ATTEMPTS
    engine.close()


@pytest.mark.slow
def test_twenty_sigkills_of_the_worker_neither_lose_nor_double_an_attempt(
    tmp_path: Path,
) -> None:
    db = f"sqlite:///{tmp_path}/fsm.db"
    config = tmp_path / "run.yaml"
    config.write_text(json.dumps({"interval": 0.05, "refresh_scale": 0.05, "backends": [SIM]}))
    engine = Engine(db)
    for i in range(SUPERVISORS):
        Supervisor.create(engine, {}, POLICY, id=f"sup{i}")
    rng = random.Random(20)
    kills = 0
    progress = []
    while kills < 20:
        began = datetime.now(UTC)
        worker = worker_process(config, db)
        try:
            # once it records its first transition it is at work: the kill falls somewhere
            # in what follows (a launch, a refresh, a submit)
            wait_for(lambda b=began: engine.store.transitions_since(b, 1), 60, "it to work")
            assert open_supervisors(engine), "all done before 20 kills: make the work longer"
            time.sleep(rng.uniform(0.0, 0.8))
            if worker.poll() is not None:
                raise AssertionError(worker.stderr.read() if worker.stderr else "it exited")
        finally:
            if worker.poll() is None:
                os.kill(worker.pid, signal.SIGKILL)
            worker.wait(timeout=30)
        kills += 1
        assert engine.verify() == []
        for i in range(SUPERVISORS):
            launches = _launches(engine, f"sup{i}")
            assert launches == list(range(1, len(launches) + 1))  # none doubled, none skipped
        progress.append(sum(len(_launches(engine, f"sup{i}")) for i in range(SUPERVISORS)))
    assert len(set(progress)) >= 5, progress  # the kills fell while it was launching
    worker = worker_process(config, db, "--exit-when-idle")
    try:
        assert worker.wait(timeout=120) == 0, worker.stderr.read() if worker.stderr else ""
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    for i in range(SUPERVISORS):
        sup = Supervisor(engine, f"sup{i}")
        assert sup.state == "GAVE_UP"
        assert _launches(engine, sup.id) == ATTEMPTS
        assert [a.number for a in sup.attempts()] == ATTEMPTS
        assert all(a.entity.state == "FAILED" for a in sup.attempts())
    assert engine.verify() == []
    engine.close()


def _readme_section() -> str:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    return readme.split("## Supervision: services kept running", 1)[1].split("\n## ", 1)[0]


def test_the_readme_shows_the_current_supervisor_diagram() -> None:
    embedded = _readme_section().split("```mermaid\n", 1)[1].split("```", 1)[0]
    assert embedded == (ROOT / "diagrams" / "supervisor.mmd").read_text(encoding="utf-8")


@pytest.mark.slow
def test_the_readme_example_runs(tmp_path: Path) -> None:
    code = _readme_section().split("```python\n", 1)[1].split("```", 1)[0]
    assert len(code.strip().splitlines()) <= 16
    (tmp_path / "example.py").write_text(code)
    done = subprocess.run(
        [sys.executable, "example.py"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env={**os.environ, "HOME": str(tmp_path), "PYTHONPATH": str(ROOT)},
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "answers, attempt 1" in done.stdout
    engine = Engine.open_existing(f"sqlite:///{tmp_path}/fsm.db")
    assert Supervisor(engine, "web").state == "STOPPED"
    assert engine.get("web-a1").state == "STOPPED"
    engine.close()
