"""Azure VMs as hosts, and the ARM long-running operations that change them as operations.

Observing is batched: one `list_all(statusOnly=true)` per cycle gives every VM's instance view
in the subscription (the resource-group listing only expands instance views together with a
VMSS `$filter`, so it cannot serve here), and each operation entity is polled one step from its
persisted continuation token. Every failure to observe (429, 5xx after the SDK's retries,
garbage) is a failed observation: the entities keep their states and are polled again later.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from azure.core.exceptions import AzureError, HttpResponseError, ResourceNotFoundError
from azure.core.pipeline import PipelineResponse
from azure.mgmt.compute import ComputeManagementClient

from backends.azure.client import make_client, make_resource_client
from backends.azure.credentials import make_credential
from backends.azure.errors import describe, failure, retry_after
from backends.azure.instance_view import (
    EXPECT_EXISTS,
    Listing,
    VmKey,
    adoptable_state,
    host_events,
    parse_listing,
    read_view,
    stale,
)
from backends.azure.operations import (
    HOST_COMMANDS,
    RUN_COMMAND,
    Target,
    begin,
    run_command_body,
)
from backends.azure.polling import StepPolling, StepStatus, classify, describe_token, settle
from backends.azure.run_results import RunResult, read_run_result
from backends.azure.settings import AzureSettings
from backends.base import Backend, CommandFailed, CommandResult
from backends.hostctl import Found
from fsm import Entity, NewEntity
from fsm.children import Child
from fsm.observation import FailureKind, Observation

log = logging.getLogger(__name__)


class AzureBackend(Backend):
    """Hosts are VMs (entity data `{"azure": {"resource_group", "vm_name"}}`); operations carry
    one ARM call each (data `{"command", "azure": {...}}`, then its continuation token).

    Host commands only record the intent: the ARM call is made by the operation entity's
    `start` command (see `backends.hostctl.HostControl`), so it is persisted with its token.
    """

    name = "azure"
    lifecycles = frozenset({"host", "operation"})
    #: host commands are carried out by operation entities, started by their `start` command
    host_operations = True
    starts_operations = True

    def __init__(
        self,
        settings: AzureSettings,
        *,
        client: ComputeManagementClient | None = None,
        credential: Any = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        """`credential`: one the caller owns (e.g. mlos_bench's AzureAuthService's), never
        closed here; without it the settings say which to make (closed with the backend)."""
        self.settings = settings
        self._owns_credential = credential is None
        self._credential = credential if credential is not None else make_credential(settings)
        self.client = client or make_client(settings, self._credential)
        self.resources = make_resource_client(settings, self._credential)
        self._sleep = sleep
        self.list_calls = 0  # one per observed batch of hosts

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> AzureBackend:
        return cls(AzureSettings.from_config(config))

    def close(self) -> None:
        self.client.close()
        self.resources.close()  # type: ignore[no-untyped-call]
        closer = getattr(self._credential, "close", None)
        if self._owns_credential and callable(closer):
            closer()

    # -- observing ---------------------------------------------------------------------------

    def observe(self, entities: Sequence[Entity], now: datetime) -> list[Observation]:
        hosts = [e for e in entities if e.lifecycle == "host"]
        found = [
            Observation.failed(e.id, FailureKind.MISSING, f"azure drives no {e.lifecycle}")
            for e in entities
            if e.lifecycle not in self.lifecycles
        ]
        if hosts:
            found += self._observe_hosts(hosts, now)
        found += [self._observe_operation(e, now) for e in entities if e.lifecycle == "operation"]
        return found

    def _observe_hosts(self, hosts: Sequence[Entity], now: datetime) -> list[Observation]:
        keyed: list[tuple[Entity, VmKey]] = []
        found: list[Observation] = []
        for host in hosts:
            try:
                target = Target.from_data(host.data)
            except ValueError as exc:
                found.append(Observation.failed(host.id, FailureKind.MISSING, str(exc)))
                continue
            keyed.append((host, (target.resource_group.lower(), target.vm_name.lower())))
        if not keyed:
            return found
        try:
            listing = self._list_vms()
        except Exception as exc:
            return found + [failure(host.id, exc) for host, _ in keyed]
        for host, key in keyed:
            view = listing.vms.get(key)
            if view is None and not listing.complete and host.state in EXPECT_EXISTS:
                found.append(
                    Observation.failed(
                        host.id, FailureKind.GARBAGE, "the listing had unreadable entries"
                    )
                )
                continue
            payload = (
                {"provisioning": view.provisioning, "power": view.power}
                if view is not None
                else {"listed": False}
            )
            if view is not None and stale(view, host):
                # right after a command ARM may still list the old state (a restarted VM
                # says succeeded+running): only a status newer than the command counts
                found.append(Observation(host.id, (), {**payload, "stale": True}, None, now))
                continue
            found.append(Observation(host.id, host_events(view, host.state), payload, None, now))
        return found

    def lookup_host(self, data: Mapping[str, Any]) -> Found | None:
        """One GET of the VM `data` names, with its instance view (None: it does not exist)."""
        target = Target.from_data(data)
        texts: list[str] = []

        def keep(response: PipelineResponse[Any, Any]) -> None:
            if response.http_response.status_code == 200:
                texts.append(response.http_response.text())

        try:
            self.client.virtual_machines.get(
                target.resource_group,
                target.vm_name,
                expand="instanceView",
                raw_response_hook=keep,
            )
        except ResourceNotFoundError:
            return None
        if not texts:
            raise ValueError("the VM's instance view was not returned")
        body = json.loads(texts[-1])
        view = read_view(body)
        properties = body.get("properties") if isinstance(body, Mapping) else None
        details = {
            "resource_id": body.get("id"),
            "vm_id": properties.get("vmId") if isinstance(properties, Mapping) else None,
            "provisioning": view.provisioning,
            "power": view.power,
        }
        return Found(adoptable_state(view), details)

    def _list_vms(self) -> Listing:
        """One listing of the subscription's VMs with their instance views (all pages)."""
        pages: list[str] = []

        def keep(response: PipelineResponse[Any, Any]) -> None:
            if response.http_response.status_code == 200:
                pages.append(response.http_response.text())

        self.list_calls += 1
        for _ in self.client.virtual_machines.list_all(status_only="true", raw_response_hook=keep):
            pass
        return parse_listing([json.loads(page) for page in pages])

    def _observe_operation(self, op: Entity, now: datetime) -> Observation:
        token = op.data.get("continuation_token")
        if not isinstance(token, str) or not token:
            # never submitted (or the submitter died before recording it): its time limit ends it
            return Observation(op.id, (), {"submitted": False}, None, now)
        try:
            target = Target.from_data(op.data)
            command = str(op.data.get("command"))
            start = begin(self.client, command, target, {}, self.resources)
            step = settle(
                start(
                    continuation_token=token, polling=StepPolling(self.settings.base_url, poll=True)
                )
            )
            if step.status is StepStatus.RUNNING:
                events = ("start",) if op.state == "PENDING" else ("progress",)
                return Observation(op.id, events, {"status": step.reported}, None, now)
            if step.status is StepStatus.CANCELED:
                return Observation(op.id, ("cancel",), {"status": step.reported}, None, now)
            if step.status is StepStatus.FAILED:
                payload = {"status": step.reported, "error": step.error}
                return Observation(op.id, ("fail",), payload, {"error": step.error}, now)
            if command == RUN_COMMAND:
                return self._run_command_outcome(op, target, now)
            return Observation(op.id, ("succeed",), {"status": step.reported}, None, now)
        except Exception as exc:
            return failure(op.id, exc)

    def _run_command_outcome(self, op: Entity, target: Target, now: datetime) -> Observation:
        """A finished run command: its output and exit code decide succeed or fail."""
        texts: list[str] = []

        def keep(response: PipelineResponse[Any, Any]) -> None:
            if response.http_response.status_code == 200:
                texts.append(response.http_response.text())

        assert target.run_command is not None
        self.client.virtual_machine_run_commands.get_by_virtual_machine(
            target.resource_group,
            target.vm_name,
            target.run_command,
            expand="instanceView",
            raw_response_hook=keep,
        )
        if not texts:
            raise ValueError("the run command's instance view was not returned")
        result: RunResult = read_run_result(json.loads(texts[-1]))
        event = "succeed" if result.succeeded else "fail"
        payload = {"exit_code": result.exit_code, "execution_state": result.execution_state}
        return Observation(op.id, (event,), payload, result.to_data(), now)

    # -- commands ----------------------------------------------------------------------------

    def execute(
        self, entity: Entity, command: str, arguments: Mapping[str, Any], now: datetime
    ) -> CommandResult:
        if entity.lifecycle == "host" and command in HOST_COMMANDS:
            if not isinstance(arguments.get("operation"), str):
                return self._with_operation(entity, command, arguments)
            # the host keeps which operation carries out its command: only that one's outcome
            # moves it (guard `current_operation`, fsm.cascade)
            return CommandResult(data={"operation": arguments["operation"]}, events=(command,))
        if entity.lifecycle == "operation" and command == "start":
            return self._submit(entity, arguments, now)
        raise CommandFailed(command, entity.id, f"azure has no {command!r} for {entity.lifecycle}")

    def _with_operation(
        self, host: Entity, command: str, arguments: Mapping[str, Any]
    ) -> CommandResult:
        """A host command on its own (a scheduled `start`): its operation entity is created
        with the host's transition, in one commit, and started (sent) right after it."""
        try:
            target = Target.from_data(host.data)
        except ValueError as exc:
            raise CommandFailed(command, host.id, f"the host names no VM: {exc}") from exc
        op_id = f"{host.id}/{command}-{uuid.uuid4().hex[:12]}"
        data = {"command": command, "host_id": host.id, "azure": target.to_data()}
        child = Child(NewEntity("operation", data, op_id, host.id), "start", dict(arguments))
        return CommandResult(
            data={"operation": op_id},
            events=(command,),
            payload={"operation": op_id},
            children=(child,),
        )

    def _submit(self, op: Entity, arguments: Mapping[str, Any], now: datetime) -> CommandResult:
        """Send the operation's ARM request; record its continuation token (and nothing secret)."""
        command = str(op.data.get("command"))
        try:
            target = Target.from_data(op.data)
            call_arguments = self._call_arguments(op, command, arguments)
            start = begin(self.client, command, target, call_arguments, self.resources)
        except (ValueError, TypeError) as exc:
            raise CommandFailed("start", op.id, str(exc)) from exc
        poller = self._with_throttle_retries(
            op.id, lambda: start(polling=StepPolling(self.settings.base_url, poll=False))
        )
        token = poller.continuation_token()
        data: dict[str, Any] = {"continuation_token": token, "submitted_at": now.isoformat()}
        described = describe_token(token)
        data.update({f"azure_{k}": v for k, v in described.items() if k != "retry_after"})
        if "retry_after" in described:
            data["retry_after"] = float(described["retry_after"])
        payload: dict[str, Any] = {"azure_command": command}
        secrets = arguments.get("secrets")
        if isinstance(secrets, Mapping):
            payload["environment"] = sorted(str(k) for k in secrets)
        events: tuple[str, ...] = ("start",)
        reported = str(poller.status())
        step = classify(reported)
        if step is StepStatus.SUCCEEDED and command != RUN_COMMAND:
            events = ("start", "succeed")  # a synchronous 200 (or 204): done already
            payload["status"] = reported
        elif step in (StepStatus.FAILED, StepStatus.CANCELED):
            events = ("start", "fail" if step is StepStatus.FAILED else "cancel")
            payload["status"] = reported
        return CommandResult(data=data, events=events, payload=payload)

    def _call_arguments(
        self, op: Entity, command: str, arguments: Mapping[str, Any]
    ) -> dict[str, Any]:
        azure = op.data.get("azure")
        location = (azure.get("location") if isinstance(azure, Mapping) else None) or (
            self.settings.location
        )
        if command == "provision" and Target.from_data(op.data).deployment:
            deployment = arguments.get("deployment")
            if not isinstance(deployment, Mapping):
                raise ValueError("a deployment needs its body (arguments['deployment'])")
            return {"deployment": dict(deployment)}
        if command == "provision":
            spec = arguments.get("spec")
            if not isinstance(spec, Mapping):
                raise ValueError("provision needs a VM spec (arguments['spec'])")
            spec = dict(spec)
            if location and not spec.get("location"):
                spec["location"] = location
            if not spec.get("location"):
                raise ValueError("the VM spec has no location (and none is configured)")
            return {"spec": spec}
        if command == RUN_COMMAND:
            script = arguments.get("script")
            if not isinstance(script, list) or not all(isinstance(s, str) for s in script):
                raise ValueError("a run command needs its script as a list of lines")
            secrets = arguments.get("secrets") or {}
            if not isinstance(secrets, Mapping):
                raise ValueError("the script's environment must be a mapping")
            if not location:
                raise ValueError("a run command needs the VM's location")
            timeout = int(arguments.get("timeout") or 3600)  # the service passes pollTimeout
            return {"body": run_command_body(script, secrets, location=location, timeout=timeout)}
        return {"force": bool(arguments.get("force", False))}

    def _with_throttle_retries(self, op_id: str, call: Callable[[], Any]) -> Any:
        """azure-core does not retry a POST answered 429; we do, honouring Retry-After."""
        attempts = self.settings.command_retries + 1
        for attempt in range(attempts):
            try:
                return call()
            except HttpResponseError as exc:
                if exc.status_code != 429 or attempt == attempts - 1:
                    raise CommandFailed("start", op_id, describe(exc)) from exc
                wait = retry_after(exc) or self.settings.retry_backoff_factor * 2**attempt
                self._sleep(min(wait, self.settings.max_retry_after))
            except AzureError as exc:
                raise CommandFailed("start", op_id, describe(exc)) from exc
        raise AssertionError("unreachable")  # pragma: no cover
