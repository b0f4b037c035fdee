"""Batch scripts from job and container options, every value validated before it is written.

A value reaches the script in one of two places, and each has its own rule:
- `#SBATCH` lines are parsed by sbatch, which splits on blanks and honours quotes, so their
  values must match a strict per-field pattern (no blanks, quotes, `#` or line breaks);
- the command, environment and working directory reach bash, so they are quoted with
  `shlex.quote` and must not contain line breaks or other control characters.

How the job reports its port: the script picks a free TCP port in `port_range`, exports it as
`FSM_PORT` and `PORT`, prints `FSM_PORT=<port>` to the job's output and writes `<port>` to
`<port_dir>/<job id>.<restart count>.<tag>.port` (default `~/.fsm/jobs`, on the cluster's
shared home): one file per run, so a requeued run's new port is never confused with the old
run's, nor one entity's file with another's that reused the job id. A literal
`{port}` inside a command or environment value is replaced by the port at run time.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

PORT_PLACEHOLDER = "{port}"
DEFAULT_PORT_DIR = "~/.fsm/jobs"

_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
_TIME = re.compile(
    r"(?:\d{1,6}(?::\d{1,2}){0,2}|\d{1,4}-\d{1,2}(?::\d{1,2}){0,2}|UNLIMITED|INFINITE)"
)
_NODES = re.compile(r"\d{1,6}(?:-\d{1,6})?")
_MEM = re.compile(r"\d{1,12}[KMGT]?")
_GRES_ITEM = r"[A-Za-z0-9_]{1,32}(?::[A-Za-z0-9_.\-]{1,32}){0,2}"
_GRES = re.compile(rf"{_GRES_ITEM}(?:,{_GRES_ITEM}){{0,15}}")
_CONSTRAINT = re.compile(r"[A-Za-z0-9_&|,\[\]*()!:]{1,256}")
_PATH = re.compile(r"[A-Za-z0-9_./~%+@=,\-]{1,1024}")
_IMAGE = re.compile(r"[A-Za-z0-9_./:@+\-]{1,512}")
_BIND_PATH = r"[A-Za-z0-9_./~+@=\-]{1,512}"
_BIND = re.compile(rf"{_BIND_PATH}(?::{_BIND_PATH}(?::[a-z,]{{1,32}})?)?")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
_TAG = re.compile(r"[A-Za-z0-9_.:\-]{1,100}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
RESERVED_ENV = frozenset({"FSM_PORT", "PORT", "FSM_PORT_FILE", "SLURM_JOB_ID"})
RUNTIMES = ("apptainer", "singularity")

JOB_KEYS = frozenset(
    {
        "job_name",
        "time",
        "partition",
        "nodes",
        "ntasks_per_node",
        "mem",
        "gres",
        "account",
        "constraint",
        "output",
        "hold",
    }
)
CONTAINER_KEYS = frozenset({"command", "env", "workdir", "image", "runtime", "bind", "gpu"})


class ScriptError(ValueError):
    """Options that cannot be turned into a safe batch script; `problems` lists every one."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = tuple(problems)
        super().__init__("invalid job options: " + "; ".join(self.problems))


@dataclass(frozen=True)
class JobOptions:
    """The `#SBATCH` side: what Slurm allocates."""

    job_name: str = "fsm-service"
    time: str | None = None
    partition: str | None = None
    nodes: str | None = None
    ntasks_per_node: int | None = None
    mem: str | None = None
    gres: str | None = None
    account: str | None = None
    constraint: str | None = None
    output: str | None = None
    hold: bool = False


@dataclass(frozen=True)
class ContainerOptions:
    """The bash side: what runs in the allocation (a command, optionally inside a container)."""

    command: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    workdir: str | None = None
    image: str | None = None
    runtime: str = "apptainer"
    bind: tuple[str, ...] = field(default_factory=tuple)
    gpu: bool = False


