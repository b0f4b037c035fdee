"""Fuzzed Azure answers: no exception escapes the backend, and garbage changes no state.

Two levels: the pure mapping from listings to host events, with any JSON; and the whole path
(real SDK, HTTP over TLS, continuation-token resume) with fuzzed list and operation-status
bodies served by the fake ARM.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backends.azure.instance_view import host_events, parse_listing, read_view, vm_key
from backends.hostctl import Progress
from tests.azure_support import RG, SUBSCRIPTION, Rig, make_rig
from tests.fake_arm import FakeArm

pytest_plugins = ["tests.azure_fixtures"]  # the fake ARM's fixtures

HOST_STATES = [
    "NEW", "PROVISIONING", "RUNNING", "STARTING", "STOPPING", "STOPPED", "RESTARTING",
    "DEALLOCATING", "DEALLOCATED", "DEPROVISIONING", "FAILED",
]  # fmt: skip
OUR_ID = (
    f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{RG}"
    "/providers/Microsoft.Compute/virtualMachines/vm1"
)
WORDS = [
    "running", "stopped", "deallocated", "starting", "stopping", "deallocating", "succeeded",
    "failed", "creating", "updating", "deleting", "Running", "weird", "", "/", "running/x",
]  # fmt: skip

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=12,
)
codes = st.one_of(
    st.sampled_from(["ProvisioningState", "PowerState", "provisioningstate", "Other"]).flatmap(
        lambda kind: st.sampled_from(WORDS).map(lambda word: f"{kind}/{word}")
    ),
    json_values,
)
statuses = st.lists(
    st.one_of(st.fixed_dictionaries({"code": codes}, optional={"level": json_values}), json_values),
    max_size=4,
)
instance_views = st.one_of(json_values, st.fixed_dictionaries({"statuses": statuses}))
our_entries = st.fixed_dictionaries(
    {"id": st.just(OUR_ID)},
    optional={
        "properties": st.one_of(
            json_values,
            st.fixed_dictionaries(
                {"instanceView": instance_views},
                optional={"provisioningState": st.one_of(st.sampled_from(WORDS), json_values)},
            ),
        ),
        "instanceView": instance_views,
        "name": json_values,
    },
)
pages = st.one_of(
    json_values,  # not a listing at all
    st.fixed_dictionaries({"value": st.lists(st.one_of(our_entries, json_values), max_size=4)}),
)
SETTLED_EVENTS = {"running", "stopped", "deallocated", "failed", "deleted"}


@given(page=pages, state=st.sampled_from(HOST_STATES))
def test_mapping_never_raises_and_only_reports_what_it_read(page: Any, state: str) -> None:
    try:
        listing = parse_listing([page])
    except ValueError:
        return  # not a listing: the backend turns this into a failed observation
    view = listing.vms.get((RG.lower(), "vm1"))
    events = host_events(view, state)
    assert set(events) <= SETTLED_EVENTS and len(events) <= 1
    if view is None:
        assert events in ((), ("deleted",))
        return
    if events == ("failed",):
        assert view.provisioning == "failed"
    elif events:
        assert view.provisioning in (None, "succeeded") and view.power == events[0]


@given(entry=json_values)
def test_read_view_and_vm_key_take_anything(entry: Any) -> None:
    vm_key(entry)
    if isinstance(entry, dict):
        read_view(entry)


# -- through the real SDK over HTTPS -----------------------------------------------------------


@pytest.fixture
def fuzz_rig(arm: FakeArm, tmp_path: Path) -> Iterator[Rig]:
    made = make_rig(arm, f"sqlite:///{tmp_path}/fuzz.db", retry_total=0)
    yield made
    made.backend.close()
    made.engine.close()


FUZZ = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
status_bodies = st.one_of(
    json_values,
    st.fixed_dictionaries(
        {},
        optional={
            "status": st.one_of(
                st.sampled_from(["InProgress", "Weird", "", "succeeded "]), json_values
            ),
            "name": json_values,
            "error": json_values,
        },
    ),
)
raw_bodies = st.one_of(
    status_bodies, st.binary(max_size=40), st.just(b"{"), st.just(b"null"), st.just(b"")
)


@FUZZ
@given(body=st.one_of(pages, st.binary(max_size=40)))
def test_fuzzed_listings_over_https(fuzz_rig: Rig, body: Any) -> None:
    rig = fuzz_rig
    host = rig.engine.get(_running_host(rig))
    rig.arm.world.clear_faults()
    rig.arm.world.inject(
        200, method="GET", path=r"/providers/Microsoft\.Compute/virtualMachines$", body=body
    )
    [seen] = rig.backend.observe([host], datetime.now(UTC))
    assert seen.entity_id == host.id
    if seen.failure is None:
        assert set(seen.events) <= SETTLED_EVENTS
        if seen.events == ("deleted",):  # only a well-formed listing without our VM says so
            assert isinstance(body, dict) and all(
                isinstance(e, dict) and vm_key(e.get("id")) for e in body["value"]
            )


@FUZZ
@given(body=raw_bodies)
def test_fuzzed_operation_status_over_https(fuzz_rig: Rig, body: Any) -> None:
    rig = fuzz_rig
    op = rig.engine.get(_running_operation(rig))
    rig.arm.world.clear_faults()
    rig.arm.world.inject(200, method="GET", path=r"/operations/", body=body)
    [seen] = rig.backend.observe([op], datetime.now(UTC))
    status = body.get("status") if isinstance(body, dict) else None
    word = status.lower() if isinstance(status, str) else None  # exactly as azure-core reads it
    if seen.failure is not None:
        assert seen.events == ()
    elif word == "failed":
        assert seen.events == ("fail",)
    elif word in ("canceled", "cancelled"):
        assert seen.events == ("cancel",)
    elif word == "succeeded":  # a well-formed answer, not garbage
        assert seen.events == ("succeed",)
    else:  # garbage or still running: no state change
        assert seen.events == ("progress",) and word != "succeeded"
    assert rig.state(op.id) == "RUNNING"  # observe never writes


def _running_host(rig: Rig) -> str:
    host = rig.hosts.current_host(f"azure:{RG}/vm1")
    if host is None or host.state != "RUNNING":
        host = rig.host("vm1")
        assert rig.wait(rig.submit(host.id, "provision")) is Progress.SUCCEEDED
    return host.id


def _running_operation(rig: Rig) -> str:
    for op in rig.engine.list_entities(lifecycle="operation", state="RUNNING"):
        return op.id
    host = _running_host(rig)
    rig.arm.world.durations["restart"] = 3600.0  # stays in flight for the whole test
    ticket = rig.submit(host, "restart")
    assert ticket.operation_id is not None
    return ticket.operation_id
