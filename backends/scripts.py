"""A user's script run as a script: one file, run by a shell, values in its environment.

mlos_bench's scripts are shell code (pipes, redirects, `$VAR`, `${VAR:-x}`, backticks), so they
are written to a private file (created exclusively, mode 0600, never through a symlink) and
run with `bash` or the configured shell as `[shell, file]`. The values a caller passes become
environment variables: nothing is interpolated into the script's text, so no value can turn
into code. The process runs in its own session; on timeout the whole group is killed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

#: output kept per stream; the rest is cut (the database is no log store)
MAX_OUTPUT = 64 * 1024


@dataclass(frozen=True)
class ScriptRun:
    stdout: str
    stderr: str
    exit_code: int | None  # None: timed out and killed
    started: datetime
    ended: datetime

    @property
    def execution_state(self) -> str:
        """Azure Run Command's words for how it ended."""
        if self.exit_code is None:
            return "TimedOut"
        return "Succeeded" if self.exit_code == 0 else "Failed"

    def to_data(self) -> dict[str, Any]:
        return {
            "stdout": self.stdout,
            "stderr": self.stderr,
            "exit_code": self.exit_code,
            "execution_state": self.execution_state,
            "start_time": self.started.isoformat(),
            "end_time": self.ended.isoformat(),
        }


def resolve_shell(shell: str) -> str:
    """The shell's absolute path; ValueError if it is not an executable (no arguments)."""
    if not isinstance(shell, str) or not shell or any(c.isspace() for c in shell):
        raise ValueError(f"the shell must be one program path or name, got {shell!r}")
    found = shell if os.path.isabs(shell) else shutil.which(shell)
    if found is None or not os.access(found, os.X_OK):
        raise ValueError(f"shell {shell!r} not found or not executable")
    return found


def environment(values: Mapping[str, Any], base: Mapping[str, str] | None = None) -> dict[str, str]:
    """`base` (default: this process's environment) plus the values, as strings."""
    env = dict(os.environ if base is None else base)
    for key, value in values.items():
        name = str(key)
        if not name or "=" in name or "\0" in name:
            raise ValueError(f"not an environment variable name: {name!r}")
        text = "" if value is None else str(value)
        if "\0" in text:
            raise ValueError(f"the value of {name} contains a NUL byte")
        env[name] = text
    return env


def run_script(
    lines: Sequence[str],
    env: Mapping[str, str],
    *,
    shell: str = "bash",
    cwd: str | None = None,
    timeout: float = 3600.0,
    abort_on_error: bool = False,
    temp_dir: str | None = None,
) -> ScriptRun:
    """Run the lines as one script. Without `abort_on_error` its status is the last command's
    (as a shell, and upstream's LocalExecService, give); with it the shell stops at the first
    failing command (`-e`)."""
    program = resolve_shell(shell)
    started = datetime.now(UTC)
    fd, path = tempfile.mkstemp(prefix="fsm-script-", suffix=".sh", dir=temp_dir)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write("\n".join(lines) + "\n")
        argv = [program, "-e", path] if abort_on_error else [program, path]
        out, err, code = run_process(argv, env, cwd=cwd, timeout=timeout)
    finally:
        os.unlink(path)
    return ScriptRun(out, err, code, started, datetime.now(UTC))


def run_process(
    argv: Sequence[str], env: Mapping[str, str], *, cwd: str | None = None, timeout: float
) -> tuple[str, str, int | None]:
    """Run argv in its own session (no stdin); (stdout, stderr, exit code — None when it
    timed out and its whole process group was killed)."""
    with subprocess.Popen(
        list(argv),
        env=dict(env),
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    ) as process:
        try:
            out, err = process.communicate(timeout=timeout)
            code: int | None = process.returncode
        except subprocess.TimeoutExpired:
            _kill_group(process)
            out, err = process.communicate()
            err += f"\nfsm: the script timed out after {timeout:g}s and was killed\n".encode()
            code = None
    return _text(out), _text(err), code


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):  # it ended on its own meanwhile
        os.killpg(process.pid, signal.SIGKILL)


def _text(raw: bytes) -> str:
    return raw[:MAX_OUTPUT].decode("utf-8", errors="replace")
