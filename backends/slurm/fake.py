"""A fake Slurm controller behind the `Transport` interface, for tests and benchmarks.

It answers the commands the backend runs with the output, exit codes and error messages the
real Slurm 22.05 commands print (recorded on a real cluster): `squeue -j` with one unknown id
fails, with several it lists the known ones; `sacct` without accounting fails with "Slurm
accounting storage is disabled"; a stopped controller makes every command fail after
`down_delay` seconds (9 s on the real one), which a transport timeout turns into TIMEOUT.
Every call is logged, so tests and `bench/slurm_bench.py` can count them.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from backends.slurm.transport import CommandOutput, Transport, TransportError
from fsm.observation import FailureKind

_DOWN = "Unable to contact slurm controller (connect failure)"
_FINISHED = frozenset(
    {"COMPLETED", "CANCELLED", "FAILED", "TIMEOUT", "NODE_FAIL", "BOOT_FAIL", "DEADLINE",
     "OUT_OF_MEMORY", "PREEMPTED", "REVOKED", "SPECIAL_EXIT"}
)  # fmt: skip


@dataclass
class FakeJob:
    job_id: str
    state: str = "PENDING"
    node: str = ""
    start: str = "N/A"
    reason: str = "None"
    exit_code: str = "0:0"
    comment: str = "(null)"
    port: int | None = None
    submitted: datetime = datetime(2026, 1, 1, tzinfo=UTC)
    listed: bool = True  # False once it aged out of the controller (MinJobAge)
    script: str = ""
    name: str = "fsm-service"
    uid: int = 1000
    restarts: int = 0
    ports: dict[int, int] | None = None  # restart count -> port written by that run

    @property
    def submit_time(self) -> str:
        return self.submitted.strftime("%Y-%m-%dT%H:%M:%S")


class FakeSlurm(Transport):
    """Jobs kept in memory; tests move them with `set_state`, `forget`, `stop_controller`."""

    def __init__(
        self,
        *,
        accounting: bool = False,
        latency: float = 0.0,
        down_delay: float = 0.0,
        timeout: float = 30.0,
        node: str = "node01",
        port_dir: str = "~/.fsm/jobs",
        uid: int = 1000,
    ) -> None:
        super().__init__(timeout)
        self.accounting = accounting
        self.latency = latency
        self.down_delay = down_delay
        self.node = node
        self.port_dir = port_dir
        self.uid = uid
        self.jobs: dict[str, FakeJob] = {}
        self.history: list[FakeJob] = []  # every job ever, as sacct keeps them (ids recycle)
        self.log: list[tuple[str, ...]] = []
        self.up = True
        self.next_id = 1000
        self.garbage: str | None = None  # the next squeue prints this instead
        self.signalled: list[FakeJob] = []  # every job scancel acted on
        self.removed: set[str] = set()  # files `rm` deleted

    # -- driving the fake --------------------------------------------------------------------

    def add_job(self, state: str = "PENDING", **fields: object) -> FakeJob:
        self.next_id += 1
        fields.setdefault("uid", self.uid)
        job = FakeJob(str(self.next_id), state, **fields)  # type: ignore[arg-type]
        self.jobs[job.job_id] = job
        self.history.append(job)
        return job

    def requeue(self, job_id: str) -> None:
        """`scontrol requeue`: the job is queued again and its next run gets a new number."""
        job = self.jobs[job_id]
        job.state, job.restarts, job.node, job.start, job.port = (
            "PENDING",
            job.restarts + 1,
            "",
            "N/A",
            None,
        )

    def recycle(self, job_id: str, **fields: object) -> FakeJob:
        """Another job (by default another user's) takes the id of a purged one."""
        self.jobs[job_id].listed = False
        fields.setdefault("uid", self.uid + 1)
        fields.setdefault("submitted", datetime.now(UTC))
        job = FakeJob(job_id, fields.pop("state", "RUNNING"), **fields)  # type: ignore[arg-type]
        self.jobs[job_id] = job
        self.history.append(job)
        return job

    def set_state(self, job_id: str, state: str, **fields: object) -> None:
        job = self.jobs[job_id]
        job.state = state
        if state == "RUNNING" and not job.node:
            job.node, job.start = self.node, "2026-01-01T00:00:00"
        for name, value in fields.items():
            setattr(job, name, value)

    def forget(self, job_id: str) -> None:
        """The job aged out of the controller (squeue and scontrol no longer know it)."""
        self.jobs[job_id].listed = False

    def stop_controller(self) -> None:
        self.up = False

    def start_controller(self) -> None:
        self.up = True

    def count(self, *commands: str) -> int:
        return sum(1 for argv in self.log if argv[0] in commands)

    # -- the commands ------------------------------------------------------------------------

    def _run(self, argv: tuple[str, ...], input: str | None, timeout: float) -> CommandOutput:
        self.log.append(argv)
        started = time.monotonic()
        argv = (argv[0].rsplit("/", 1)[-1], *argv[1:])  # bin_dir / command_paths
        if argv[0] in ("squeue", "sacct", "scontrol", "sbatch", "scancel") and not self.up:
            if self.down_delay > timeout:
                time.sleep(timeout)
                raise TransportError(argv, FailureKind.TIMEOUT, f"no answer in {timeout:g}s")
            time.sleep(self.down_delay)
            return self._out(argv, 1, "", self._down_message(argv), started)
        if self.latency:
            time.sleep(self.latency)
        handler = {
            "squeue": self._squeue,
            "sacct": self._sacct,
            "scontrol": self._scontrol,
            "sbatch": self._sbatch,
            "scancel": self._scancel,
            "grep": self._grep,
            "rm": self._rm,
            "id": self._id,
        }.get(argv[0])
        if handler is None:
            return self._out(argv, 127, "", f"bash: {argv[0]}: command not found", started)
        code, out, err = handler(list(argv[1:]), input)
        return self._out(argv, code, out, err, started)

    def _out(
        self, argv: tuple[str, ...], code: int, out: str, err: str, started: float
    ) -> CommandOutput:
        return CommandOutput(argv, code, out, err + "\n" if err else "", time.monotonic() - started)

    def _down_message(self, argv: tuple[str, ...]) -> str:
        if argv[0] == "sbatch":
            return f"sbatch: error: Batch job submission failed: {_DOWN}"
        if argv[0] == "scancel":
            return f"scancel: error: Kill job error on job id {argv[-1]}: {_DOWN}"
        return f"slurm_load_jobs error: {_DOWN}"

    @staticmethod
    def _option(args: list[str], flag: str) -> str | None:
        return args[args.index(flag) + 1] if flag in args else None

    def _known(self) -> dict[str, FakeJob]:
        return {k: j for k, j in self.jobs.items() if j.listed}

    def _squeue(self, args: list[str], _input: str | None) -> tuple[int, str, str]:
        if self.garbage is not None:
            text, self.garbage = self.garbage, None
            return 0, text, ""
        known = self._known()
        wanted = self._option(args, "-j")
        jobs = list(known.values())
        if wanted is not None:
            ids = wanted.split(",")
            if len(ids) == 1 and ids[0] not in known:
                return 1, "", "slurm_load_jobs error: Invalid job id specified"
            jobs = [known[i] for i in ids if i in known]
        names = self._option(args, "--name")
        if names is not None:
            jobs = [j for j in jobs if j.name in names.split(",")]
        if "--me" in args:
            jobs = [j for j in jobs if j.uid == self.uid]
        fields = (self._option(args, "-O") or "JobID:|").split(",")
        values: dict[str, Callable[[FakeJob], str]] = {
            "JobID": lambda j: j.job_id,
            "State": lambda j: j.state,
            "NodeList": lambda j: j.node,
            "StartTime": lambda j: j.start,
            "SubmitTime": lambda j: j.submit_time,
            "RestartCnt": lambda j: str(j.restarts),
            "UserID": lambda j: str(j.uid),
            "Name": lambda j: j.name,
            "Reason": lambda j: j.reason,
            "Comment": lambda j: j.comment,
        }

        def render(job: FakeJob) -> str:
            return "".join(values[f.split(":")[0]](job) + "|" for f in fields)

        return 0, "".join(render(j) + "\n" for j in jobs), ""

    def _sacct(self, args: list[str], _input: str | None) -> tuple[int, str, str]:
        if not self.accounting:
            return 1, "", "Slurm accounting storage is disabled"
        ids = (self._option(args, "-j") or "").split(",")
        since = self._option(args, "-S")
        lines = []
        for job in self.history:
            if job.job_id not in ids:
                continue
            if since and job.submit_time < since:
                continue  # bounded by -S
            state = "CANCELLED by 0" if job.state == "CANCELLED" else job.state
            node = job.node or "None assigned"
            fields = [job.job_id, state, job.exit_code, node, str(job.uid), job.submit_time]
            lines.append("|".join([*fields, job.name]))
        return 0, "".join(line + "\n" for line in lines), ""

    def _scontrol(self, args: list[str], _input: str | None) -> tuple[int, str, str]:
        if args[:3] != ["show", "job", "-o"]:
            return 1, "", "scontrol: error: unsupported by the fake"
        known = self._known()
        jobs = list(known.values())
        if len(args) > 3:
            if args[3] not in known:
                return 1, "", "slurm_load_jobs error: Invalid job id specified"
            jobs = [known[args[3]]]
        if not jobs:
            return 0, "No jobs in the system\n", ""
        lines = [
            f"JobId={j.job_id} JobName={j.name} UserId=u({j.uid}) GroupId=u({j.uid}) Priority=1 "
            f"JobState={j.state} Reason={j.reason} Dependency=(null) Requeue=1 "
            f"Restarts={j.restarts} SubmitTime={j.submit_time} "
            f"BatchFlag=1 ExitCode={j.exit_code} RunTime=00:00:01 TimeLimit=UNLIMITED "
            f"StartTime={j.start} NodeList={j.node or '(null)'} BatchHost={j.node or '(null)'} "
            f"Command=(null) WorkDir=/tmp Power= "
            for j in jobs
        ]
        return 0, "".join(line + "\n" for line in lines), ""

    def _sbatch(self, args: list[str], script: str | None) -> tuple[int, str, str]:
        if not script or not script.startswith("#!"):
            return 1, "", "sbatch: error: This does not look like a batch script."
        comment = re.search(r"^#SBATCH --comment=(\S+)$", script, re.MULTILINE)
        name = re.search(r"^#SBATCH --job-name=(\S+)$", script, re.MULTILINE)
        held = re.search(r"^#SBATCH --hold$", script, re.MULTILINE)
        job = self.add_job(
            "PENDING",
            reason="JobHeldUser" if held else "None",
            comment=comment.group(1) if comment else "(null)",
            name=name.group(1) if name else "sbatch",
            script=script,
            submitted=datetime.now(UTC),
        )
        return 0, job.job_id + "\n", ""

    def _scancel(self, args: list[str], _input: str | None) -> tuple[int, str, str]:
        job = self._known().get(args[-1])
        name = next((a.split("=", 1)[1] for a in args if a.startswith("--name=")), None)
        user = next((a.split("=", 1)[1] for a in args if a.startswith("--user=")), None)
        if job is None:
            return 1, "", f"scancel: error: Kill job error on job id {args[-1]}: Invalid job id"
        if (name is not None and job.name != name) or (user is not None and str(job.uid) != user):
            return 0, "", ""  # filtered out: the controller signals nothing
        if user is None and job.uid != self.uid and self.uid != 0:  # root may cancel any job
            return 1, "", "scancel: error: Kill job error: Access/permission denied"
        self.signalled.append(job)
        if job.state not in _FINISHED:
            job.state, job.exit_code = "CANCELLED", "0:15"
        return 0, "", ""

    def _grep(self, args: list[str], _input: str | None) -> tuple[int, str, str]:
        paths = args[args.index("--") + 1 :]
        lines, missing = [], False
        for path in paths:
            match = re.search(r"(\d+)\.(\d+)\.[A-Za-z0-9]+\.port$", path)
            job = self.jobs.get(match.group(1)) if match else None
            run = int(match.group(2)) if match else -1
            port = None
            if job is not None:
                port = (job.ports or {}).get(run, job.port if run == job.restarts else None)
            if port is None or path in self.removed:
                missing = True
            else:
                lines.append(f"{path}:{port}")
        code = 2 if missing else (0 if lines else 1)
        return code, "".join(line + "\n" for line in lines), ""

    def _id(self, _args: list[str], _input: str | None) -> tuple[int, str, str]:
        return 0, f"{self.uid}\n", ""

    def _rm(self, args: list[str], _input: str | None) -> tuple[int, str, str]:
        self.removed.update(args[args.index("--") + 1 :])
        return 0, "", ""
