"""Helpers of the local backend's tests: real processes, looked at through /proc."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from backends.base import CommandFailed
from backends.local import LocalProcessBackend
from fsm import Engine
from fsm.worker import Worker


def alive(pid: int) -> bool:
    """The process runs (and is not a zombie waiting to be collected)."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return text[text.rfind(")") + 2] not in "ZX"


@contextlib.contextmanager
def local_rig(tmp_path: Path) -> Iterator[tuple[Engine, Worker, LocalProcessBackend]]:
    """An engine, a local backend and a worker; whatever is still running is ended after."""
    engine = Engine(f"sqlite:///{tmp_path}/local.db", refresh_scale=0.05)
    backend = LocalProcessBackend(tmp_path / "procs", grace=2.0)
    worker = Worker(engine, [backend])
    try:
        yield engine, worker, backend
    finally:
        for entity in engine.list_entities():
            with contextlib.suppress(CommandFailed):
                backend.release(entity, engine.clock())
        backend.close()
        engine.close()
