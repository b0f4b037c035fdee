"""Parsers for what squeue, sacct and scontrol print. Strict: any line they do not recognise
makes the whole answer garbage (`ParseError`), because a half-understood listing could make a
job look vanished. They never raise anything else, whatever the text."""

from __future__ import annotations

import re
from typing import NamedTuple

from backends.slurm.states import normalize

#: `squeue -h -O` fields; the job name and the reason (free text, may hold `|`) come last
SQUEUE_FORMAT = (
    "JobID:|,State:|,NodeList:|,StartTime:|,SubmitTime:|,RestartCnt:|,UserID:|,Name:|,Reason:|"
)
#: `sacct -P -n -X -o` fields; the job name (free text) last
SACCT_FORMAT = "JobIDRaw,State,ExitCode,NodeList,UID,Submit,JobName"

_JOB_ID = re.compile(r"\d{1,12}")
_NODES = re.compile(r"[A-Za-z0-9_.,\[\]\-]{0,4096}")
_TIME = re.compile(r"[A-Za-z0-9:/.\-]{0,40}")
_EXIT = re.compile(r"-?\d{1,10}:-?\d{1,10}")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_NO_NODES = {"", "(null)", "None assigned", "None"}
_COUNT = re.compile(r"\d{1,6}")
_UID = re.compile(r"\d{1,10}")


class ParseError(ValueError):
    """Output we do not understand; the observation fails as GARBAGE and nothing changes."""


class JobRecord(NamedTuple):
    """One job as the scheduler reported it."""

    job_id: str
    state: str  # normalised: "CANCELLED by 0" -> "CANCELLED"
    nodes: str = ""
    start: str = ""
    reason: str = ""
    exit_code: str = ""
    source: str = "squeue"
    submit: str = ""  # the controller's submit time, as printed
    restarts: int = 0  # how often the job was requeued: each run has its own number
    uid: int | None = None  # the user the job belongs to
    name: str = ""  # the job name up to its first `|` (ours never hold one)

    @property
    def node(self) -> str | None:
        """The first node of the allocation (where the batch script, so the service, runs)."""
        return first_node(self.nodes)


def first_node(nodes: str) -> str | None:
    """`"gpu[03-05,07]"` -> `"gpu03"`; `"a,b"` -> `"a"`; nothing allocated -> None."""
    if nodes in _NO_NODES:
        return None
    match = re.match(r"([^,\[]+)(?:\[(\d+))?", nodes)
    if match is None:
        return None
    return match.group(1) + (match.group(2) or "")


def _lines(text: str) -> list[str]:
    if not isinstance(text, str) or _CONTROL.search(text):
        raise ParseError("control characters in scheduler output")
    return [line.rstrip("\r") for line in text.split("\n") if line.strip()]


def _state(raw: str, line: str) -> str:
    state = normalize(raw)
    if state is None:
        raise ParseError(f"not a job state in {line[:120]!r}")
    return state


def _add(found: dict[str, JobRecord], record: JobRecord, line: str) -> None:
    if record.job_id in found:
        raise ParseError(f"job {record.job_id} listed twice ({line[:120]!r})")
    found[record.job_id] = record


def parse_squeue(text: str) -> dict[str, JobRecord]:
    """`squeue -h -O SQUEUE_FORMAT` output, by job id."""
    found: dict[str, JobRecord] = {}
    for line in _lines(text):
        fields = line.split("|", 7)
        if len(fields) != 8:
            raise ParseError(f"expected 9 fields: {line[:120]!r}")
        job_id, state, nodes, start, submit, restarts, uid = (f.strip() for f in fields[:7])
        tail = fields[7][:-1] if fields[7].endswith("|") else fields[7]
        name, _, reason = tail.partition("|")
        if not _JOB_ID.fullmatch(job_id) or not _NODES.fullmatch(nodes):
            raise ParseError(f"bad job id or node list: {line[:120]!r}")
        if not (_TIME.fullmatch(start) and _TIME.fullmatch(submit)) or len(tail) > 2000:
            raise ParseError(f"bad start/submit time or reason: {line[:120]!r}")
        if not _COUNT.fullmatch(restarts) or not _UID.fullmatch(uid):
            raise ParseError(f"bad restart count or user id: {line[:120]!r}")
        record = JobRecord(
            job_id,
            _state(state, line),
            "" if nodes in _NO_NODES else nodes,
            start,
            reason.strip(),
            submit=submit,
            restarts=int(restarts),
            uid=int(uid),
            name=name.strip(),
        )
        _add(found, record, line)
    return found


