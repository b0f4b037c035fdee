"""Slurm states and the parsers of squeue / sacct / scontrol: the mapping is complete, real
output parses, and arbitrary text never raises out of the backend nor changes a state."""

from __future__ import annotations

import contextlib
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backends.slurm import Identity, SlurmBackend
from backends.slurm.fake import FakeSlurm
from backends.slurm.parse import (
    ParseError,
    first_node,
    parse_ports,
    parse_sacct,
    parse_scontrol,
    parse_squeue,
)
from backends.slurm.states import SLURM_STATES, Phase, events_for, normalize, phase_of
from fsm import Entity
from fsm.lifecycles import builtin_definition

# the list in shared/seeds/README.md, kept here too so the test runs without shared/
SEED_STATES = [
    *("PENDING", "RUNNING", "SUSPENDED", "COMPLETING", "COMPLETED", "CONFIGURING"),
    *("CANCELLED", "FAILED", "TIMEOUT", "PREEMPTED", "NODE_FAIL", "BOOT_FAIL", "DEADLINE"),
    *("OUT_OF_MEMORY", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESIZING", "REVOKED"),
    *("SIGNALING", "SPECIAL_EXIT", "STAGE_OUT", "STOPPED"),
]
SEEDS_README = Path(__file__).resolve().parents[2] / "shared" / "seeds" / "README.md"

# recorded on the real single-node cluster (Slurm 22.05)
REAL_SQUEUE = """\
3|FAILED|vm|2026-12-02T03:18:05|2026-12-02T03:18:05|0|0|svc.fsmaaaa|NonZeroExitCode|
4|PENDING||N/A|2026-12-02T03:18:05|0|0|we|ird name|JobHeldUser|
5|RUNNING|vm|2026-12-02T03:18:05|2026-12-02T03:18:05|1|0|svc.fsmcccc|None|
"""
REAL_SCONTROL = (
    "JobId=2 JobName=wrap UserId=root(0) GroupId=root(0) MCS_label=N/A Priority=4294901758 "
    "Nice=0 Account=(null) QOS=(null) JobState=FAILED Reason=NonZeroExitCode Dependency=(null) "
    "Requeue=1 Restarts=0 BatchFlag=1 Reboot=0 ExitCode=3:0 RunTime=00:00:00 "
    "TimeLimit=UNLIMITED TimeMin=N/A SubmitTime=2026-11-23T00:49:28 StartTime=2026-11-23T00:49:28 "
    "EndTime=2026-11-23T00:49:28 Deadline=N/A Partition=debug AllocNode:Sid=localhost:18126 "
    "ReqNodeList=(null) ExcNodeList=(null) NodeList=vm BatchHost=vm NumNodes=1 NumCPUs=1 "
    "TRES=cpu=1,node=1,billing=1 Command=(null) WorkDir=/tmp StdErr=/tmp/t2.out StdIn=/dev/null "
    "StdOut=/tmp/t2.out Power= \n"
)


def test_every_documented_state_is_mapped() -> None:
    assert set(SEED_STATES) <= set(SLURM_STATES)
    if SEEDS_README.exists():
        text = SEEDS_README.read_text()
        listed = text.split("Slurm job states:", 1)[1].split("`squeue`", 1)[0]
        assert set(re.findall(r"\b[A-Z][A-Z_]{3,}\b", listed)) <= set(SLURM_STATES)


def test_every_event_is_one_the_service_lifecycle_knows() -> None:
    triggers = set(builtin_definition("service").triggers)
    for phase in Phase:
        for ping in (None, True, False):
            assert set(events_for(phase, ping)) <= triggers


@pytest.mark.parametrize(
    ("state", "events"),
    [
        ("PENDING", ("job_pending",)),
        ("CONFIGURING", ("job_pending",)),
        ("REQUEUED", ("job_requeued",)),
        ("REQUEUE_HOLD", ("job_requeued",)),
        ("REQUEUE_FED", ("job_requeued",)),
        ("SUSPENDED", ("job_requeued",)),
        ("PREEMPTED", ("job_requeued",)),
        ("STOPPED", ("job_requeued",)),
        ("SPECIAL_EXIT", ("job_requeued",)),
        ("RUNNING", ("job_running", "ping_ok")),
        ("RESIZING", ("job_running", "ping_ok")),
        ("SIGNALING", ("job_running", "ping_ok")),
        ("COMPLETING", ()),
        ("STAGE_OUT", ()),
        ("COMPLETED", ("job_failed",)),
        ("CANCELLED", ("job_cancelled",)),
        ("CANCELLED by 1000", ("job_cancelled",)),
        ("CANCELLED+", ("job_cancelled",)),
        ("FAILED", ("job_failed",)),
        ("NODE_FAIL", ("job_failed",)),
        ("BOOT_FAIL", ("job_failed",)),
        ("OUT_OF_MEMORY", ("job_failed",)),
        ("REVOKED", ("job_failed",)),
        ("TIMEOUT", ("job_timeout",)),
        ("DEADLINE", ("job_timeout",)),
    ],
)
def test_state_to_events(state: str, events: tuple[str, ...]) -> None:
    phase = phase_of(state)
    assert phase is not None
    assert events_for(phase, True) == events


def test_unknown_and_malformed_states() -> None:
    assert phase_of("FUTURE_STATE") is None
    assert normalize("FUTURE_STATE") == "FUTURE_STATE"
    assert normalize("running") is None
    assert normalize("CANCELLED by x") is None


def test_real_output_parses() -> None:
    jobs = parse_squeue(REAL_SQUEUE)
    assert {k: (j.state, j.node, j.name, j.uid) for k, j in jobs.items()} == {
        "5": ("RUNNING", "vm", "svc.fsmcccc", 0),
        "3": ("FAILED", "vm", "svc.fsmaaaa", 0),
        "4": ("PENDING", None, "we", 0),  # a name with `|`: never one of ours (they have none)
    }
    assert (jobs["5"].restarts, jobs["5"].submit) == (1, "2026-12-02T03:18:05")
    assert jobs["4"].reason == "ird name|JobHeldUser" and jobs["3"].reason == "NonZeroExitCode"
    scontrol = parse_scontrol(REAL_SCONTROL)["2"]
    assert (scontrol.state, scontrol.exit_code, scontrol.node) == ("FAILED", "3:0", "vm")
    assert (scontrol.uid, scontrol.name, scontrol.submit) == (0, "wrap", "2026-11-23T00:49:28")
    assert parse_scontrol("No jobs in the system\n") == {}
    sacct = parse_sacct(
        "7|CANCELLED by 0|0:15|vm|0|2026-12-02T03:18:05|svc.fsmx\n"
        "7.batch|CANCELLED|0:15|vm|0|2026-12-02T03:18:05|batch\n"
        "7|COMPLETED|0:0|vm|1001|2026-12-02T04:00:00|theirs|odd\n"
        "8|TIMEOUT|0:0|n1|0|2026-12-02T03:18:05|svc.fsmy\n"
    )
    assert [(r.job_id, r.state, r.uid, r.name) for r in sacct] == [
        ("7", "CANCELLED", 0, "svc.fsmx"),
        ("7", "COMPLETED", 1001, "theirs"),  # a recycled id: both records are kept
        ("8", "TIMEOUT", 0, "svc.fsmy"),
    ]
    assert parse_ports("/h/.fsm/jobs/7.0.fsmx.port:31000\nbad\n/x:99999\n") == {
        "/h/.fsm/jobs/7.0.fsmx.port": 31000
    }
    assert first_node("gpu[03-05,07]") == "gpu03"
    assert first_node("a,b") == "a"
    assert first_node("(null)") is None


@pytest.mark.parametrize(
    "text",
    [
        "1|RUNNING|vm|N/A|N/A|0|0",  # fields short
        "x|RUNNING|vm|N/A|N/A|0|0|n|None|",  # not a job id
        "1|running|vm|N/A|N/A|0|0|n|None|",  # not a state
        "1|RUNNING|vm;rm|N/A|N/A|0|0|n|None|",  # not a node list
        "1|RUNNING|vm|N/A|N/A|x|0|n|None|",  # not a restart count
        "1|RUNNING|vm|N/A|N/A|0|root|n|None|",  # not a user id
        "1|RUNNING|vm|N/A|N/A|0|0|n|None|\n1|PENDING||N/A|N/A|0|0|n|None|",  # the same job twice
        "Welcome to the cluster!\n1|RUNNING|vm|N/A|N/A|0|0|n|None|",  # a login banner
        "1|RUNNING|vm|N/A|N/A|0|0|n|None|\x1b[0m",  # a control character
    ],
)
def test_squeue_garbage_is_refused(text: str) -> None:
    with pytest.raises(ParseError):
        parse_squeue(text)


@settings(max_examples=500)
@given(st.text())
def test_parsers_raise_nothing_but_parse_errors(text: str) -> None:
    for parser in (parse_squeue, parse_sacct, parse_scontrol):
        with contextlib.suppress(ParseError):
            parser(text)
    parse_ports(text)


KEY = b"k" * 32
_NEAR = st.lists(
    st.tuples(
        st.sampled_from(["1001", "1002", "x", "", "1001 "]),
        st.sampled_from([*SEED_STATES, "CANCELLED by 0", "BOGUS", "", "running"]),
        st.sampled_from(["node01", "", "(null)", "n[1-2]", "a b"]),
        st.sampled_from(["N/A", "2026-01-01T00:00:00", "soon"]),
        st.sampled_from(["0", "1", "", "-1"]),
        st.sampled_from(["1000", "1001", "0", "me"]),
        st.sampled_from(["svc.@tag", "other", "svc.@tag|x", ""]),
        st.text(max_size=8),
    ).map(
        lambda t: (
            "|".join(
                [t[0], t[1], t[2], t[3], t[3], *t[4:6], t[6].replace("@tag", tag_of(t[0])), t[7]]
            )
            + "|"
        )
    ),
    max_size=4,
).map("\n".join)


def tag_of(job: str) -> str:
    return Identity(KEY).tag(f"svc-{job.strip()}")


def _entity(job_id: str, state: str = "STARTING") -> Entity:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    return Entity(
        id=f"svc-{job_id}",
        lifecycle="service",
        definition_version="v",
        state=state,
        terminal=False,
        version=1,
        seq=0,
        state_entered_at=now,
        deadline_at=None,
        next_refresh_at=now,
        created_at=now,
        updated_at=now,
        data={"job_id": job_id, "submitted_at": now.isoformat()},
    )


@settings(max_examples=300)
@given(squeue=st.one_of(st.text(), _NEAR), ended=st.one_of(st.text(), _NEAR))
def test_observe_turns_garbage_into_failed_observations(squeue: str, ended: str) -> None:
    """Whatever squeue / scontrol print: no exception, and events only from output that parses
    completely (for a job it lists); anything else is a failed observation."""
    fake = FakeSlurm()
    fake.add_job("RUNNING")
    fake.add_job("PENDING")
    fake.garbage = squeue
    fake._scontrol = lambda _a, _i: (0, ended, "")  # type: ignore[method-assign,assignment]
    backend = SlurmBackend(fake, lost_after=0, key=KEY)
    entities = [_entity("1001"), _entity("1002")]
    observations = backend.observe(entities, datetime(2026, 1, 2, tzinfo=UTC))
    assert {o.entity_id for o in observations} == {"svc-1001", "svc-1002"}
    try:
        listed = parse_squeue(squeue)
    except ParseError:
        assert all(o.failure is not None for o in observations)
        return
    for observation in observations:
        job = observation.entity_id.removeprefix("svc-")
        if observation.failure is not None or not observation.events:
            continue
        tag = "." + backend.tag(observation.entity_id)
        if job in listed and listed[job].uid == fake.uid and listed[job].name.endswith(tag):
            phase = phase_of(listed[job].state)
            assert phase is not None and observation.events[0] == events_for(phase, False)[0]
        else:  # not listed: only a parsed scontrol answer, or the lost rule, may decide
            try:
                known = parse_scontrol(ended)
            except ParseError:
                pytest.fail(f"event {observation.events} from garbage {ended!r}")
            assert job in known or observation.events == ("job_failed",)
