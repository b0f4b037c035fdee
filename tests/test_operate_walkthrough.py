"""The README's "Run your own service" walk-through, parsed out of README.md and run verbatim
(so the README cannot drift): on SQLite and on PostgreSQL, a local and a simulated profile
side by side, a guard from the run config, a real `fsm run` worker in the background."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
SECTION = "## Run your own service"


def walkthrough() -> tuple[dict[str, str], list[list[str]]]:
    """The files the section writes (blocks whose first line is `# NAME`) and its commands."""
    text = README.read_text(encoding="utf-8")
    start = text.index(SECTION)
    end = text.find("\n## ", start + len(SECTION))
    body = text[start : end if end != -1 else len(text)]
    files: dict[str, str] = {}
    commands: list[list[str]] = []
    for lang, block in re.findall(r"^```(\w+)\n(.*?)^```$", body, re.S | re.M):
        first = block.splitlines()[0]
        if lang == "sh":
            commands += [shlex.split(line, comments=True) for line in block.splitlines()]
        elif re.fullmatch(r"# [\w.-]+", first):
            files[first[2:]] = block
    return files, [c for c in commands if c]


def fsm_script() -> str:
    return str(Path(sys.executable).with_name("fsm"))


def _web_processes(folder: Path) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
            cwd = os.readlink(proc / "cwd")
        except OSError:
            continue
        if b"web.py" in cmdline and Path(cwd) == folder:
            found.append(int(proc.name))
    return found


def run_walkthrough(folder: Path, fsm_db: str | None) -> dict[str, Any]:
    files, commands = walkthrough()
    for name, content in files.items():
        (folder / name).write_text(content, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k not in ("FSM_DB", "FSM_CONFIG")}
    if fsm_db is not None:
        env["FSM_DB"] = fsm_db
    outputs: list[tuple[str, str]] = []
    background: list[subprocess.Popen[str]] = []
    try:
        for command in commands:
            assert command[0] == "fsm", command
            argv = [fsm_script(), *command[1:]]
            if argv[-1] == "&":
                background.append(
                    subprocess.Popen(
                        argv[:-1],
                        cwd=folder,
                        env=env,
                        text=True,
                        stdout=subprocess.PIPE,
                        stderr=subprocess.STDOUT,
                    )
                )
                continue
            done = subprocess.run(
                argv, cwd=folder, env=env, capture_output=True, text=True, timeout=120, check=False
            )
            shown = f"{shlex.join(command)}\nstdout: {done.stdout}\nstderr: {done.stderr}"
            assert done.returncode == 0, shown
            assert "Traceback" not in done.stdout + done.stderr, shown
            outputs.append((shlex.join(command), done.stdout))
        for worker in background:
            out, _ = worker.communicate(timeout=90)  # --exit-when-idle: nothing is left to do
            assert worker.returncode == 0, out
    finally:
        for worker in background:
            if worker.poll() is None:
                worker.kill()
                worker.wait()

    def read(*args: str) -> Any:
        done = subprocess.run(
            [fsm_script(), *args, "--json"],
            cwd=folder,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return json.loads(done.stdout)

    return {
        "outputs": outputs,
        "web": read("history", "web"),
        "sim": read("history", "sim-1"),
        "rollout": read("history", "r1"),
        "status": read("status"),
        "verify": read("verify"),
        "commands": read("commands"),
    }


def check(result: dict[str, Any], folder: Path) -> None:
    web, sim, rollout = result["web"], result["sim"], result["rollout"]
    assert (web["entity"]["profile"], web["entity"]["state"]) == ("laptop", "STOPPED")
    events = [t["event"] for t in web["transitions"]]
    assert events[0] == "job_running" and events[-1] == "stop", events
    assert web["transitions"][0]["source"] == "user"  # fsm submit: the backend started it
    observed = {t["source"] for t in web["transitions"] + sim["transitions"]} - {"user"}
    assert observed <= {"local", "sim"} and "sim" in observed  # each profile's own backend
    assert (sim["entity"]["profile"], sim["entity"]["state"]) == ("simulated", "STOPPED")
    assert [t["event"] for t in rollout["transitions"]] == ["start", "finish"]
    assert rollout["transitions"][1]["payload"] == {"approved_by": "ann"}
    finish = [out for line, out in result["outputs"] if line.startswith("fsm command r1 finish")]
    assert finish[0] == "r1: finish held by approved: nothing recorded, still ROLLING\n"
    assert finish[1] == "r1: finish: ROLLING -> DONE (transition 2, version 3)\n"
    assert {(p["profile"], p["lifecycle"], p["count"]) for p in result["status"]["profiles"]} == {
        ("laptop", "service", 1),
        ("simulated", "service", 1),
    }
    assert result["verify"] == {"ok": True, "entities": 3, "violations": []}
    assert [(c["command"], c["outcome"]) for c in result["commands"]] == [("stop", "cancelled")]
    assert _web_processes(folder) == []  # `fsm stop` returned once the process was gone


def test_walkthrough_on_sqlite(tmp_path: Path) -> None:
    check(run_walkthrough(tmp_path, None), tmp_path)
    assert (tmp_path / "fsm.db").exists()


@pytest.mark.postgres
def test_walkthrough_on_postgres(tmp_path: Path, pg_url: str) -> None:
    check(run_walkthrough(tmp_path, pg_url), tmp_path)
    assert not (tmp_path / "fsm.db").exists()


def test_the_walkthrough_is_what_this_test_runs() -> None:
    files, commands = walkthrough()
    assert set(files) == {"rollout.yaml", "rules.py", "web.py", "web.yaml", "run.yaml"}
    verbs = [c[1] for c in commands]
    for verb in ("create", "submit", "run", "watch", "stop", "history", "verify", "cancel"):
        assert verb in verbs, verb
    assert any("--backend" in c and "laptop" in c for c in commands)
    assert any("--backend" in c and "simulated" in c for c in commands)
    assert ["fsm", "watch", "--for", "8"] in commands  # bounded
