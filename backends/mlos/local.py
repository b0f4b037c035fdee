"""`LocalHostService`: this machine as the host; scripts run here as shell scripts."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from backends.base import Backend
from backends.localhost import LocalHostBackend
from backends.mlos.service import EngineHostService
from backends.mlos.settings import positive

_NO_SSH = "this machine is the host: no SSH connection is made"


class LocalHostService(EngineHostService):
    """Host commands complete at once; `remote_exec` runs the script with bash (or `ssh_shell`)
    and the environment parameters as environment variables — what upstream's SSH host
    service does on a remote machine, here. Results are shaped like the SSH service's (stdout
    and stderr as strings).

    Config: `timeout` (or upstream's `ssh_request_timeout`) and `cwd`, upstream's `ssh_shell`,
    and its local exec service's `temp_dir` (where script files are written) and
    `abort_on_error` (stop at the first failing command). The other `ssh_*` keys are accepted
    and ignored.
    """

    KEYS = frozenset(
        {"timeout", "cwd", "ssh_shell", "ssh_request_timeout", "temp_dir", "abort_on_error"}
    )
    IGNORED = {
        "ssh_username": _NO_SSH,
        "ssh_port": _NO_SSH,
        "ssh_priv_key_path": _NO_SSH,
        "ssh_known_hosts_path": _NO_SSH,
        "ssh_keepalive_interval": _NO_SSH,
    }
    START_PROVISIONS = True
    REDEPLOYS = False  # this machine is not deployed: provisioning it finds it running
    OUTPUT_AS_LINES = False

    def _make_backend(self) -> Backend:
        config = self.config
        timeout = config.get("timeout", config.get("ssh_request_timeout"))
        abort = config.get("abort_on_error", False)
        if not isinstance(abort, bool):
            raise ValueError(f"abort_on_error must be true or false, got {abort!r}")
        cwd, temp_dir = config.get("cwd"), config.get("temp_dir")
        return LocalHostBackend(
            timeout=positive(timeout, "timeout", 3600.0),
            cwd=str(cwd) if cwd else None,
            shell=str(config.get("ssh_shell") or "bash"),
            abort_on_error=abort,
            temp_dir=str(temp_dir) if temp_dir else None,
        )

    def _host_key(self, params: Mapping[str, Any]) -> str:
        return f"local:{self._param(params, 'hostName') or 'localhost'}"

    def _exec_data(self, config: Mapping[str, Any]) -> dict[str, Any]:
        name = config.get("commandName")
        return {"name": name} if isinstance(name, str) else {}
