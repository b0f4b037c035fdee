"""What every engine-backed mlos_bench service shares: its settings, its engine and worker, and
how a host is found (in the database, or adopted from the outside world).

A host named by the parameters (or the service config) that the database does not know is
looked up once (one GET for an Azure VM): if it exists it is adopted — a host entity whose
first transition, `adopted_<state>`, records what named it and what was seen — and the call
proceeds as upstream's would; if it does not, the call gives upstream's status for a missing
VM (FAILED). mlos_bench validates service *files* against its own schema, which only knows its
own classes, so a config naming one of ours needs `MLOS_BENCH_SKIP_SCHEMA_VALIDATION=true`;
the service checks its own keys (`backends.mlos.settings`).
"""

from __future__ import annotations

import logging
from abc import abstractmethod
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any, Literal

from mlos_bench.environments.status import Status
from mlos_bench.services.base_service import Service

from backends.base import Backend
from backends.hostctl import HostControl, Progress, Ticket
from backends.mlos.settings import ServiceSettings, check_keys
from fsm import Engine, Entity, FsmError
from fsm.worker import Worker

log = logging.getLogger(__name__)

Result = tuple[Status, dict[str, Any]]
#: the command a host in a transitional state is in the middle of
IN_PROGRESS = {
    "PROVISIONING": "provision",
    "STARTING": "start",
    "STOPPING": "stop",
    "RESTARTING": "restart",
    "DEALLOCATING": "deallocate",
    "DEPROVISIONING": "deprovision",
}


def status_of(progress: Progress) -> Status:
    return Status[progress.value]


class EngineServiceCore(Service):
    """The engine, the worker and the backend of one service, opened on first use."""

    #: config keys this service honours besides the common ones
    KEYS: frozenset[str] = frozenset()
    #: upstream config keys accepted but not applicable here, with the reason (logged)
    IGNORED: Mapping[str, str] = {}
    #: whether start_host brings up a host that does not exist (nothing to create: simulated)
    START_PROVISIONS = False
    #: whether provision_host deploys a running host again (False: there is nothing to deploy)
    REDEPLOYS = True

    def __init__(
        self,
        config: dict[str, Any] | None = None,
        global_config: dict[str, Any] | None = None,
        parent: Service | None = None,
        methods: dict[str, Callable[..., Any]] | list[Callable[..., Any]] | None = None,
    ) -> None:
        super().__init__(config, global_config, parent, methods)
        self._global_config = dict(global_config or {})
        self.settings = ServiceSettings.from_config(self.config, global_config)
        self._control: HostControl | None = None

    def _validate_json_config(self, config: dict[str, Any]) -> None:
        """Our own check instead of mlos_bench's schema (which knows only its own classes)."""
        check_keys(type(self).__name__, config, self.KEYS, self.IGNORED)

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

    # -- parameters ----------------------------------------------------------------------------

    def _param(self, params: Mapping[str, Any], key: str) -> Any:
        """A parameter as upstream merges them: the call's params win over the service config."""
        value = params.get(key)
        return value if value is not None else self.config.get(key)

    def _named_by(self, params: Mapping[str, Any], key: str = "vmName") -> str:
        return "params" if params.get(key) is not None else "service config"

    # -- hosts ---------------------------------------------------------------------------------

    def _host(self, params: Mapping[str, Any]) -> Entity | None:
        """The live host entity the params name; a machine the database does not know (or only
        knows as NEW) is looked up and adopted; None if it does not exist."""
        key = self._host_key(params)
        host = self.hosts.current_host(key)
        if host is not None and not host.terminal and host.state != "NEW":
            return host
        data = self._host_data(params)
        found = self.hosts.lookup(data)
        if found is None:
            return host if host is not None and not host.terminal else None
        return self.hosts.adopt(key, data, found, named_by=self._named_by(params))

    def _missing(self, what: str, params: Mapping[str, Any]) -> Result:
        log.warning("%s: %s does not exist", what, self._host_key(params))
        return Status.FAILED, {}

    # -- submitting and waiting ----------------------------------------------------------------

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
        return self._submitted(ticket, params)

    def _submitted(self, ticket: Ticket, base: Mapping[str, Any]) -> Result:
        """FAILED; SUCCEEDED if already settled (a synchronous 200, a local host); else
        PENDING with what the wait needs. Results carry the input params, as upstream's."""
        progress, info = self.hosts.progress(ticket)
        if progress is Progress.FAILED:
            return Status.FAILED, {}
        if progress is Progress.SUCCEEDED:
            return Status.SUCCEEDED, dict(base)
        interval = info.get("retryAfter") or self.settings.poll_interval
        return Status.PENDING, {
            **base,
            "asyncResultsUrl": ticket.url(),
            "pollInterval": interval,
        }

    def _pending_on(self, host: Entity, base: Mapping[str, Any]) -> Result:
        """A host already in a transitional state: wait for the command it is carrying out."""
        command = IN_PROGRESS[host.state]
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
        interval = params.get("pollInterval", self.settings.poll_interval)
        try:
            interval = float(interval)
        except (TypeError, ValueError):
            interval = self.settings.poll_interval
        return self.hosts.wait(ticket, timeout=self.settings.poll_timeout, interval=interval)

    def _wait_result(self, params: Mapping[str, Any]) -> Result:
        progress, info = self._wait(params)
        if progress is None:
            return Status.PENDING, {}
        return status_of(progress), info if progress is Progress.SUCCEEDED else {}
