"""Driving the real cluster of scripts/slurm-up.sh from tests: a rig (engine + worker + backend
with fast refreshes), slurm.conf knobs changed for one test and restored, the controller
killed and brought back, a second Unix user's jobs, and each scenario's recorded state path."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from backends.slurm import LocalTransport, SlurmBackend, submit_service
from fsm import Engine
from fsm.verify import verify_store
from fsm.worker import Worker, WorkerSettings
from tests.slurm_controller import require_controller, start_controller, stop_controller
from tests.slurm_support import tick_until

CONF = Path("/etc/slurm/slurm.conf")
OUTPUT = Path("/tmp/fsm-slurm-tests")
PATHS = OUTPUT / "state-paths.json"
STRANGER = "fsm-stranger"
HTTP = ["python3", "-m", "http.server", "{port}", "--bind", "127.0.0.1"]


def run(argv: list[str], timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)


class Rig:
    """Engine on a SQLite file + a worker driving the real cluster, with fast refreshes."""

    def __init__(self, folder: Path, *, timeout: float = 6.0) -> None:
        self.engine = Engine(f"sqlite:///{folder}/fsm.db", refresh_scale=0.05)
        self.backend = SlurmBackend(
            LocalTransport(timeout=timeout),
            health_path="/",
            health_timeout=1.0,
            key_file=str(folder / "keys" / "tag.key"),
            observe_timeout=8.0,
            release_timeout=10.0,
        )
        self.worker = Worker(
            self.engine,
            [self.backend],
            settings=WorkerSettings(max_backoff=1.0, max_release_backoff=2.0),
        )

    def start(
        self, command: list[str], *, data: Mapping[str, object] | None = None, **job: object
    ) -> str:
        job_options = {"job_name": "fsm-scn", "output": f"{OUTPUT}/%j.out", **job}
        box = {"command": command, "workdir": str(OUTPUT)}
        return submit_service(self.engine, self.worker, self.backend, job_options, box, data=data)

    def job(self, entity_id: str) -> str:
        return str(self.engine.get(entity_id).data["job_id"])

    def until(self, entity_id: str, *states: str, timeout: float = 60) -> str:
        return tick_until(self.worker, self.engine, entity_id, states, timeout)

    def path(self, entity_id: str) -> list[str]:
        return [t.to_state for t in self.engine.history(entity_id)]

    def verify(self) -> None:
        violations = verify_store(self.engine.store, self.engine.lifecycles)
        assert violations == [], [str(v) for v in violations]

    def record(self, scenario: str, entity_id: str) -> None:
        """Keep the scenario's state path (history) for the report, and print it."""
        path = " -> ".join(f"{t.to_state}({t.event})" for t in self.engine.history(entity_id))
        print(f"\n{scenario}: {path}")
        found = json.loads(PATHS.read_text()) if PATHS.exists() else {}
        found[scenario] = path
        PATHS.write_text(json.dumps(found, indent=2))

    def close(self) -> None:
        for entity in self.engine.list_entities():
            if "job_id" in entity.data:
                run(["scancel", str(entity.data["job_id"])])
        self.backend.close()
        self.engine.close()


def slurm_state(job: str) -> str:
    done = run(["squeue", "-h", "-t", "all", "-j", job, "-o", "%T"])
    return done.stdout.strip() or "GONE"


def wait_slurm(job: str, states: set[str], timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while (state := slurm_state(job)) not in states and time.monotonic() < deadline:
        time.sleep(0.25)
    return state


def kill_controller(sig: int = signal.SIGKILL) -> None:
    """Stop the running controller (an outage), as root; see tests/slurm_controller.py."""
    require_controller()
    stop_controller(sig)


@contextmanager
def knobs(**values: object) -> Iterator[None]:
    """slurm.conf with `values` set (the controller restarted), restored afterwards."""
    require_controller()
    original = CONF.read_text()
    kept = [line for line in original.splitlines() if line.split("=", 1)[0] not in values]
    CONF.write_text("\n".join([*kept, *(f"{k}={v}" for k, v in values.items())]) + "\n")
    try:
        stop_controller(signal.SIGTERM)
        start_controller()
        yield
    finally:  # whatever state the test left the controller in, it comes back on the old file
        CONF.write_text(original)
        stop_controller(signal.SIGTERM)
        start_controller()


def stranger_job(seconds: int = 120) -> str:
    """A job of another Unix user (scripts/slurm-up.sh creates it); its id."""
    argv = ["runuser", "-u", STRANGER, "--", "sbatch", "--parsable", "--job-name=theirs"]
    argv += ["--output=/dev/null", "--chdir=/tmp", f"--wrap=sleep {seconds}"]
    done = run(argv)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().split(";")[0]
