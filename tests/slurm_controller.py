"""The real cluster's slurmctld, stopped and brought back by tests.

Controllers are found in /proc rather than by the pid file, and stopping waits until no
slurmctld is left however long its shutdown takes (SIGKILL after a bound). The earlier helpers
waited 20 s on the pid file: a start while the old controller was still shutting down could find
it "running", start nothing, and leave the test on a controller that then exited (the likeliest
reading of a CI run whose controller was gone right after a restart). Starting waits until the
controller answers and still answers a second later, and starts it again if it died meanwhile;
a failure shows the tail of slurmctld's log."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from tests.slurm_support import cluster_problem, require

LOG = Path("/var/log/slurm/slurmctld.log")


def _binary() -> str:
    return shutil.which("slurmctld") or "/usr/sbin/slurmctld"


def controller_pids() -> list[int]:
    """Every live slurmctld process on this machine (zombies excluded)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "comm").read_text().strip() != "slurmctld":
                continue
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state != "Z":
            found.append(int(entry.name))
    return sorted(found)


def log_tail(lines: int = 15) -> str:
    try:
        return "\n".join(LOG.read_text(errors="replace").splitlines()[-lines:])
    except OSError as error:
        return f"(no slurmctld log: {error})"


def require_controller() -> list[int]:
    """The running controllers, or skip/fail (CI) when this process cannot restart them."""
    pids = controller_pids()
    if not pids or os.geteuid() != 0 or not Path(_binary()).exists():
        require("these tests restart the slurmctld that scripts/slurm-up.sh started (as root)")
    return pids


def _signal_all(sig: int) -> None:
    for pid in controller_pids():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def _gone_within(timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while controller_pids():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def stop_controller(sig: int = signal.SIGTERM, timeout: float = 30) -> None:
    """Send `sig` to every slurmctld and wait until none is left (SIGKILL after `timeout`)."""
    _signal_all(sig)
    if _gone_within(timeout):
        return
    _signal_all(signal.SIGKILL)  # still shutting down after `timeout`: no second controller
    assert _gone_within(10), f"slurmctld would not stop:\n{log_tail()}"


def _answers() -> bool:
    try:
        ping = subprocess.run(
            ["scontrol", "ping"], capture_output=True, text=True, timeout=10, check=False
        )
        queue = subprocess.run(["squeue", "-h"], capture_output=True, timeout=10, check=False)
    except subprocess.TimeoutExpired:
        return False
    return "UP" in ping.stdout and queue.returncode == 0 and cluster_problem() is None


def start_controller(timeout: float = 90) -> None:
    """Start slurmctld unless one runs; return once it (and its node) answer, steadily."""
    deadline = time.monotonic() + timeout
    while True:
        if not controller_pids():
            subprocess.run([_binary()], capture_output=True, timeout=30, check=False)
        if _answers():
            time.sleep(1)
            if controller_pids() and _answers():
                return
        assert time.monotonic() < deadline, f"slurmctld did not come back:\n{log_tail()}"
        time.sleep(0.25)
