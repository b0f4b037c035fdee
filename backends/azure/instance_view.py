"""What one listing of VMs says about host entities: parsed defensively, mapped to events.

Azure reports a VM's state as instance-view status codes (`ProvisioningState/succeeded`,
`PowerState/running`). The power state is only trusted once provisioning has settled: while an
operation runs ARM says `updating` (or `creating`, `deleting`) and the power state may still
show the old value, so a transitional host waits for the operation to finish.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any

from fsm import Lifecycle
from fsm.lifecycles import builtin_definition

#: host states in which the VM must exist: missing from a complete listing means deleted
EXPECT_EXISTS = frozenset(
    {
        "RUNNING",
        "STARTING",
        "STOPPING",
        "STOPPED",
        "RESTARTING",
        "DEALLOCATING",
        "DEALLOCATED",
        "FAILED",
        "DEPROVISIONING",
    }
)
_POWER_EVENTS = {"running": "running", "stopped": "stopped", "deallocated": "deallocated"}
VmKey = tuple[str, str]  # (resource group, VM name), lower case: ARM ids are case-insensitive


#: host states entered by a command that an ARM operation is carrying out
IN_FLIGHT = frozenset(
    {"PROVISIONING", "STARTING", "STOPPING", "RESTARTING", "DEALLOCATING", "DEPROVISIONING"}
)
#: the host state a VM found outside the database is adopted in, by its power word
_ADOPT_BY_POWER = {
    "running": "RUNNING",
    "stopped": "STOPPED",
    "deallocated": "DEALLOCATED",
    "starting": "STARTING",
    "stopping": "STOPPING",
    "deallocating": "DEALLOCATING",
}


@dataclass(frozen=True)
class VmView:
    """The settled words of a VM's statuses (None: not reported), and when the provisioning
    state last changed (None: not reported)."""

    provisioning: str | None
    power: str | None
    changed_at: datetime | None = None


@dataclass(frozen=True)
class Listing:
    """The VMs one list call returned. `complete` is False when some entry was unreadable:
    then no VM can be declared missing, since the unreadable entry might have been it."""

    vms: dict[VmKey, VmView]
    complete: bool


def vm_key(resource_id: object) -> VmKey | None:
    """(resource group, name) from `/subscriptions/…/resourceGroups/RG/providers/
    Microsoft.Compute/virtualMachines/NAME`, or None for anything else."""
    if not isinstance(resource_id, str):
        return None
    parts = resource_id.strip("/").split("/")
    if len(parts) != 8:
        return None
    lowered = [p.lower() for p in parts]
    if (lowered[0], lowered[2], lowered[4], lowered[5], lowered[6]) != (
        "subscriptions",
        "resourcegroups",
        "providers",
        "microsoft.compute",
        "virtualmachines",
    ):
        return None
    if not parts[3] or not parts[7]:
        return None
    return lowered[3], lowered[7]


def read_view(entry: Mapping[str, Any]) -> VmView:
    """The provisioning and power words of one VM entry; unreadable parts read as None."""
    properties = entry.get("properties")
    properties = properties if isinstance(properties, Mapping) else {}
    view = properties.get("instanceView")
    if not isinstance(view, Mapping):
        view = entry.get("instanceView")  # some published examples put it at the top level
    statuses = view.get("statuses") if isinstance(view, Mapping) else None
    provisioning = power = None
    changed_at = None
    for status in statuses if isinstance(statuses, list) else ():
        code = status.get("code") if isinstance(status, Mapping) else None
        if not isinstance(code, str):
            continue
        assert isinstance(status, Mapping)
        kind, _, rest = code.partition("/")
        word = rest.split("/", 1)[0].strip().lower() or None
        if kind.lower() == "provisioningstate" and provisioning is None:
            provisioning = word
            changed_at = _time(status.get("time"))
        elif kind.lower() == "powerstate" and power is None:
            power = word
    if provisioning is None:
        declared = properties.get("provisioningState")
        if isinstance(declared, str) and declared.strip():
            provisioning = declared.strip().lower()
    return VmView(provisioning, power, changed_at)


def _time(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo is not None else None


def stale(view: VmView, host: Any) -> bool:
    """Whether a settled view predates the command the host is carrying out (ARM lists the old
    state for a while: a VM just restarted still says succeeded+running). Without a time, a
    restart cannot be told from its own outcome, so only the operation's result confirms it."""
    if host.state not in IN_FLIGHT or view.provisioning not in ("succeeded", "failed"):
        return False
    if view.changed_at is None:
        return bool(host.state == "RESTARTING")
    return bool(view.changed_at < host.state_entered_at)


def adoptable_state(view: VmView) -> str:
    """The host state to adopt a VM in, from what one GET showed."""
    if view.provisioning == "failed":
        return "FAILED"
    if view.provisioning == "creating":
        return "PROVISIONING"
    if view.provisioning == "deleting":
        return "DEPROVISIONING"
    return _ADOPT_BY_POWER.get(view.power or "", "FAILED")  # unknown: FAILED, then observed


def parse_listing(pages: Sequence[object]) -> Listing:
    """The VMs of every page. Raises ValueError when a page is not a listing at all."""
    vms: dict[VmKey, VmView] = {}
    complete = True
    for page in pages:
        values = page.get("value") if isinstance(page, Mapping) else None
        if not isinstance(values, list):
            raise ValueError("a page of the VM listing has no 'value' list")
        for entry in values:
            key = vm_key(entry.get("id")) if isinstance(entry, Mapping) else None
            if key is None:
                complete = False
                continue
            assert isinstance(entry, Mapping)
            vms[key] = read_view(entry)
    return Listing(vms, complete)


def host_events(view: VmView | None, state: str) -> tuple[str, ...]:
    """The host events a view implies for a host in `state` (None: the VM is not listed)."""
    if state == "NEW":
        return ()  # not ours yet: provisioning starts with a command, never an observation
    if view is None:
        return ("deleted",) if state in EXPECT_EXISTS else ()
    if view.provisioning == "failed":
        events: tuple[str, ...] = ("failed",)
    elif view.provisioning not in (None, "succeeded"):
        return ()  # an operation is running on the VM: its power state is not settled
    else:
        event = _POWER_EVENTS.get(view.power or "")
        events = (event,) if event else ()
    return tuple(e for e in events if _allowed(state, e))


@cache
def _host_lifecycle() -> Lifecycle:
    return Lifecycle(builtin_definition("host"))


def _allowed(state: str, event: str) -> bool:
    """Events the host lifecycle would refuse are not reported (they would only be logged)."""
    lifecycle = _host_lifecycle()
    return state in lifecycle.states and lifecycle.candidates(state, event) is not None
