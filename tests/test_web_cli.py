"""`fsm serve` and `fsm diagram --db` from the command line: refusals are one line and
create nothing; a served database answers over HTTP; writes take their token from the
environment, never from argv."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from alembic import command as alembic_command

from fsm import Engine
from fsm.web.background import free_port
from storage.migrate import alembic_config
from tests.web_support import TOKEN, build

FSM = str(Path(sys.executable).with_name("fsm"))


def fsm(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [FSM, *args], capture_output=True, text=True, timeout=60, env={**os.environ, **(env or {})}
    )


def one_line_error(done: subprocess.CompletedProcess[str], code: int, *words: str) -> None:
    assert done.returncode == code, done
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fsm: error: "), done.stderr
    for word in words:
        assert word in lines[0]
    assert "Traceback" not in done.stderr


def test_refusals_are_one_line_and_create_nothing(tmp_path: Path) -> None:
    missing = tmp_path / "none.db"
    one_line_error(fsm("serve", "--db", f"sqlite:///{missing}"), 1)
    assert not missing.exists()
    url = f"sqlite:///{tmp_path}/fsm.db"
    build(url)
    no_token = fsm("serve", "--db", url, "--allow-writes", env={"FSM_API_TOKENS": ""})
    one_line_error(no_token, 2, "FSM_API_TOKENS")
    short = fsm("serve", "--db", url, "--allow-writes", env={"FSM_API_TOKENS": "ci:short"})
    one_line_error(short, 1, "at least 16")
    loose = tmp_path / "tokens"
    loose.write_text(f"ci:{TOKEN.secret.decode()}\n")
    loose.chmod(0o644)
    found = fsm("serve", "--db", url, "--allow-writes", "--token-file", str(loose))
    one_line_error(found, 1, "readable by others")
    assert TOKEN.secret.decode() not in found.stderr
    one_line_error(fsm("serve", "--db", url, "--token-file", str(loose)), 2, "--allow-writes")


def test_an_old_schema_is_refused_in_one_line(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/fsm.db"
    build(url)
    engine = Engine(url)
    config = alembic_config()
    with engine.store.engine.begin() as conn:
        config.attributes["connection"] = conn
        alembic_command.downgrade(config, "0002")
    engine.close()
    one_line_error(fsm("serve", "--db", url, "--port", str(free_port())), 1, "revision 0002")


@pytest.mark.slow
def test_a_served_database_answers_and_writes_need_the_token(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/fsm.db"
    build(url)
    port = free_port()
    env = {**os.environ, "FSM_API_TOKENS": f"{TOKEN.name}:{TOKEN.secret.decode()}"}
    proc = subprocess.Popen(
        [FSM, "serve", "--db", url, "--port", str(port), "--allow-writes"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/api/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline and proc.poll() is None, proc.stderr
            time.sleep(0.2)
        busy = fsm("serve", "--db", url, "--port", str(port))
        one_line_error(busy, 1, "in use")
        assert httpx.get(f"{base}/api/entities/svc-001").json()["entity"]["state"] == "PENDING"
        body = {"lifecycle": "host", "id": "h-api"}
        assert httpx.post(f"{base}/api/entities", json=body).status_code == 401
        auth = {"Authorization": f"Bearer {TOKEN.secret.decode()}"}
        assert httpx.post(f"{base}/api/entities", json=body, headers=auth).status_code == 201
        assert TOKEN.secret.decode() not in " ".join(proc.args)  # type: ignore[arg-type]
    finally:
        proc.terminate()
        _out, err = proc.communicate(timeout=20)
    assert "http://127.0.0.1" in err and "read-write" in err
    assert TOKEN.secret.decode() not in err


def test_diagram_with_db_draws_the_live_overlay(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/fsm.db"
    built = build(url)
    drawn = fsm("diagram", "service", "--db", url, "--since", "1h")
    assert drawn.returncode == 0, drawn.stderr
    pending = built.counts[("service", "PENDING")]
    assert re.search(rf'state "PENDING<br>[^"]*<br>{pending} entities" as PENDING', drawn.stdout)
    assert "job_pending \N{MULTIPLICATION SIGN}9" in drawn.stdout
    dot = fsm("diagram", "service", "--db", url, "--format", "dot")
    assert "job_running \N{MULTIPLICATION SIGN}6" in dot.stdout
    one_line_error(fsm("diagram", "service", "--db", url, "--since", "soon"), 2, "window")
    one_line_error(fsm("diagram", "service", "--since", "1h"), 2, "--db")


def test_the_demo_hook_serves_its_database_and_stops(tmp_path: Path) -> None:
    from rich.console import Console

    from fsm.live_demo import _web_view

    url = f"sqlite:///{tmp_path}/fsm.db"
    build(url)
    out = Console(record=True, width=200)
    view = _web_view(url, out)
    assert view is not None
    try:
        assert f"{view.address}/" in out.export_text()
        assert httpx.get(f"{view.address}/api/entities/svc-001").status_code == 200
    finally:
        view.stop()
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{view.address}/api/health", timeout=2)
