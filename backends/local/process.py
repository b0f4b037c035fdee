"""Local processes we started: identity that survives restarts, liveness, termination.

A pid alone is not an identity (pids are recycled), so we record the pid together with the
process's start time from /proc (clock ticks since boot) and only ever signal a process whose
start time still matches.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path
from typing import NamedTuple

PROC = Path("/proc")


class ProcessRef(NamedTuple):
    pid: int
    start_ticks: int


def start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks after boot, or None if it does not exist."""
    try:
        stat = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    # the command name (field 2) may contain spaces and parentheses: split after the last ')'
    fields = stat[stat.rfind(")") + 2 :].split()
    try:
        return int(fields[19])  # field 22 overall: starttime
    except (IndexError, ValueError):
        return None


def _state(pid: int) -> str | None:
    try:
        stat = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    rest = stat[stat.rfind(")") + 2 :]
    return rest[:1] or None


def identify(pid: int) -> ProcessRef | None:
    ticks = start_ticks(pid)
    return None if ticks is None else ProcessRef(pid, ticks)


def is_alive(ref: ProcessRef) -> bool:
    """True if `ref` still names the same, running (not zombie) process."""
    _reap(ref.pid)
    if start_ticks(ref.pid) != ref.start_ticks:
        return False
    return _state(ref.pid) not in (None, "Z", "X")


def _reap(pid: int) -> None:
    """Collect our own exited child, so it does not linger as a zombie."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def terminate(ref: ProcessRef, grace: float) -> bool:
    """SIGTERM the process group, SIGKILL it after `grace` seconds. True if it had to be killed.

    Only signals if the pid still names our process; its group is its session (we start every
    process with a new session), so children started by the service go too.
    """
    if not is_alive(ref):
        return False
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(ref.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not is_alive(ref):
            return False
        time.sleep(0.05)
    if is_alive(ref):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(ref.pid, signal.SIGKILL)
        for _ in range(100):
            if not is_alive(ref):
                break
            time.sleep(0.02)
        return True
    return False
