"""ARM template deployments (Microsoft.Resources/deployments), as the fake ARM serves them.

A PUT answers 201 with the deployment (provisioningState Accepted) and an
`Azure-AsyncOperation` header; the operation status resource says Running, then Succeeded,
when the template's VMs exist. Only what the tests' templates need is evaluated: resource
names and VM properties given as literals or as `[parameters('name')]`; anything else falls
back to the parameter's default or is skipped.
"""

from __future__ import annotations

import re
from typing import Any

_PARAMETER = re.compile(r"^\[parameters\('([A-Za-z0-9_]+)'\)\]$")


def parameter_values(template: dict[str, Any], sent: dict[str, Any]) -> dict[str, Any]:
    """The template's parameter values: what was sent, else a literal default."""
    values: dict[str, Any] = {}
    for name, spec in (template.get("parameters") or {}).items():
        default = spec.get("defaultValue") if isinstance(spec, dict) else None
        if isinstance(default, str) and default.startswith("["):
            default = None  # an expression (resourceGroup().location, ...): not evaluated
        if default is not None:
            values[name] = default
    for name, wrapped in (sent or {}).items():
        if isinstance(wrapped, dict) and "value" in wrapped:
            values[name] = wrapped["value"]
    return values


def evaluate(value: Any, parameters: dict[str, Any]) -> Any:
    """A literal, or `[parameters('x')]`; None for any other expression."""
    if isinstance(value, str) and value.startswith("["):
        match = _PARAMETER.match(value)
        return parameters.get(match.group(1)) if match else None
    return value


def template_vms(
    template: dict[str, Any], parameters: dict[str, Any], default_location: str
) -> list[tuple[str, str, dict[str, Any]]]:
    """(name, location, properties) of every VM the template declares."""
    found = []
    for resource in template.get("resources") or []:
        if not isinstance(resource, dict):
            continue
        if str(resource.get("type", "")).lower() != "microsoft.compute/virtualmachines":
            continue
        name = evaluate(resource.get("name"), parameters)
        if not isinstance(name, str) or not name:
            continue
        location = evaluate(resource.get("location"), parameters) or default_location
        hardware = (resource.get("properties") or {}).get("hardwareProfile") or {}
        size = evaluate(hardware.get("vmSize"), parameters)
        properties = {"hardwareProfile": {"vmSize": size}} if size else {}
        found.append((name, str(location), properties))
    return found


def deployment_resource(
    subscription: str, rg: str, name: str, record: dict[str, Any]
) -> dict[str, Any]:
    secure = {
        k
        for k, spec in (record["template"].get("parameters") or {}).items()
        if isinstance(spec, dict) and str(spec.get("type", "")).lower().startswith("secure")
    }
    return {
        "id": (
            f"/subscriptions/{subscription}/resourceGroups/{rg}"
            f"/providers/Microsoft.Resources/deployments/{name}"
        ),
        "name": name,
        "type": "Microsoft.Resources/deployments",
        "properties": {
            "provisioningState": record["state"],
            "mode": "Incremental",
            # ARM never returns secure parameters
            "parameters": {
                k: ({"type": "SecureString"} if k in secure else v)
                for k, v in record["parameters"].items()
            },
            "outputs": {},
        },
    }
