"""Helpers shared by the Slurm tests: a tiny HTTP server, ticking a worker until a state, and
finding out whether a real cluster / a real sshd is there (CI fails instead of skipping)."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from fsm import Engine
from fsm.worker import Worker
from tests.components import unavailable

SSHD_DIR = Path(os.environ.get("FSM_SSHD_DIR", "/tmp/fsm-sshd"))


class _Ok(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *_args: object) -> None:
        pass


@contextmanager
def http_server() -> Iterator[int]:
    """An HTTP server on 127.0.0.1 answering 200 to every GET; yields its port."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Ok)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


def tick_until(
    worker: Worker,
    engine: Engine,
    entity_id: str,
    states: Collection[str],
    timeout: float,
    every: float = 0.25,
) -> str:
    """Run worker ticks until the entity is in one of `states`; fail with its history if not."""
    deadline = time.monotonic() + timeout
    while True:
        worker.tick()
        state = engine.get(entity_id).state
        if state in states:
            return state
        if time.monotonic() >= deadline:
            path = " -> ".join(f"{t.to_state}({t.event})" for t in engine.history(entity_id))
            pytest.fail(f"{entity_id} is {state} after {timeout}s, wanted {states}; {path}")
        time.sleep(every)


def cluster_problem() -> str | None:
    """Why the real Slurm cluster cannot be used here, or None when it answers."""
    if shutil.which("sinfo") is None:
        return (
            "Slurm is not installed (no sinfo): "
            "apt-get install slurm-wlm munge, then run scripts/slurm-up.sh"
        )
    try:
        done = subprocess.run(
            ["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=20, check=False
        )
    except subprocess.TimeoutExpired:
        return "sinfo did not answer in 20 s"
    states = done.stdout.split()
    usable = any(s.rstrip("*~#") in ("idle", "mixed", "allocated", "completing") for s in states)
    if done.returncode != 0 or not usable:
        said = done.stdout.strip() or done.stderr.strip()
        return f"no usable Slurm node (sinfo: {said}); run scripts/slurm-up.sh"
    return None


def settled_cluster_problem(timeout: float = 90) -> str | None:
    """`cluster_problem`, waited out for up to `timeout` s while the cluster is installed: a
    node reads "unknown" for a while after its controller restarted (another test module's
    slurm.conf knobs) until its slurmd registers again, and that is not a missing cluster. No
    controller running at all is answered at once."""
    from tests.slurm_controller import controller_pids  # it imports this module

    deadline = time.monotonic() + timeout
    while (problem := cluster_problem()) is not None and controller_pids():
        if time.monotonic() >= deadline:
            return f"{problem} (still after {timeout:.0f} s)"
        time.sleep(1)
    return problem


def require(problem: str | None) -> None:
    """Skip (on a machine without the component) or fail (in CI) when it is missing."""
    if problem is not None:
        unavailable(problem)


def sshd_settings() -> dict[str, str] | None:
    """The settings scripts/sshd-up.sh wrote, or None."""
    env = SSHD_DIR / "env"
    if not env.exists():
        return None
    pairs = (line.split("=", 1) for line in env.read_text().splitlines() if "=" in line)
    return {k.strip(): v.strip() for k, v in pairs}
