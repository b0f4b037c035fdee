"""`python -m backends.local.shim STATUS_FILE -- ARGV...`: runs ARGV and writes its exit code.

The backend starts services through this shim so that the exit code survives the engine: a
restarted engine is not the parent of the service and could not learn it otherwise. The shim
ignores SIGTERM itself (the service, in the same process group, gets it) and records the code.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--":
        print("usage: python -m backends.local.shim STATUS_FILE -- ARGV...", file=sys.stderr)
        return 2
    status = Path(argv[0])
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        child = subprocess.Popen(argv[2:])
    except OSError as exc:
        print(f"cannot start {argv[2]!r}: {exc}", file=sys.stderr)
        code = 127
    else:
        code = child.wait()
    partial = status.with_suffix(".partial")
    partial.write_text(str(code))
    os.replace(partial, status)  # readers never see a half-written code
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
