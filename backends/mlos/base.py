"""mlos_bench services whose every step is a persisted transition of the engine.

`EngineHostService` implements mlos_bench's `SupportsHostProvisioning`, `SupportsHostOps`,
`SupportsOSOps`, `SupportsRemoteExec` and the older `SupportsVMOps` with their exact names and
signatures; subclasses say which backend carries the commands out (Azure, the simulator, this
machine). Operations return PENDING (with `asyncResultsUrl` and `pollInterval`), SUCCEEDED or
FAILED; waits return PENDING (no `asyncResultsUrl`), SUCCEEDED, FAILED or TIMED_OUT (the wait
ran out after `pollTimeout`; the operation's own time limit is the same, so the engine records
it TIMED_OUT too). Unlike upstream, `deprovision_host` deletes (upstream issue 498).

It is a subclass of mlos_bench's `Service`, so an mlos_bench user loads it by class name from
their own JSON config (`"class": "backends.mlos.AzureVMService"`); mlos_bench validates
service *files* against its own schema, which only knows its own classes, so such a config
needs `MLOS_BENCH_SKIP_SCHEMA_VALIDATION=true`. The service validates its own settings.
"""

from __future__ import annotations

import logging
from abc import abstractmethod
from collections.abc import Callable, Iterable, Mapping
from types import TracebackType
from typing import Any, Literal

from mlos_bench.environments.status import Status
from mlos_bench.services.base_service import Service
from mlos_bench.services.types.host_ops_type import SupportsHostOps
from mlos_bench.services.types.host_provisioner_type import SupportsHostProvisioning
from mlos_bench.services.types.os_ops_type import SupportsOSOps
from mlos_bench.services.types.remote_exec_type import SupportsRemoteExec
from mlos_bench.services.types.vm_provisioner_type import SupportsVMOps

from backends.base import Backend
from backends.hostctl import TRANSITIONAL, HostControl, Progress, Ticket
from backends.mlos.settings import COMMON_KEYS, ServiceSettings
from fsm import Engine, Entity, FsmError
from fsm.worker import Worker

log = logging.getLogger(__name__)

Result = tuple[Status, dict[str, Any]]
#: the command a host in a transitional state is in the middle of
_IN_PROGRESS = {
    "PROVISIONING": "provision",
    "STARTING": "start",
    "STOPPING": "stop",
    "RESTARTING": "restart",
    "DEALLOCATING": "deallocate",
    "DEPROVISIONING": "deprovision",
}


def status_of(progress: Progress) -> Status:
    return Status[progress.value]