class _Checker:
    def __init__(self) -> None:
        self.problems: list[str] = []

    def text(self, where: str, value: Any, pattern: re.Pattern[str]) -> str | None:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            self.problems.append(f"{where}: expected a string, got {type(value).__name__}")
            return None
        text = str(value)
        if not pattern.fullmatch(text):
            self.problems.append(f"{where}: {text[:80]!r} is not allowed")
            return None
        return text

    def count(self, where: str, value: Any, low: int, high: int) -> int | None:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            self.problems.append(f"{where}: expected an integer from {low} to {high}")
            return None
        return value

    def flag(self, where: str, value: Any) -> bool:
        if value is None:
            return False
        if not isinstance(value, bool):
            self.problems.append(f"{where}: expected true or false")
            return False
        return value

    def plain(self, where: str, value: Any, *, empty: bool = True) -> str | None:
        """A string bash will see quoted: any printable text, no control characters."""
        if not isinstance(value, str):
            self.problems.append(f"{where}: expected a string, got {type(value).__name__}")
            return None
        if _CONTROL.search(value):
            self.problems.append(f"{where}: line breaks and control characters are not allowed")
            return None
        if not value and not empty:
            self.problems.append(f"{where}: must not be empty")
            return None
        if len(value) > 8192:
            self.problems.append(f"{where}: longer than 8192 characters")
            return None
        return value

    def unknown(self, where: str, given: Mapping[str, Any], known: frozenset[str]) -> None:
        extra = sorted(str(k) for k in set(given) - known)
        if extra:
            self.problems.append(f"{where}: unknown options {extra}; known: {sorted(known)}")


def parse_job_options(raw: Mapping[str, Any] | None, check: _Checker | None = None) -> JobOptions:
    """Validated `JobOptions` from a mapping (Blackfish's JobConfig keys, dashes or underscores)."""
    own = check is None
    c = check or _Checker()
    given = {str(k).replace("-", "_"): v for k, v in (raw or {}).items()}
    c.unknown("job_options", given, JOB_KEYS)
    nodes = given.get("nodes")
    options = JobOptions(
        job_name=c.text("job_name", given.get("job_name", "fsm-service"), _NAME) or "fsm-service",
        time=c.text("time", given.get("time"), _TIME),
        partition=c.text("partition", given.get("partition"), _NAME),
        nodes=c.text("nodes", str(nodes) if isinstance(nodes, int) else nodes, _NODES),
        ntasks_per_node=c.count("ntasks_per_node", given.get("ntasks_per_node"), 1, 100000),
        mem=c.text("mem", given.get("mem"), _MEM),
        gres=c.text("gres", given.get("gres"), _GRES),
        account=c.text("account", given.get("account"), _NAME),
        constraint=c.text("constraint", given.get("constraint"), _CONSTRAINT),
        output=c.text("output", given.get("output"), _PATH),
        hold=c.flag("hold", given.get("hold")),
    )
    if own and c.problems:
        raise ScriptError(c.problems)
    return options


def parse_container_options(
    raw: Mapping[str, Any] | None, check: _Checker | None = None
) -> ContainerOptions:
    """Validated `ContainerOptions`: `command` is an argv list, never a shell string."""
    own = check is None
    c = check or _Checker()
    given = dict(raw or {})
    c.unknown("container_options", given, CONTAINER_KEYS)
    command = given.get("command")
    argv: list[str] = []
    if not isinstance(command, (list, tuple)) or not command:
        c.problems.append("command: expected a non-empty list of arguments (an argv list)")
    else:
        for i, item in enumerate(command):
            value = c.plain(f"command[{i}]", item, empty=i > 0)
            if value is not None:
                argv.append(value)
    env: list[tuple[str, str]] = []
    raw_env = given.get("env") or {}
    if not isinstance(raw_env, Mapping):
        c.problems.append("env: expected a mapping of names to values")
    else:
        for name, value in raw_env.items():
            key = c.text(f"env name {str(name)[:40]!r}", name, _ENV_NAME)
            if key is not None and key in RESERVED_ENV:
                c.problems.append(f"env: {key} is set by the script itself")
                continue
            text = c.plain(f"env {key}", str(value) if isinstance(value, (int, float)) else value)
            if key is not None and text is not None:
                env.append((key, text))
    workdir = given.get("workdir")
    if workdir is not None:
        workdir = c.plain("workdir", workdir, empty=False)
    runtime = given.get("runtime", "apptainer")
    if runtime not in RUNTIMES:
        c.problems.append(f"runtime: expected one of {list(RUNTIMES)}")
        runtime = "apptainer"
    bind = given.get("bind") or []
    binds: list[str] = []
    if not isinstance(bind, (list, tuple)):
        c.problems.append("bind: expected a list of src[:dst[:opts]]")
    else:
        binds = [b for i, x in enumerate(bind) if (b := c.text(f"bind[{i}]", x, _BIND))]
    options = ContainerOptions(
        command=tuple(argv),
        env=tuple(env),
        workdir=workdir,
        image=c.text("image", given.get("image"), _IMAGE),
        runtime=str(runtime),
        bind=tuple(binds),
        gpu=c.flag("gpu", given.get("gpu")),
    )
    if own and c.problems:
        raise ScriptError(c.problems)
    return options


