"""How scheduler commands reach the cluster: a local subprocess on the login node, or OpenSSH.

Commands are argv lists, never shell strings; over SSH the argv is `shlex.join`ed into the one
string the remote shell parses back into the same argv. Every call has a timeout. A command
that fails (non-zero exit, timeout, unreachable host) raises `TransportError`, which the
backend turns into a failed observation: nothing changes and the entity is polled later.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shlex
import signal
import socket
import subprocess
import tempfile
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from fsm.observation import FailureKind

_HOST = re.compile(r"[A-Za-z0-9_.:\-\[\]]{1,255}")
_USER = re.compile(r"[A-Za-z0-9_.\-]{1,64}")


class CommandOutput(NamedTuple):
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str
    seconds: float


class TransportError(Exception):
    """A command could not be run or failed; `kind` says how (timeout, error)."""

    def __init__(
        self,
        argv: Sequence[str],
        kind: FailureKind,
        detail: str,
        output: CommandOutput | None = None,
    ) -> None:
        self.argv = tuple(argv)
        self.kind = kind
        self.detail = detail
        self.output = output
        name = argv[0] if argv else "?"
        super().__init__(f"{name}: {detail}")


class Tunnel(NamedTuple):
    """An `ssh -N -L` forward: 127.0.0.1:local_port on this machine -> node:remote_port."""

    pid: int
    local_port: int
    node: str
    remote_port: int

    def spec(self) -> str:
        return f"127.0.0.1:{self.local_port}:{self.node}:{self.remote_port}"

    def as_data(self) -> dict[str, Any]:
        return self._asdict()

    @classmethod
    def from_data(cls, raw: Any) -> Tunnel | None:
        if not isinstance(raw, Mapping):
            return None
        try:
            return cls(
                int(raw["pid"]), int(raw["local_port"]), str(raw["node"]), int(raw["remote_port"])
            )
        except (KeyError, TypeError, ValueError):
            return None


def _check_argv(argv: Sequence[str]) -> tuple[str, ...]:
    if isinstance(argv, str) or not argv:
        raise TypeError("a command is a non-empty argv list, not a string")
    for item in argv:
        if not isinstance(item, str) or "\x00" in item:
            raise TypeError(f"bad argument {item!r}")
    return tuple(argv)


def _spawn(
    argv: Sequence[str], input: str | None, timeout: float, shown: Sequence[str]
) -> CommandOutput:
    started = time.monotonic()
    try:
        done = subprocess.run(
            list(argv),
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
            capture_output=True,
            text=True,
            encoding="utf-8",
            errors="replace",
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise TransportError(shown, FailureKind.TIMEOUT, f"no answer in {timeout:g}s") from None
    except OSError as exc:
        raise TransportError(shown, FailureKind.ERROR, f"cannot run: {exc}") from exc
    return CommandOutput(
        tuple(shown), done.returncode, done.stdout, done.stderr, time.monotonic() - started
    )


def free_local_port() -> int:
    """A TCP port nothing listens on now (the OS's choice; tiny race, retried by callers)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Transport(ABC):
    """Runs scheduler commands; subclasses say where."""

    #: True when the cluster is another machine: its nodes are reached through a tunnel
    remote: bool = False

    def __init__(self, timeout: float = 30.0) -> None:
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        self.timeout = timeout

    def run(
        self,
        argv: Sequence[str],
        *,
        input: str | None = None,
        timeout: float | None = None,
        ok: Sequence[int] = (0,),
    ) -> CommandOutput:
        """Run `argv`; `TransportError` unless it ends in time with an exit code in `ok`."""
        args = _check_argv(argv)
        output = self._run(args, input, timeout or self.timeout)
        if output.returncode not in ok:
            first = (output.stderr.strip() or output.stdout.strip()).splitlines()[:1]
            reason = first[0][:300] if first else "no output"
            detail = f"exit {output.returncode}: {reason}"
            raise TransportError(args, FailureKind.ERROR, detail, output)
        return output

    @abstractmethod
    def _run(self, argv: tuple[str, ...], input: str | None, timeout: float) -> CommandOutput:
        """Run one command, raising `TransportError` only for timeouts and unreachable hosts."""

    def cluster_path(self, path: str) -> str:
        """A path as the cluster's commands see it (`~/` is the cluster user's home)."""
        return os.path.expanduser(path)

    def open_tunnel(self, node: str, port: int) -> Tunnel | None:
        """Make node:port reachable from here; None when it already is (no tunnel needed)."""
        return None

    def tunnel_alive(self, tunnel: Tunnel) -> bool:
        return False

    def close_tunnel(self, tunnel: Tunnel) -> None:  # noqa: B027 - no tunnels by default
        """Stop a tunnel (ours, going by its command line); a dead one is left alone."""

    def close(self) -> None:  # noqa: B027 - a local transport holds nothing
        """Release connections and tunnels."""


class LocalTransport(Transport):
    """The orchestrator runs on a login node: commands are local subprocesses."""

    def _run(self, argv: tuple[str, ...], input: str | None, timeout: float) -> CommandOutput:
        return _spawn(argv, input, timeout, argv)


class SshTransport(Transport):
    """Commands run on a login node through OpenSSH, sharing one ControlMaster connection.

    Host keys are checked (`StrictHostKeyChecking=yes` against `known_hosts_file` or the
    user's own) unless told otherwise; `BatchMode=yes`: never a password prompt.
    """

    remote = True

    def __init__(
        self,
        host: str,
        *,
        user: str | None = None,
        port: int = 22,
        identity_file: str | None = None,
        known_hosts_file: str | None = None,
        strict_host_key_checking: bool | str = True,
        control_persist: int = 300,
        connect_timeout: float = 10.0,
        timeout: float = 30.0,
        ssh: str = "ssh",
    ) -> None:
        super().__init__(timeout)
        if not _HOST.fullmatch(host) or host.startswith("-"):
            raise ValueError(f"bad ssh host {host!r}")
        if user is not None and (not _USER.fullmatch(user) or user.startswith("-")):
            raise ValueError(f"bad ssh user {user!r}")
        if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
            raise ValueError(f"bad ssh port {port!r}")
        if isinstance(strict_host_key_checking, bool):
            checking = "yes" if strict_host_key_checking else "no"
        else:
            checking = str(strict_host_key_checking)
        if checking not in ("yes", "accept-new", "no"):
            raise ValueError("strict_host_key_checking must be true, false or 'accept-new'")
        self.host, self.user, self.port = host, user, port
        self.identity_file = identity_file
        self.known_hosts_file = known_hosts_file
        self.checking = checking
        self.control_persist = int(control_persist)
        self.connect_timeout = connect_timeout
        self.ssh = ssh
        self._control_dir = Path(tempfile.mkdtemp(prefix="fsm-ssh-"))
        key = hashlib.sha1(f"{user}@{host}:{port}".encode(), usedforsecurity=False)
        self.control_path = str(self._control_dir / f"{key.hexdigest()[:16]}.sock")
        self._tunnels: dict[int, subprocess.Popen[bytes]] = {}

    def _options(self, control: str) -> list[str]:
        """Common options; `control`: "client" (use the master), "master" or "none"."""
        options = [
            "-o",
            "BatchMode=yes",
            "-o",
            f"StrictHostKeyChecking={self.checking}",
            "-o",
            f"ConnectTimeout={max(1, round(self.connect_timeout))}",
            "-o",
            "ServerAliveInterval=15",
            "-o",
            "ServerAliveCountMax=3",
            "-p",
            str(self.port),
        ]
        if self.known_hosts_file:
            options += ["-o", f"UserKnownHostsFile={self.known_hosts_file}"]
        if self.identity_file:
            options += ["-i", self.identity_file, "-o", "IdentitiesOnly=yes"]
        if self.user:
            options += ["-l", self.user]
        if control == "master":
            options += ["-o", "ControlMaster=yes", "-o", f"ControlPersist={self.control_persist}"]
        else:
            options += ["-o", "ControlMaster=no"]
        path = "none" if control == "none" else self.control_path
        return [*options, "-o", f"ControlPath={path}"]

    def _ensure_master(self) -> None:
        """Start the shared connection if it is not up; it stays `control_persist` s idle.

        Started by running `true` (a master started with -N refuses sessions) with its output
        to /dev/null: a master that kept our pipes open would make every command wait for it.
        If it cannot start, commands still connect on their own (and fail with the reason)."""
        if os.path.exists(self.control_path):
            return
        argv = [
            self.ssh,
            *self._options("master"),
            "--",
            self.host,
            "true",
        ]
        with contextlib.suppress(subprocess.TimeoutExpired, OSError):
            subprocess.run(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                timeout=self.connect_timeout + 5,
                check=False,
            )

    def _run(self, argv: tuple[str, ...], input: str | None, timeout: float) -> CommandOutput:
        self._ensure_master()
        full = [self.ssh, *self._options("client"), "--", self.host, shlex.join(argv)]
        output = _spawn(full, input, timeout, argv)
        if output.returncode == 255:  # ssh's own failure: unreachable, refused, host key, auth
            reason = output.stderr.strip().splitlines()[-1:] or ["ssh failed"]
            raise TransportError(argv, FailureKind.ERROR, f"ssh: {reason[0][:300]}", output)
        return output

    def cluster_path(self, path: str) -> str:
        # remote commands start in the remote user's home, so `~/x` is just `x` there
        if path == "~":
            return "."
        return path[2:] if path.startswith("~/") else path

    def open_tunnel(self, node: str, port: int) -> Tunnel | None:
        if not _HOST.fullmatch(node) or node.startswith("-"):
            raise TransportError(["ssh"], FailureKind.GARBAGE, f"bad node name {node!r}")
        last = "no attempt"
        for _ in range(3):
            local = free_local_port()
            spec = f"127.0.0.1:{local}:{node}:{port}"
            argv = [
                self.ssh,
                *self._options("none"),
                "-N",
                "-o",
                "ExitOnForwardFailure=yes",
                "-L",
                spec,
                "--",
                self.host,
            ]
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
            deadline = time.monotonic() + self.connect_timeout + 5
            while time.monotonic() < deadline and proc.poll() is None:
                with (
                    contextlib.suppress(OSError),
                    socket.create_connection(("127.0.0.1", local), timeout=0.5),
                ):
                    self._tunnels[proc.pid] = proc
                    return Tunnel(proc.pid, local, node, port)
                time.sleep(0.05)
            last = f"ssh -L {spec} exited with {proc.poll()}"
            proc.kill()
            proc.wait()
        raise TransportError(["ssh"], FailureKind.ERROR, f"tunnel not opened: {last}")

    def tunnel_alive(self, tunnel: Tunnel) -> bool:
        """Alive and ours: a recycled pid running something else does not count."""
        proc = self._tunnels.get(tunnel.pid)
        if proc is not None and proc.poll() is not None:
            self._tunnels.pop(tunnel.pid, None)
            return False
        try:
            cmdline = Path(f"/proc/{tunnel.pid}/cmdline").read_bytes()
        except OSError:
            return False
        return f"-L\x00{tunnel.spec()}\x00".encode() in cmdline

    def close_tunnel(self, tunnel: Tunnel) -> None:
        if self.tunnel_alive(tunnel):
            with contextlib.suppress(ProcessLookupError):
                os.kill(tunnel.pid, signal.SIGTERM)
        proc = self._tunnels.pop(tunnel.pid, None)
        if proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)

    def close(self) -> None:
        for pid, proc in list(self._tunnels.items()):
            proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
            self._tunnels.pop(pid, None)
        if os.path.exists(self.control_path):
            argv = [self.ssh, "-o", f"ControlPath={self.control_path}", "-O", "exit", self.host]
            with contextlib.suppress(subprocess.TimeoutExpired, OSError):
                subprocess.run(argv, capture_output=True, timeout=10, check=False)
        with contextlib.suppress(OSError):
            self._control_dir.rmdir()


def make_transport(settings: Mapping[str, Any]) -> Transport:
    """A transport from the `transport:` part of the backend's config."""
    kind = settings.get("kind", "local")
    options = {k: v for k, v in settings.items() if k != "kind"}
    if kind == "local":
        unknown = set(options) - {"timeout"}
        if unknown:
            raise ValueError(f"unknown local transport settings: {sorted(unknown)}")
        return LocalTransport(**options)
    if kind == "ssh":
        return SshTransport(**options)
    raise ValueError(f"unknown transport kind {kind!r}; known: local, ssh")