class EngineHostService(
    Service,
    SupportsHostProvisioning,
    SupportsHostOps,
    SupportsOSOps,
    SupportsRemoteExec,
    SupportsVMOps,
):
    """Host provisioning, host and OS operations and remote execution through the engine."""

    #: config keys of this service besides the common ones
    KEYS: frozenset[str] = frozenset()
    #: whether start_host brings up a host that was never provisioned (nothing to create)
    START_PROVISIONS = False

    def __init__(
        self,
        config: dict[str, Any] | None = None,
        global_config: dict[str, Any] | None = None,
        parent: Service | None = None,
        methods: dict[str, Callable[..., Any]] | list[Callable[..., Any]] | None = None,
    ) -> None:
        super().__init__(
            config,
            global_config,
            parent,
            self.merge_methods(
                methods,
                [
                    self.provision_host,
                    self.wait_host_deployment,
                    self.deprovision_host,
                    self.deallocate_host,
                    self.start_host,
                    self.stop_host,
                    self.restart_host,
                    self.wait_host_operation,
                    self.shutdown,
                    self.reboot,
                    self.wait_os_operation,
                    self.remote_exec,
                    self.get_remote_exec_results,
                    self.wait_remote_exec_operation,
                    self.vm_provision,
                    self.wait_vm_deployment,
                    self.vm_start,
                    self.vm_stop,
                    self.vm_restart,
                    self.vm_deprovision,
                    self.wait_vm_operation,
                ],
            ),
        )
        self._global_config = dict(global_config or {})
        self.settings = ServiceSettings.from_config(self.config, global_config)
        self._control: HostControl | None = None

    def _validate_json_config(self, config: dict[str, Any]) -> None:
        """Our own check instead of mlos_bench's schema (which knows only its own classes)."""
        unknown = set(config) - COMMON_KEYS - self.KEYS
        if unknown:
            known = sorted(COMMON_KEYS | self.KEYS)
            raise ValueError(
                f"{type(self).__name__}: unknown config keys {sorted(unknown)}; {known}"
            )

    # -- what subclasses provide ---------------------------------------------------------------

    @abstractmethod
    def _make_backend(self) -> Backend:
        """The backend that carries the commands out."""

    @abstractmethod
    def _host_key(self, params: Mapping[str, Any]) -> str:
        """The host's identity (its entity ids are `KEY#1`, `KEY#2`, ...)."""

    def _host_data(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """Data to create the host entity with (never anything secret)."""
        return {}

    def _operation_data(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """Data for the operation entity of a host command."""
        return {}

    def _call_arguments(self, command: str, params: Mapping[str, Any]) -> dict[str, Any]:
        """What only the backend's request needs (a VM spec); recorded redacted."""
        return {}

    def _exec_data(self, config: Mapping[str, Any]) -> dict[str, Any]:
        """Data for the operation entity of a remote execution."""
        return {}

    # -- the engine ----------------------------------------------------------------------------

    @property
    def hosts(self) -> HostControl:
        """The engine, worker and backend, opened on first use."""
        if self._control is None:
            engine = Engine(self.settings.db, refresh_scale=self.settings.refresh_scale)
            try:
                backend = self._make_backend()
                worker = Worker(engine, [backend])
            except Exception:
                engine.close()
                raise
            self._control = HostControl(engine, worker, backend, drive=self.settings.drive_loop)
        return self._control

    @property
    def engine(self) -> Engine:
        return self.hosts.engine

    def close(self) -> None:
        if self._control is not None:
            control, self._control = self._control, None
            try:
                close = getattr(control.backend, "close", None)
                if callable(close):
                    close()
            finally:
                control.engine.close()

    def _exit_context(
        self,
        ex_type: type[BaseException] | None,
        ex_val: BaseException | None,
        ex_tb: TracebackType | None,
    ) -> Literal[False]:
        self.close()
        return super()._exit_context(ex_type, ex_val, ex_tb)

    # -- helpers -------------------------------------------------------------------------------

    def _submit(self, host: Entity, command: str, params: Mapping[str, Any], **args: Any) -> Result:
        try:
            ticket = self.hosts.submit(
                host.id,
                command,
                args,
                call_arguments=self._call_arguments(command, params),
                operation_data=self._operation_data(params),
                time_limit=self.settings.poll_timeout,
            )
        except (FsmError, ValueError) as exc:
            log.warning("%s on %s refused: %s", command, host.id, exc)
            return Status.FAILED, {}
        return self._submitted(ticket, params if command == "provision" else {})

    def _submitted(self, ticket: Ticket, base: Mapping[str, Any]) -> Result:
        """FAILED or SUCCEEDED if already settled (a refused request, a local host), else
        PENDING with what the wait needs."""
        progress, _ = self.hosts.progress(ticket)
        if progress is Progress.FAILED:
            return Status.FAILED, {}
        if progress is Progress.SUCCEEDED:
            return Status.SUCCEEDED, dict(base)
        return Status.PENDING, {
            **base,
            "asyncResultsUrl": ticket.url(),
            "pollInterval": self.settings.poll_interval,
        }

    def _pending_on(self, host: Entity, base: Mapping[str, Any]) -> Result:
        """A host already in a transitional state: wait for the command it is carrying out."""
        command = _IN_PROGRESS[host.state]
        return self._submitted(Ticket(host.id, command, self._open_operation(host)), base)

    def _open_operation(self, host: Entity) -> str | None:
        history = self.engine.history(host.id)
        op = history[-1].payload.get("operation") if history else None
        return op if isinstance(op, str) else None

    def _wait(self, params: Mapping[str, Any]) -> tuple[Progress | None, dict[str, Any]]:
        url = params.get("asyncResultsUrl")
        if url is None:
            return None, {}
        try:
            ticket = Ticket.parse(url)
        except ValueError as exc:
            log.warning("cannot wait: %s", exc)
            return Progress.FAILED, {}
        return self.hosts.wait(
            ticket, timeout=self.settings.poll_timeout, interval=self.settings.poll_interval
        )

    def _wait_result(self, params: Mapping[str, Any]) -> Result:
        progress, info = self._wait(params)
        if progress is None:
            return Status.PENDING, {}
        return status_of(progress), info if progress is Progress.SUCCEEDED else {}

    def _host(self, params: Mapping[str, Any]) -> Entity | None:
        return self.hosts.current_host(self._host_key(params))

    # -- SupportsHostProvisioning --------------------------------------------------------------

    def provision_host(self, params: dict[str, Any]) -> Result:
        """Check if the host is ready; deploy it (or start it, if it is stopped) if necessary."""
        host = self.hosts.host_for(self._host_key(params), self._host_data(params))
        if host.state == "RUNNING":
            return Status.SUCCEEDED, dict(params)
        if host.state in TRANSITIONAL:
            return self._pending_on(host, params)
        command = "start" if host.state in ("STOPPED", "DEALLOCATED") else "provision"
        return self._submit(host, command, params)

    def wait_host_deployment(self, params: dict[str, Any], *, is_setup: bool) -> Result:
        """Wait for the pending provisioning (is_setup) or deprovisioning to settle."""
        return self._wait_result(params)

    def deprovision_host(self, params: dict[str, Any]) -> Result:
        """Delete the host (really: the VM and its operation are gone afterwards)."""
        host = self._host(params)
        if host is None or host.terminal:
            return Status.SUCCEEDED, {}
        if host.state == "DEPROVISIONING":
            return self._pending_on(host, {})
        return self._submit(host, "deprovision", params)

    def deallocate_host(self, params: dict[str, Any]) -> Result:
        """Stop the host and release its compute resources."""
        host = self._host(params)
        if host is None:
            return Status.FAILED, {}
        if host.state == "DEALLOCATED":
            return Status.SUCCEEDED, {}
        if host.state == "DEALLOCATING":
            return self._pending_on(host, {})
        return self._submit(host, "deallocate", params)

    # -- SupportsHostOps -----------------------------------------------------------------------

    def start_host(self, params: dict[str, Any]) -> Result:
        host = self._host(params)
        if host is None or host.state == "NEW":
            if not self.START_PROVISIONS:
                log.warning("start_host: %s was never provisioned", self._host_key(params))
                return Status.FAILED, {}
            status, result = self.provision_host(params)
            return status, {
                k: v for k, v in result.items() if k in ("asyncResultsUrl", "pollInterval")
            }
        if host.state == "RUNNING":
            return Status.SUCCEEDED, {}
        if host.state in ("STARTING", "PROVISIONING", "RESTARTING"):
            return self._pending_on(host, {})
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
            return Status.FAILED, {}
        if host.state in ("STOPPED", "DEALLOCATED"):
            return Status.SUCCEEDED, {}
        if host.state == "STOPPING":
            return self._pending_on(host, {})
        return self._submit(host, command, params, force=force)

    def _restart(self, params: Mapping[str, Any], command: str, force: bool) -> Result:
        host = self._host(params)
        if host is None:
            return Status.FAILED, {}
        if host.state == "RESTARTING":
            return self._pending_on(host, {})
        return self._submit(host, command, params, force=force)

    # -- SupportsOSOps -------------------------------------------------------------------------

    def shutdown(self, params: dict[str, Any], force: bool = False) -> Result:
        return self._power_down(params, "shutdown", force)

    def reboot(self, params: dict[str, Any], force: bool = False) -> Result:
        return self._restart(params, "reboot", force)

    def wait_os_operation(self, params: dict[str, Any]) -> Result:
        return self._wait_result(params)

    # -- SupportsRemoteExec --------------------------------------------------------------------

    def remote_exec(
        self, script: Iterable[str], config: dict[str, Any], env_params: dict[str, Any]
    ) -> Result:
        """Run the script's lines on the host; `env_params` become its environment variables
        (recorded by name only)."""
        host = self._host(config)
        try:
            ticket = self.hosts.execute(
                host.id if host is not None else None,
                {"script": [str(line) for line in script], "secrets": dict(env_params)},
                operation_data=self._exec_data(config),
                time_limit=self.settings.poll_timeout,
            )
        except (FsmError, ValueError) as exc:
            log.warning("remote_exec refused: %s", exc)
            return Status.FAILED, {}
        progress, info = self.hosts.progress(ticket)
        result = {"asyncResultsUrl": ticket.url(), "pollInterval": self.settings.poll_interval}
        if progress is Progress.FAILED:  # refused, or it ran here at once and failed
            return Status.FAILED, {**result, **_output(info)}
        if progress is Progress.SUCCEEDED:
            return Status.SUCCEEDED, result
        return Status.PENDING, result

    def get_remote_exec_results(self, config: dict[str, Any]) -> Result:
        """Wait for the script; its stdout / stderr / exitCode whether it succeeded or not."""
        progress, info = self._wait(config)
        if progress is None:
            return Status.PENDING, {}
        return status_of(progress), _output(info)

    def wait_remote_exec_operation(self, params: dict[str, Any]) -> Result:
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


def _output(info: dict[str, Any]) -> dict[str, Any]:
    return {k: info[k] for k in ("stdout", "stderr", "exitCode") if k in info}
