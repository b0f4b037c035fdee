"""The fake ARM over HTTPS: the Microsoft.Compute REST subset the Azure backend uses.

Long-running operations behave like ARM's: 201/202 with `Azure-AsyncOperation` (and, for
POST and DELETE, `Location`) headers and `Retry-After`; the operation resource says InProgress,
then Succeeded, Failed or Canceled; the Location monitor answers 202 until the operation is
done. What the REST examples also document is served on demand (`World` knobs): a synchronous
200 for VM actions, 200/204 for a DELETE, 200/201/202 for a Run Command PUT. A Run Command on
a VM that is not running is refused (409), as Azure refuses it. Payloads follow Azure's
published REST examples. ARM template deployments are in `deployments`.
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.fake_arm import kernel
from tests.fake_arm.deployments import deployment_resource
from tests.fake_arm.files import FakeFiles
from tests.fake_arm.proxy import ForwardProxy
from tests.fake_arm.resources import RunCommand, Vm
from tests.fake_arm.responses import Response, error, token
from tests.fake_arm.tls import TlsFiles, tls_server
from tests.fake_arm.world import Operation, Request, World, size_of

API_VERSION = "2026-04-01"
_SUB = r"/subscriptions/(?P<sub>[^/]+)"
_RG = _SUB + r"/resourceGroups/(?P<rg>[^/]+)"
_VMS = _RG + r"/providers/Microsoft\.Compute/virtualMachines"
_DEPLOYMENTS = _RG + r"/providers/Microsoft\.Resources/deployments"
ROUTES: list[tuple[str, re.Pattern[str], str]] = [
    ("GET", re.compile(_SUB + r"/providers/Microsoft\.Compute/virtualMachines$", re.I), "list_all"),
    ("GET", re.compile(_VMS + r"$", re.I), "list_rg"),
    ("PUT", re.compile(_VMS + r"/(?P<vm>[^/]+)$", re.I), "put_vm"),
    ("GET", re.compile(_VMS + r"/(?P<vm>[^/]+)$", re.I), "get_vm"),
    ("DELETE", re.compile(_VMS + r"/(?P<vm>[^/]+)$", re.I), "delete_vm"),
    (
        "POST",
        re.compile(_VMS + r"/(?P<vm>[^/]+)/(?P<action>start|powerOff|restart|deallocate)$", re.I),
        "vm_action",
    ),
    ("PUT", re.compile(_VMS + r"/(?P<vm>[^/]+)/runCommands/(?P<rc>[^/]+)$", re.I), "put_rc"),
    ("GET", re.compile(_VMS + r"/(?P<vm>[^/]+)/runCommands/(?P<rc>[^/]+)$", re.I), "get_rc"),
    (
        "GET",
        re.compile(
            _SUB + r"/providers/Microsoft\.Compute/locations/[^/]+/operations/(?P<op>[^/]+)$"
        ),
        "get_operation",
    ),
    ("PUT", re.compile(_DEPLOYMENTS + r"/(?P<vm>[^/]+)$", re.I), "put_deployment"),
    ("GET", re.compile(_DEPLOYMENTS + r"/(?P<vm>[^/]+)$", re.I), "get_deployment"),
    (
        "GET",
        re.compile(_DEPLOYMENTS + r"/[^/]+/operationStatuses/(?P<op>[^/]+)$", re.I),
        "get_operation",
    ),
]


class FakeArm:
    """Serve `World` over TLS on 127.0.0.1 (an ephemeral port) in a daemon thread, with a
    managed-identity token endpoint (App Service style: `IDENTITY_ENDPOINT` and
    `IDENTITY_HEADER`, what azure-identity's DefaultAzureCredential reads), the fake Azure
    Files and the proxy that reaches it (`client_environment()` says how a client finds them).
    """

    def __init__(self, tls: TlsFiles, *, subscription: str, token: str) -> None:
        self.world = World(subscription, token)
        self.tls = tls
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                response = fake.dispatch(self.command, self.path, dict(self.headers), raw)
                if response.status == 0:  # an injected dropped connection: no answer at all
                    self.close_connection = True
                    return
                if isinstance(response.body, bytes):
                    payload = response.body
                elif response.body is None:
                    payload = b""
                else:
                    payload = json.dumps(response.body).encode()
                self.send_response(response.status)
                if payload:
                    self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(payload)))
                self.send_header("x-ms-request-id", str(uuid.uuid4()))
                for name, value in response.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_PUT = do_POST = do_DELETE = _handle

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = tls_server(Handler, tls)
        self.port = self.server.server_address[1]
        self.base_url = f"https://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.files = FakeFiles(self.world.files, tls.files)
        kernel.image()  # the VMs' kernel files, read once per process before any VM boots
        self.proxy = ForwardProxy(self.files.port)

    def start(self) -> FakeArm:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.proxy.stop()
        self.files.stop()
        self.world.shutdown()

    def client_environment(self) -> dict[str, str]:
        """The environment of a client that authenticates with DefaultAzureCredential (the
        managed identity endpoint) and reaches Azure Files through the proxy; ARM itself is
        addressed by its base URL (`baseUrl` / `caBundle`)."""
        return {
            "IDENTITY_ENDPOINT": f"{self.base_url}/msi/token",
            "IDENTITY_HEADER": self.world.identity_header,
            "HTTPS_PROXY": self.proxy.url,
            "NO_PROXY": "127.0.0.1,localhost",
            "REQUESTS_CA_BUNDLE": str(self.tls.ca),
        }

    # -- dispatch ------------------------------------------------------------------------------

    def dispatch(self, method: str, target: str, headers: dict[str, str], raw: bytes) -> Response:
        world = self.world
        url = urlsplit(target)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        with world.lock:
            world.requests.append(Request(method, url.path, url.query, time.monotonic()))
        if method == "GET" and url.path == "/msi/token":
            return token(self.world, headers, query)
        auth = {k.lower(): v for k, v in headers.items()}.get("authorization", "")
        if auth != f"Bearer {world.token}":
            with world.lock:
                world.unauthorized += 1
            return error(401, "AuthenticationFailed", "missing or wrong bearer token")
        fault = world.take_fault(method, url.path)
        if fault is not None:
            body = fault.body
            if body is None and fault.status >= 400:
                body = {"error": {"code": f"Injected{fault.status}", "message": "injected fault"}}
            return Response(fault.status, body, dict(fault.headers))
        if "api-version" not in query:
            return error(400, "MissingApiVersionParameter", "The api-version is required")
        world.advance()
        for route_method, pattern, name in ROUTES:
            match = pattern.match(url.path)
            if route_method == method and match:
                if match.group("sub") != world.subscription:
                    return error(404, "SubscriptionNotFound", "unknown subscription")
                body = json.loads(raw) if raw else None
                handler = getattr(self, f"_{name}")
                with world.lock:
                    result: Response = handler(match.groupdict(), query, body)
                    return result
        return error(404, "NotFound", f"no route for {method} {url.path}")

    # -- helpers -------------------------------------------------------------------------------

    def _operation_headers(self, op: Operation, *, location: bool) -> dict[str, str]:
        sub = f"{self.base_url}/subscriptions/{self.world.subscription}"
        if op.kind == "deployment":
            where = (
                f"/resourceGroups/{op.resource_group}/providers/Microsoft.Resources"
                f"/deployments/{op.vm}/operationStatuses/{op.id}"
            )
        else:
            where = f"/providers/Microsoft.Compute/locations/{op.location}/operations/{op.id}"
        path = f"{sub}{where}?p={uuid.uuid4()}&api-version={API_VERSION}"
        headers = {"Azure-AsyncOperation": path, "Retry-After": "1"}
        if location:
            headers["Location"] = path + "&monitor=true"
        return headers

    def _vm(self, groups: dict[str, str]) -> Vm | None:
        return self.world.vms.get((groups["rg"].lower(), groups["vm"].lower()))

    def _page(self, items: list[dict[str, Any]], query: dict[str, str], path: str) -> Response:
        start = int(query.get("$skiptoken", "0") or 0)
        size = self.world.page_size
        page: dict[str, Any] = {"value": items[start : start + size]}
        if start + size < len(items):
            rest = "&".join(f"{k}={v}" for k, v in query.items() if k != "$skiptoken")
            page["nextLink"] = f"{self.base_url}{path}?{rest}&$skiptoken={start + size}"
        return Response(200, page)

    # -- routes --------------------------------------------------------------------------------

    def _list_all(self, groups: dict[str, str], query: dict[str, str], body: Any) -> Response:
        status_only = query.get("statusOnly", "").lower() == "true"
        items = [
            vm.resource(self.world.subscription, instance_view=status_only)
            for vm in self.world.vms.values()
        ]
        path = (
            f"/subscriptions/{self.world.subscription}/providers/Microsoft.Compute/virtualMachines"
        )
        return self._page(items, query, path)

    def _list_rg(self, groups: dict[str, str], query: dict[str, str], body: Any) -> Response:
        expand = query.get("$expand", "") == "instanceView"
        items = [
            vm.resource(self.world.subscription, instance_view=expand)
            for vm in self.world.vms.values()
            if vm.resource_group.lower() == groups["rg"].lower()
        ]
        path = (
            f"/subscriptions/{self.world.subscription}/resourceGroups/{groups['rg']}"
            "/providers/Microsoft.Compute/virtualMachines"
        )
        return self._page(items, query, path)

    def _put_vm(self, groups: dict[str, str], query: dict[str, str], body: Any) -> Response:
        if not isinstance(body, dict) or not isinstance(body.get("location"), str):
            return error(400, "InvalidRequestContent", "location is required")
        rg, name = groups["rg"], groups["vm"]
        if self.world.busy(rg, name):
            return error(409, "OperationNotAllowed", "another operation is in progress")
        self.world.vm_bodies.append(json.loads(json.dumps(body)))
        vm = self._vm(groups)
        properties = json.loads(json.dumps(body.get("properties") or {}))
        properties.get("osProfile", {}).pop("adminPassword", None)  # never returned by ARM
        created = vm is None
        resize = vm is not None and "hardwareProfile" in properties
        resize = resize and size_of(vm.properties) != size_of(properties)
        if vm is None:
            vm = Vm(rg, name, body["location"], properties)
            self.world.vms[(rg.lower(), name.lower())] = vm
        else:
            vm.properties.update(properties)
        op = self.world.start_operation("create" if created else "update", rg, name, vm.location)
        op.resize = resize
        return Response(
            201 if created else 200,
            vm.resource(self.world.subscription, instance_view=False),
            self._operation_headers(op, location=False),
        )

    def _get_vm(self, groups: dict[str, str], query: dict[str, str], body: Any) -> Response:
        vm = self._vm(groups)
        if vm is None:
            return error(404, "ResourceNotFound", f"The Resource '{groups['vm']}' was not found.")
        expand = "instanceView" in query.get("$expand", "")
        return Response(200, vm.resource(self.world.subscription, instance_view=expand))

    def _delete_vm(self, groups: dict[str, str], query: dict[str, str], body: Any) -> Response:
        vm = self._vm(groups)
        if vm is None:
            return Response(204)
        if self.world.busy(groups["rg"], groups["vm"]):
            return error(409, "OperationNotAllowed", "another operation is in progress")
        op = self.world.start_operation("delete", groups["rg"], groups["vm"], vm.location)
        if self.world.delete_status in (200, 204):  # deleted synchronously
            self.world.finish_now(op)
            return Response(self.world.delete_status)
        return Response(202, None, self._operation_headers(op, location=True))

    def _vm_action(self, groups: dict[str, str], query: dict[str, str], body: Any) -> Response:
        vm = self._vm(groups)
        if vm is None:
            return error(404, "ResourceNotFound", f"The Resource '{groups['vm']}' was not found.")
        if self.world.busy(groups["rg"], groups["vm"]):
            return error(409, "OperationNotAllowed", "another operation is in progress")
        action = {a.lower(): a for a in ("start", "powerOff", "restart", "deallocate")}[
            groups["action"].lower()
        ]
        op = self.world.start_operation(action, groups["rg"], groups["vm"], vm.location)
        if action == "powerOff" and query.get("skipShutdown", "").lower() == "true":
            op.duration /= 2  # skipping the graceful shutdown is quicker
            op.graceful = False
        if action in self.world.sync_actions:  # the REST examples' 200: done synchronously
            self.world.finish_now(op)
            return Response(200, None)
        return Response(202, None, self._operation_headers(op, location=True))

    def _put_rc(self, groups: dict[str, str], query: dict[str, str], body: Any) -> Response:
        vm = self._vm(groups)
        if vm is None:
            return error(404, "ResourceNotFound", f"The Resource '{groups['vm']}' was not found.")
        properties = body.get("properties") if isinstance(body, dict) else None
        if not isinstance(properties, dict) or not isinstance(body.get("location"), str):
            return error(400, "InvalidRequestContent", "location and properties are required")
        if vm.power != "running" or vm.provisioning.lower() not in ("succeeded", "updating"):
            return error(
                409,
                "OperationNotAllowed",
                "The operation requires the VM to be running (or set to run).",
            )
        self.world.run_command_bodies.append(body)
        params = properties.get("parameters") or []
        protected = properties.get("protectedParameters") or []
        env = {str(p["name"]): str(p.get("value", "")) for p in params + protected}
        script = str((properties.get("source") or {}).get("script", ""))
        key = (groups["rg"].lower(), groups["vm"].lower(), groups["rc"].lower())
        created = key not in self.world.run_commands
        rc = RunCommand(
            groups["rg"],
            groups["vm"],
            groups["rc"],
            body["location"],
            script,
            [str(p["name"]) for p in params],
            [str(p["name"]) for p in protected],
        )
        timeout = properties.get("timeoutInSeconds")
        if isinstance(timeout, int) and not isinstance(timeout, bool) and timeout > 0:
            rc.timeout = timeout
        self.world.run_commands[key] = rc
        op = self.world.start_operation(
            "runCommand", groups["rg"], groups["vm"], body["location"], run_command=rc.name
        )
        if op.outcome == "Succeeded":
            names = rc.parameter_names + rc.protected_names
            self.world.run_script(op, rc, {**{n: "" for n in names}, **env})
        status = self.world.run_command_status or (201 if created else 200)
        if status == 202:  # the REST example's Accepted: no body, both LRO headers
            return Response(202, None, self._operation_headers(op, location=True))
        return Response(
            status,
            rc.resource(self.world.subscription, instance_view=False),
            self._operation_headers(op, location=False),
        )

    def _put_deployment(self, groups: dict[str, str], query: dict[str, str], body: Any) -> Response:
        properties = body.get("properties") if isinstance(body, dict) else None
        template = properties.get("template") if isinstance(properties, dict) else None
        if not isinstance(template, dict):
            return error(400, "InvalidTemplate", "properties.template is required")
        rg, name = groups["rg"], groups["vm"]
        key = (rg.lower(), name.lower())
        created = key not in self.world.deployments
        self.world.deployments[key] = {
            "template": template,
            "parameters": dict(properties.get("parameters") or {}),
            "state": "Accepted",
        }
        self.world.deployment_bodies.append(body)
        op = self.world.start_operation("deployment", rg, name, "westus")
        resource = deployment_resource(
            self.world.subscription, rg, name, self.world.deployments[key]
        )
        return Response(
            201 if created else 200, resource, self._operation_headers(op, location=False)
        )

    def _get_deployment(self, groups: dict[str, str], query: dict[str, str], body: Any) -> Response:
        rg, name = groups["rg"], groups["vm"]
        record = self.world.deployments.get((rg.lower(), name.lower()))
        if record is None:
            return error(404, "DeploymentNotFound", f"Deployment '{name}' could not be found.")
        return Response(200, deployment_resource(self.world.subscription, rg, name, record))

    def _get_rc(self, groups: dict[str, str], query: dict[str, str], body: Any) -> Response:
        key = (groups["rg"].lower(), groups["vm"].lower(), groups["rc"].lower())
        rc = self.world.run_commands.get(key)
        if rc is None:
            return error(404, "ResourceNotFound", f"The Resource '{groups['rc']}' was not found.")
        expand = query.get("$expand", "") == "instanceView"
        return Response(200, rc.resource(self.world.subscription, instance_view=expand))

    def _get_operation(self, groups: dict[str, str], query: dict[str, str], body: Any) -> Response:
        op = self.world.operations.get(groups["op"])
        if op is None:
            return error(404, "NotFound", "unknown operation")
        op.polls += 1
        if query.get("monitor") == "true":
            if not op.done:
                return Response(202, None, self._operation_headers(op, location=True))
            return Response(200, None)
        status: dict[str, Any] = {
            "startTime": "2026-01-01T00:00:00+00:00",
            "status": op.outcome if op.done else "InProgress",
            "name": op.id,
        }
        if op.done:
            status["endTime"] = "2026-01-01T00:00:01+00:00"
            if op.error:
                status["error"] = op.error
        return Response(200, status)
