"""The scheduler commands the backend runs, each one bounded and counted.

Every call gets the transport's timeout, cut to what is left of the caller's budget (an
observe cycle has `observe_timeout` for all of its calls), so one hung `squeue` costs at most
the budget. Commands are named by their logical name (`squeue`) and run under the configured
path (`bin_dir`, `command_paths`).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta

from backends.slurm.parse import (
    SACCT_FORMAT,
    SQUEUE_FORMAT,
    JobRecord,
    ParseError,
    parse_ports,
    parse_sacct,
    parse_scontrol,
    parse_squeue,
)
from backends.slurm.settings import SCHEDULER_COMMANDS, SlurmSettings
from backends.slurm.transport import CommandOutput, LocalTransport, Transport, TransportError
from fsm.observation import FailureKind

_GONE = ("Invalid job id", "already completing or completed", "Job has finished")


class Cluster:
    """One backend's view of the cluster: squeue / sacct / scontrol / sbatch / scancel."""

    def __init__(self, transport: Transport, settings: SlurmSettings) -> None:
        self.transport = transport
        self.settings = settings
        self.accounting = settings.accounting
        self.calls: Counter[str] = Counter()
        self._deadline: float | None = None
        self._uid: int | None = None

    @contextlib.contextmanager
    def budget(self, seconds: float) -> Iterator[None]:
        """Every call inside shares `seconds` (nested budgets keep the tighter one)."""
        outer = self._deadline
        mine = time.monotonic() + seconds
        self._deadline = mine if outer is None else min(outer, mine)
        try:
            yield
        finally:
            self._deadline = outer

    def run(
        self, argv: Sequence[str], *, input: str | None = None, ok: Sequence[int] = (0,)
    ) -> CommandOutput:
        name = argv[0]
        self.calls[name] += 1
        timeout = self.transport.timeout
        if self._deadline is not None:
            left = self._deadline - time.monotonic()
            if left <= 0.05:
                raise TransportError(argv, FailureKind.TIMEOUT, "the cycle's time budget is spent")
            timeout = min(timeout, left)
        real = [self.settings.command_path(name), *argv[1:]]
        return self.transport.run(real, input=input, ok=ok, timeout=timeout)

    def scheduler_calls(self) -> int:
        return sum(n for name, n in self.calls.items() if name in SCHEDULER_COMMANDS)

    # -- who we are --------------------------------------------------------------------------

    def uid(self) -> int:
        """The user our jobs run as (`id -u` on the cluster, asked once)."""
        if self._uid is None:
            if type(self.transport) is LocalTransport:
                self._uid = os.getuid()
            else:
                out = self.run(["id", "-u"])
                text = out.stdout.strip()
                if not text.isdigit() or len(text) > 10:
                    why = f"id -u printed {text[:40]!r}"
                    raise TransportError(["id"], FailureKind.GARBAGE, why)
                self._uid = int(text)
        return self._uid

    # -- queries -----------------------------------------------------------------------------

    def squeue(self, job_ids: Sequence[str]) -> dict[str, JobRecord]:
        """One `squeue` for `job_ids`: what the controller still knows of them (any owner)."""
        argv = ["squeue", "-h", "-t", "all", "-j", ",".join(job_ids), "-O", SQUEUE_FORMAT]
        out = self.run(argv, ok=(0, 1))
        if out.returncode != 0:
            if "Invalid job id" in out.stderr:  # squeue -j with a single unknown id
                return {}
            raise TransportError(argv, FailureKind.ERROR, f"exit 1: {out.stderr.strip()[:300]}")
        return parse_squeue(out.stdout)

    def squeue_named(self, names: Sequence[str]) -> list[JobRecord]:
        """Our jobs with these exact names: bounded by name, never a listing of all jobs."""
        argv = ["squeue", "-h", "--me", "-t", "all", "--name", ",".join(names)]
        out = self.run([*argv, "-O", SQUEUE_FORMAT])
        return list(parse_squeue(out.stdout).values())

    def ended(self, job_ids: Sequence[str], since: datetime) -> list[JobRecord] | None:
        """Records of jobs squeue no longer lists (or lists as ended, for the exit code);
        None when accounting just turned out to be off."""
        if self.accounting is not False:
            start = (since - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%S")
            argv = ["sacct", "-P", "-n", "-X", "-D", "-j", ",".join(job_ids)]
            argv += ["-S", start, "-E", "now", "-o", SACCT_FORMAT]
            out = self.run(argv, ok=(0, 1))
            if out.returncode != 0:
                if "accounting storage is disabled" in out.stderr and self.accounting is None:
                    self.accounting = False
                    return None
                raise TransportError(argv, FailureKind.ERROR, out.stderr.strip()[:300])
            self.accounting = True
            return parse_sacct(out.stdout)
        argv = ["scontrol", "show", "job", "-o"]
        if len(job_ids) == 1:
            argv.append(job_ids[0])
        out = self.run(argv, ok=(0, 1))
        if out.returncode != 0:
            if "Invalid job id" in out.stderr:
                return []
            raise TransportError(argv, FailureKind.ERROR, out.stderr.strip()[:300])
        wanted = set(job_ids)
        return [r for r in parse_scontrol(out.stdout).values() if r.job_id in wanted]

    def read_ports(self, files: dict[str, str]) -> dict[str, int]:
        """`files`: key -> port file path; one `grep` for all. Keys of files that hold a port."""
        paths = {self.transport.cluster_path(p): k for k, p in files.items()}
        out = self.run(["grep", "-s", "-H", "-E", "^[0-9]+$", "--", *paths], ok=(0, 1, 2))
        return {paths[p]: port for p, port in parse_ports(out.stdout).items() if p in paths}

    def remove(self, files: Sequence[str]) -> None:
        """`rm -f` port files (stale after a release); a failure only leaves them behind."""
        if files:
            paths = [self.transport.cluster_path(p) for p in files]
            self.run(["rm", "-f", "--", *paths])

    # -- actions -----------------------------------------------------------------------------

    def submit(self, script: str) -> str:
        out = self.run(["sbatch", "--parsable"], input=script)
        job = out.stdout.strip().split(";", 1)[0]
        if not job.isdigit() or len(job) > 12:
            raise ParseError(f"sbatch printed {out.stdout[:100]!r}")
        return job

    def cancel(self, record: JobRecord) -> None:
        """scancel the job just confirmed ours: with its exact name and our user as filters,
        so the controller itself refuses any other job that might hold the id by now."""
        argv = ["scancel", f"--name={record.name}", f"--user={self.uid()}", record.job_id]
        out = self.run(argv, ok=(0, 1))
        if out.returncode != 0 and not any(text in out.stderr for text in _GONE):
            raise TransportError(argv, FailureKind.ERROR, out.stderr.strip()[:300])