def parse_sacct(text: str) -> list[JobRecord]:
    """`sacct -P -n -X -o SACCT_FORMAT` output, every record (job steps are skipped).

    sacct keeps every job ever run, so one id may have several records (ids are recycled);
    the caller picks the one that is ours."""
    found: list[JobRecord] = []
    for line in _lines(text):
        fields = line.split("|", 6)
        if len(fields) != 7:
            raise ParseError(f"expected 7 fields: {line[:120]!r}")
        job_id, state, exit_code, nodes, uid, submit = (f.strip() for f in fields[:6])
        nodes = "" if nodes in _NO_NODES else nodes
        if re.fullmatch(r"\d{1,12}\.[A-Za-z0-9_+]{1,32}", job_id):
            continue  # a step: the allocation's own line says what we need
        if not _JOB_ID.fullmatch(job_id) or not _NODES.fullmatch(nodes):
            raise ParseError(f"bad job id or node list: {line[:120]!r}")
        if exit_code and not _EXIT.fullmatch(exit_code):
            raise ParseError(f"bad exit code: {line[:120]!r}")
        if not _UID.fullmatch(uid) or not _TIME.fullmatch(submit):
            raise ParseError(f"bad user id or submit time: {line[:120]!r}")
        record = JobRecord(
            job_id,
            _state(state, line),
            nodes,
            exit_code=exit_code,
            source="sacct",
            submit=submit,
            uid=int(uid),
            name=fields[6].split("|", 1)[0].strip(),
        )
        found.append(record)
    return found


_SCONTROL_FIELD = re.compile(r"(?:^| )([A-Za-z][A-Za-z/:_]*)=(\S*)")


def parse_scontrol(text: str) -> dict[str, JobRecord]:
    """`scontrol show job -o` output (one job a line of Key=Value pairs), by job id."""
    found: dict[str, JobRecord] = {}
    for line in _lines(text):
        if line.strip() == "No jobs in the system":
            continue
        if not line.startswith("JobId="):
            raise ParseError(f"not a job line: {line[:120]!r}")
        fields = dict(_SCONTROL_FIELD.findall(line))
        job_id = fields.get("JobId", "")
        state = fields.get("JobState")
        if not _JOB_ID.fullmatch(job_id) or state is None:
            raise ParseError(f"no JobId or JobState: {line[:120]!r}")
        nodes = fields.get("NodeList", "")
        if not _NODES.fullmatch(nodes):
            nodes = ""
        exit_code = fields.get("ExitCode", "")
        uid = re.fullmatch(r"[^()]*\((\d{1,10})\)", fields.get("UserId", ""))
        restarts = fields.get("Restarts", "0")
        record = JobRecord(
            job_id,
            _state(state, line),
            nodes,
            fields.get("StartTime", ""),
            fields.get("Reason", ""),
            exit_code if _EXIT.fullmatch(exit_code) else "",
            "scontrol",
            submit=fields.get("SubmitTime", ""),
            restarts=int(restarts) if _COUNT.fullmatch(restarts) else 0,
            uid=int(uid.group(1)) if uid else None,
            name=fields.get("JobName", ""),
        )
        _add(found, record, line)
    return found


def parse_ports(text: str) -> dict[str, int]:
    """`grep -s -H '' FILE...` output (`path:port` lines), by path; anything else is skipped:
    a port file not written yet, or not a port, only means the ping cannot be made yet."""
    ports: dict[str, int] = {}
    if not isinstance(text, str):
        return ports
    for line in text.splitlines():
        path, sep, value = line.rpartition(":")
        value = value.strip()
        if sep and value.isascii() and value.isdigit() and len(value) <= 5:
            port = int(value)
            if 1 <= port <= 65535:
                ports[path] = port
    return ports
