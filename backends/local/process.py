"""Local processes we started: proof that a process is ours, liveness, termination.

Nothing named by entity data is ever signalled. A process is ours only if all of these hold:

- the backend's own record (in its private state directory) names its pid and start time, so a
  recycled pid (another start time) is never mistaken for ours;
- its environment, read from /proc/PID/environ (readable only by its owner and root), carries
  the per-entity secret nonce we started it with, which the record alone knows;
- for a member of the service's process group: its group is the one our shim leads.

The shim starts each service in a session of its own, so its pid is the group's id; the group
cannot be re-created by a stranger while any of its members lives (Linux does not hand out a pid
that is still in use as a group id).
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import NamedTuple

PROC = Path("/proc")
NONCE_VAR = "FSM_LOCAL_NONCE"
_GONE_STATES = ("Z", "X")  # zombie / dead: nothing left to signal


class ProcessRef(NamedTuple):
    """Our shim as the backend's record names it."""

    pid: int
    start_ticks: int
    nonce: str


class _Stat(NamedTuple):
    state: str
    pgrp: int
    start_ticks: int


def _stat(pid: int) -> _Stat | None:
    try:
        text = (PROC / str(pid) / "stat").read_text()
    except (OSError, ValueError):
        return None
    # the command name (field 2) may contain spaces and parentheses: split after the last ')'
    fields = text[text.rfind(")") + 2 :].split()
    try:
        return _Stat(fields[0], int(fields[2]), int(fields[19]))  # fields 3, 5 and 22 overall
    except (IndexError, ValueError):
        return None


def start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks after boot, or None if it does not exist."""
    stat = _stat(pid)
    return None if stat is None else stat.start_ticks


def _has_nonce(pid: int, nonce: str) -> bool:
    """True if the process was started with our nonce (fails closed: unreadable is not ours)."""
    if not nonce:
        return False
    try:
        environ = (PROC / str(pid) / "environ").read_bytes()
    except OSError:
        return False
    return f"{NONCE_VAR}={nonce}".encode() in environ.split(b"\0")


@cache
def boot_id() -> str:
    """This boot of this machine: pids and start times mean nothing across a reboot."""
    try:
        return (PROC / "sys" / "kernel" / "random" / "boot_id").read_text().strip()
    except OSError:
        return ""


def _reap(pid: int) -> None:
    """Collect our own exited child, so it does not linger as a zombie."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def leader_alive(ref: ProcessRef) -> bool:
    """True if `ref`'s pid still names our shim: same start time, our nonce, running."""
    if ref.pid <= 1:
        return False
    _reap(ref.pid)
    stat = _stat(ref.pid)
    if stat is None or stat.start_ticks != ref.start_ticks or stat.state in _GONE_STATES:
        return False
    return stat.pgrp == ref.pid and _has_nonce(ref.pid, ref.nonce)


def _all_pids() -> Iterator[int]:
    try:
        names = os.listdir(PROC)
    except OSError:
        return
    for name in names:
        if name.isdigit():
            yield int(name)


def members(ref: ProcessRef) -> list[int]:
    """Live processes of our group that carry our nonce (the shim included, if it lives)."""
    found = []
    for pid in _all_pids():
        stat = _stat(pid)
        if stat is None or stat.pgrp != ref.pid or stat.state in _GONE_STATES:
            continue
        if _has_nonce(pid, ref.nonce):
            found.append(pid)
    return found


def find_by_nonce(nonce: str) -> ProcessRef | None:
    """Our shim, found by its nonce alone (a submit that crashed before recording the pid)."""
    for pid in _all_pids():
        stat = _stat(pid)
        if stat is None or stat.pgrp != pid or stat.state in _GONE_STATES:
            continue
        if _has_nonce(pid, nonce):
            return ProcessRef(pid, stat.start_ticks, nonce)
    return None


def _signal(ref: ProcessRef, sig: signal.Signals) -> None:
    """Signal what is provably ours: the whole group while our shim leads it, else each member
    that still carries our nonce (through a pidfd, so a pid recycled meanwhile is not hit)."""
    if leader_alive(ref):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(ref.pid, sig)
        return
    for pid in members(ref):
        try:
            fd = os.pidfd_open(pid)
        except OSError:
            continue
        try:
            stat = _stat(pid)  # checked after the pidfd exists: it names this very process
            if stat is not None and stat.pgrp == ref.pid and _has_nonce(pid, ref.nonce):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    signal.pidfd_send_signal(fd, sig)
        finally:
            os.close(fd)


def remains(ref: ProcessRef) -> bool:
    """True while anything provably ours is left (the shim, or members of its group)."""
    return leader_alive(ref) or bool(members(ref))


def _wait_gone(ref: ProcessRef, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while True:
        if not remains(ref):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


class StillRunning(Exception):
    """Our processes survived SIGKILL (e.g. stuck in the kernel): not confirmed gone."""


KILL_WAIT = 2.0  # seconds a SIGKILLed group may take to be gone before it counts as stuck


def terminate(ref: ProcessRef, grace: float, kill_wait: float = KILL_WAIT) -> bool:
    """SIGTERM our group, SIGKILL what is left after `grace` seconds; True if it had to kill.

    Returns only once nothing of ours is left; raises `StillRunning` otherwise."""
    if not remains(ref):
        return False
    _signal(ref, signal.SIGTERM)
    if _wait_gone(ref, grace):
        return False
    _signal(ref, signal.SIGKILL)
    if not _wait_gone(ref, kill_wait):
        raise StillRunning(f"process group {ref.pid} survived SIGKILL for {kill_wait:g} s")
    return True
