"""The fake ARM's responses, and its managed-identity token endpoint (App Service style, as
azure-identity's DefaultAzureCredential finds it through IDENTITY_ENDPOINT / IDENTITY_HEADER)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from tests.fake_arm.world import World

ARM_RESOURCE = "https://management.azure.com"
STORAGE_RESOURCE = "https://storage.azure.com"


@dataclass
class Response:
    status: int
    body: Any = None  # JSON-able, or bytes sent as they are
    headers: dict[str, str] = field(default_factory=dict)


def error(status: int, code: str, message: str) -> Response:
    return Response(status, {"error": {"code": code, "message": message}})


def token(world: World, headers: dict[str, str], query: dict[str, str]) -> Response:
    """A managed identity token, as App Service's endpoint (api-version 2019-08-01) gives
    one: for ARM the bearer token the fake ARM takes, for storage the fake Files' token."""
    secret = {k.lower(): v for k, v in headers.items()}.get("x-identity-header")
    if secret != world.identity_header:
        return error(401, "Unauthorized", "X-IDENTITY-HEADER is missing or wrong")
    resource = query.get("resource", "").removesuffix("/.default").rstrip("/")
    tokens = {ARM_RESOURCE: world.token, STORAGE_RESOURCE: world.files.token}
    if resource not in tokens:
        return error(400, "InvalidResource", f"no token for resource {resource!r}")
    with world.lock:
        world.token_requests.append(resource)
    return Response(
        200,
        {
            "access_token": tokens[resource],
            "expires_on": str(int(time.time()) + 3600),
            "resource": resource,
            "token_type": "Bearer",
            "client_id": "00000000-0000-0000-0000-0000000c1e47",
        },
    )