def _home_path(path: str) -> str:
    """Quote a path for bash, keeping a leading `~/` as `"$HOME"/`."""
    if path == "~":
        return '"$HOME"'
    if path.startswith("~/"):
        return '"$HOME"/' + shlex.quote(path[2:])
    return shlex.quote(path)


def _with_port(value: str) -> str:
    """Quote `value` for bash, with each `{port}` becoming the port chosen at run time."""
    parts = value.split(PORT_PLACEHOLDER)
    return '"$FSM_PORT"'.join(shlex.quote(p) if p else "" for p in parts) or "''"


def _sbatch_lines(job: JobOptions, tag: str | None) -> list[str]:
    lines = [f"--job-name={job_name(job.job_name, tag)}"]
    pairs = (
        ("time", job.time),
        ("partition", job.partition),
        ("nodes", job.nodes),
        ("ntasks-per-node", job.ntasks_per_node),
        ("mem", job.mem),
        ("gres", job.gres),
        ("account", job.account),
        ("constraint", job.constraint),
        ("output", job.output),
    )
    lines += [f"--{name}={value}" for name, value in pairs if value is not None]
    if job.hold:
        lines.append("--hold")
    if tag is not None:
        lines.append(f"--comment={tag}")
    return [f"#SBATCH {line}" for line in lines]


def job_name(base: str, tag: str | None) -> str:
    """The name the job is submitted with: the user's name, then `.<tag>` (see identity)."""
    return base if tag is None else f"{base}.{tag}"


def port_file(port_dir: str, job_id: str, restarts: int, tag: str | None) -> str:
    """Where run `restarts` of job `job_id` writes its port (one file per run and entity)."""
    return f"{port_dir.rstrip('/') or '/'}/{job_id}.{restarts}.{tag or 'untagged'}.port"


_PICK_PORT = """\
fsm_pick_port() {{
    local port _
    for _ in $(seq 1 100); do
        port=$(( {low} + (RANDOM * 32768 + RANDOM) % {span} ))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "$port"
            return 0
        fi
    done
    return 1
}}"""


def render_script(
    job_options: Mapping[str, Any] | None,
    container_options: Mapping[str, Any] | None,
    *,
    tag: str | None = None,
    port_dir: str = DEFAULT_PORT_DIR,
    port_range: tuple[int, int] = (20000, 40000),
) -> str:
    """The batch script, or `ScriptError` listing every invalid value.

    `tag` (the entity's, see identity) ends the job name and is the `--comment`: it proves the
    job is ours, and a submit retried after a crash finds its job again by that name.
    """
    c = _Checker()
    job = parse_job_options(job_options, c)
    box = parse_container_options(container_options, c)
    if tag is not None:
        c.text("tag", tag, _TAG)
    c.text("port_dir", port_dir, _PATH)
    low, high = port_range
    if not 1024 <= low <= high <= 65535:
        c.problems.append(f"port_range: {port_range!r} is not within 1024..65535")
    if c.problems:
        raise ScriptError(c.problems)
    name = f".{tag or 'untagged'}.port"
    run = '"$SLURM_JOB_ID"."${SLURM_RESTART_COUNT:-0}"'
    port_path = f"{_home_path(port_dir)}/{run}{name}"
    lines = ["#!/bin/bash", *_sbatch_lines(job, tag), "set -euo pipefail"]
    lines += _PICK_PORT.format(low=low, span=high - low + 1).splitlines()
    lines += [
        'FSM_PORT=$(fsm_pick_port) || { echo "fsm: no free port" >&2; exit 97; }',
        'PORT="$FSM_PORT"',
        f"FSM_PORT_FILE={port_path}",
        "export FSM_PORT PORT FSM_PORT_FILE",
        f"mkdir -p -- {_home_path(port_dir)}",
        'printf \'%s\\n\' "$FSM_PORT" > "$FSM_PORT_FILE.tmp"',
        'mv -f -- "$FSM_PORT_FILE.tmp" "$FSM_PORT_FILE"',
        'echo "FSM_PORT=$FSM_PORT"',
    ]
    if box.workdir is not None:
        lines.append(f"cd -- {_home_path(box.workdir)}")
    lines += [f"export {name}={_with_port(value)}" for name, value in box.env]
    argv = [_with_port(arg) for arg in box.command]
    if box.image is not None:
        runner = [box.runtime, "exec"]
        if box.gpu:
            runner.append("--nv")
        for bind in box.bind:
            runner += ["--bind", bind]
        argv = [shlex.quote(a) for a in runner] + [shlex.quote(box.image), *argv]
    lines.append("exec " + " ".join(argv))
    return "\n".join(lines) + "\n"
