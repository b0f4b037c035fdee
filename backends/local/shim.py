"""`python -I shim.py --dir-fd N --status NAME -- ARGV...`: runs ARGV and records its exit code.

The backend starts services through this shim so that the exit code survives the engine: a
restarted engine is not the parent of the service and could not learn it otherwise. The shim
outlives SIGTERM itself (the service, in the same process group, gets it; a handler rather than
SIG_IGN, so the service does not inherit "ignore SIGTERM") and then records the code.

It writes only inside the state directory it inherited as a descriptor (never a path resolved
again), into a fresh file (`O_EXCL | O_NOFOLLOW`) renamed into place. Standard library only: it
runs with `-I`, so nothing from the service's working directory is imported.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from types import FrameType

_USAGE = "usage: shim.py --dir-fd N --status NAME -- ARGV..."


def _outlive(signum: int, frame: FrameType | None) -> None:
    return None


def write_status(dir_fd: int, name: str, code: int) -> None:
    partial = f".{name}.partial"
    with contextlib.suppress(FileNotFoundError):  # a stale one, or a planted link (not its target)
        os.unlink(partial, dir_fd=dir_fd)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(partial, flags, 0o600, dir_fd=dir_fd)
    try:
        os.write(fd, str(code).encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(partial, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)  # never half-written


def main(argv: list[str]) -> int:
    if len(argv) < 6 or argv[0] != "--dir-fd" or argv[2] != "--status" or argv[4] != "--":
        print(_USAGE, file=sys.stderr)
        return 2
    try:
        dir_fd = int(argv[1])
    except ValueError:
        print(_USAGE, file=sys.stderr)
        return 2
    name = argv[3]
    if not name or "/" in name or name.startswith("."):
        print(f"bad status file name {name!r}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _outlive)
    try:
        child = subprocess.Popen(argv[5:])
    except OSError as exc:
        print(f"cannot start {argv[5]!r}: {exc}", file=sys.stderr)
        code = 127
    else:
        code = child.wait()
    try:
        write_status(dir_fd, name, code)
    except OSError as exc:
        print(f"cannot record the exit code {code}: {exc}", file=sys.stderr)
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
