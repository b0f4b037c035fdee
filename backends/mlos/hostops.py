"""Host provisioning, host operations and OS operations (mlos_bench's `SupportsHostProvisioning`,
`SupportsHostOps`, `SupportsOSOps` and the older `SupportsVMOps`), each a recorded command.

Operations return PENDING (with `asyncResultsUrl` and `pollInterval`), SUCCEEDED (a synchronous
200, a host already there) or FAILED; waits return PENDING (no `asyncResultsUrl`), SUCCEEDED,
FAILED or TIMED_OUT (after `pollTimeout`; the operation's own time limit is the same, so the
engine records it TIMED_OUT too). Unlike upstream, `deprovision_host` deletes (issue 498).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from mlos_bench.environments.status import Status

from backends.hostctl import TRANSITIONAL
from backends.mlos.base import EngineServiceCore, Result

log = logging.getLogger(__name__)


class HostOperations(EngineServiceCore):
    """The host and OS verbs over `EngineServiceCore`'s engine."""

    # -- SupportsHostProvisioning --------------------------------------------------------------

    def provision_host(self, params: dict[str, Any]) -> Result:
        """Deploy the host — every time, as upstream does, so that a changed `vmSize` (or
        template parameter) takes effect on a running VM: ARM updates it in place, a resize
        restarts it. A stopped or deallocated host is started instead (its deployment is not
        re-sent). Raises ValueError, like upstream, when there is nothing to deploy from."""
        self._check_provisionable(params)
        host = self._host(params)
        if host is None:
            host = self.hosts.host_for(self._host_key(params), self._host_data(params))
        if host.state == "RUNNING" and not self.REDEPLOYS:
            return Status.SUCCEEDED, dict(params)
        if host.state in TRANSITIONAL:
            return self._pending_on(host, params)
        command = "start" if host.state in ("STOPPED", "DEALLOCATED") else "provision"
        return self._submit(host, command, params)

    def _check_provisionable(self, params: Mapping[str, Any]) -> None:
        """Raise ValueError when provisioning cannot work with this config (upstream raises for
        a missing deployment template)."""

    def wait_host_deployment(self, params: dict[str, Any], *, is_setup: bool) -> Result:
        """Wait for the pending provisioning (is_setup) or deprovisioning to settle."""
        return self._wait_result(params)

    def deprovision_host(self, params: dict[str, Any]) -> Result:
        """Delete the host, whoever made it (an adopted VM is deleted too)."""
        host = self._host(params)
        if host is None:
            return self._missing("deprovision_host", params)
        if host.state == "DEPROVISIONING":
            return self._pending_on(host, params)
        return self._submit(host, "deprovision", params)

    def deallocate_host(self, params: dict[str, Any]) -> Result:
        """Stop the host and release its compute resources."""
        host = self._host(params)
        if host is None:
            return self._missing("deallocate_host", params)
        if host.state == "DEALLOCATED":
            return Status.SUCCEEDED, dict(params)
        if host.state == "DEALLOCATING":
            return self._pending_on(host, params)
        return self._submit(host, "deallocate", params)

    # -- SupportsHostOps -----------------------------------------------------------------------

    def start_host(self, params: dict[str, Any]) -> Result:
        host = self._host(params)
        if host is None or host.state == "NEW":
            if not self.START_PROVISIONS:
                return self._missing("start_host", params)
            return self.provision_host(params)
        if host.state == "RUNNING":
            return Status.SUCCEEDED, dict(params)
        if host.state in ("STARTING", "PROVISIONING", "RESTARTING"):
            return self._pending_on(host, params)
        return self._submit(host, "start", params)

    def stop_host(self, params: dict[str, Any], force: bool = False) -> Result:
        return self._power_down(params, "stop", force)

    def restart_host(self, params: dict[str, Any], force: bool = False) -> Result:
        return self._restart(params, "restart", force)

    def wait_host_operation(self, params: dict[str, Any]) -> Result:
        return self._wait_result(params)

    def _power_down(self, params: Mapping[str, Any], command: str, force: bool) -> Result:
        host = self._host(params)
        if host is None:
            return self._missing(command, params)
        if host.state in ("STOPPED", "DEALLOCATED"):
            return Status.SUCCEEDED, dict(params)
        if host.state == "STOPPING":
            return self._pending_on(host, params)
        return self._submit(host, command, params, force=force)

    def _restart(self, params: Mapping[str, Any], command: str, force: bool) -> Result:
        host = self._host(params)
        if host is None:
            return self._missing(command, params)
        if host.state == "RESTARTING":
            return self._pending_on(host, params)
        return self._submit(host, command, params, force=force)

    # -- SupportsOSOps -------------------------------------------------------------------------

    def shutdown(self, params: dict[str, Any], force: bool = False) -> Result:
        return self._power_down(params, "shutdown", force)

    def reboot(self, params: dict[str, Any], force: bool = False) -> Result:
        return self._restart(params, "reboot", force)

    def wait_os_operation(self, params: dict[str, Any]) -> Result:
        return self._wait_result(params)

    # -- SupportsVMOps (the older names) -------------------------------------------------------

    def vm_provision(self, params: dict[str, Any]) -> Result:
        return self.provision_host(params)

    def wait_vm_deployment(self, is_setup: bool, params: dict[str, Any]) -> Result:
        return self.wait_host_deployment(params, is_setup=is_setup)

    def vm_start(self, params: dict[str, Any]) -> Result:
        return self.start_host(params)

    def vm_stop(self, params: dict[str, Any]) -> Result:
        return self.stop_host(params)

    def vm_restart(self, params: dict[str, Any]) -> Result:
        return self.restart_host(params)

    def vm_deprovision(self, params: dict[str, Any]) -> Result:
        """Deletes, like deprovision_host (the old docstring's "deallocates" is issue 498)."""
        return self.deprovision_host(params)

    def wait_vm_operation(self, params: dict[str, Any]) -> Result:
        return self.wait_host_operation(params)
