"""The fake VM's command runner: a Run Command's script run by a real bash, in a sandbox.

Each VM gets its own scratch directory (its home, cwd and TMPDIR); the script runs as a file
with `bash`, the run command's parameters as environment variables (as the Linux agent hands
them over), a minimal environment, a time limit, and `sudo` as a shim that runs its command
(the sandbox has no other user to become). So sudo-free scripts — and scripts whose sudo only
runs what the sandbox may run — behave as on a VM; absolute paths outside the scratch
directory are this machine's (no chroot: the tests keep their scripts inside it). `mount -t
cifs //ACCOUNT.file.core.windows.net/SHARE DIR` links DIR to the fake Azure Files share
`<share root>/ACCOUNT/SHARE` (what the tests' file share service writes to), so mlos_bench's
boot scripts find the files its local environments uploaded.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

_SUDO = """#!/bin/sh
# fake-arm sandbox: there is no other user; run the command as this one
while [ $# -gt 0 ]; do
    case "$1" in
        -E|-H|-n|-S|--preserve-env|--preserve-env=*) shift ;;
        -u) shift 2 ;;
        --) shift; break ;;
        *) break ;;
    esac
done
exec "$@"
"""
_MOUNT = """#!/bin/sh
# fake-arm sandbox: an Azure Files (cifs) mount is a link to the fake share's directory
if [ "$1" = "-t" ] && [ "$2" = "cifs" ]; then
    host=${3#//}
    account=${host%%.file.core.windows.net/*}
    name=${host#*.file.core.windows.net/}
    share=""
    if [ "$account" != "$host" ] && [ -n "$name" ]; then share="$account/$name"; fi
    [ -n "$share" ] || { echo "mount: unknown share $3" >&2; exit 32; }
    mkdir -p "$SHARE_ROOT/$share"
    rmdir "$4" 2>/dev/null || true
    ln -sfn "$SHARE_ROOT/$share" "$4"
    exit 0
fi
echo "mount: only cifs shares can be mounted in the fake VM" >&2
exit 32
"""


def sandbox(root: Path, vm: str) -> Path:
    """The VM's scratch directory, with its `bin/` shims (created on first use)."""
    home = root / vm.lower()
    (home / "bin").mkdir(parents=True, exist_ok=True)
    (home / "tmp").mkdir(exist_ok=True)
    for name, text in (("sudo", _SUDO), ("mount", _MOUNT)):
        shim = home / "bin" / name
        if not shim.exists():
            shim.write_text(text)
            shim.chmod(0o755)
    return home


def run_script(
    script: str, env: dict[str, str], *, home: Path, share_root: Path, timeout: float = 60.0
) -> tuple[str, str, int]:
    """Run `script` with bash in `home`; (stdout, stderr, exit code)."""
    bash = shutil.which("bash") or "/bin/bash"
    path = home / "tmp" / f"script-{os.getpid()}-{id(script)}.sh"
    path.write_text(script + "\n")
    base = {
        "PATH": f"{home / 'bin'}:/usr/local/bin:/usr/bin:/bin",
        "HOME": str(home),
        "TMPDIR": str(home / "tmp"),
        "LANG": "C.UTF-8",
        "SHARE_ROOT": str(share_root),
    }
    try:
        done = subprocess.run(
            [bash, str(path)],
            env={**base, **env},
            cwd=home,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout if isinstance(exc.stdout, str) else ""
        return out, f"fake-arm: timed out after {timeout:g}s\n", 124
    finally:
        path.unlink(missing_ok=True)
    return done.stdout, done.stderr, done.returncode
