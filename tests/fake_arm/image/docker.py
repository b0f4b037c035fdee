"""`docker` on the fake VM: the redis images run as Debian's real redis binaries.

There is no container engine on this machine, so this stand-in (installed as
/usr/local/bin/docker) does what mlos_bench's redis scripts ask of docker — `pull`, `run`
(`-d`, `--rm`, `--name`, `-p`, `--entrypoint`), `stop`, `rm [-f]`, `ps`, `logs` — with the
exit codes and messages the docker CLI gives. A container is a process of the VM: it shares the
VM's network namespace (as with `--network host`), so a published port is simply the port the
server listens on. The image `redis:*` is Debian's redis-server 7.0 (its entrypoint adds
`--protected-mode no`, as the official image's does); `/usr/local/bin/redis-*` in the image is
`/usr/bin/redis-*` here. Containers are recorded in /var/lib/docker/fake, so they survive the
command (and a reboot, after which they are exited, as docker's are).
"""

import hashlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

STATE = Path("/var/lib/docker/fake")
IMAGE_BINARIES = {"redis-server", "redis-benchmark", "redis-cli", "redis-check-aof"}


def fail(message: str, code: int = 1) -> int:
    print(message, file=sys.stderr)
    return code


def image_repo(image: str) -> tuple[str, str]:
    name, _, tag = image.partition(":")
    for prefix in ("docker.io/", "library/"):
        name = name.removeprefix(prefix)
    return name, tag or "latest"


def known(image: str) -> bool:
    return image_repo(image)[0] == "redis"


def digest(image: str) -> str:
    return hashlib.sha256(image_repo(image)[1].encode()).hexdigest()


def binary(path: str) -> str:
    base = os.path.basename(path)
    if base not in IMAGE_BINARIES:
        raise FileNotFoundError(path)
    return f"/usr/bin/{base}"


def command_of(entrypoint: str | None, args: list[str]) -> list[str]:
    """The process a redis container runs, as the official image's entrypoint builds it."""
    if entrypoint is not None:
        return [binary(entrypoint), *args]
    if not args or args[0].startswith("-"):
        args = ["redis-server", *args]
    command = [binary(args[0]), *args[1:]]
    if os.path.basename(command[0]) == "redis-server" and not any(
        a.endswith(".conf") for a in args[1:]
    ):
        command += ["--protected-mode", "no"]
    return command


def start_time(pid: int) -> str | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return None if fields[0] == "Z" else fields[19]


def load(name: str) -> dict | None:
    path = STATE / f"{name}.json"
    if not path.exists():
        return None
    record = json.loads(path.read_text())
    if record["status"] == "running" and start_time(record["pid"]) != record["start_time"]:
        record["status"] = "exited"
        if record["rm"]:
            path.unlink()
            return None
        save(record)
    return record


def save(record: dict) -> None:
    STATE.mkdir(parents=True, exist_ok=True)
    (STATE / f"{record['name']}.json").write_text(json.dumps(record))


def remove(name: str) -> None:
    (STATE / f"{name}.json").unlink(missing_ok=True)


def terminate(record: dict, grace: float) -> None:
    pid = record["pid"]
    if start_time(pid) != record["start_time"]:
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and start_time(pid) == record["start_time"]:
        time.sleep(0.05)
    if start_time(pid) == record["start_time"]:
        os.kill(pid, signal.SIGKILL)


def parse_run(args: list[str]) -> tuple[dict, list[str]]:
    options: dict = {"detach": False, "rm": False, "name": None, "entrypoint": None, "ports": []}
    while args and args[0].startswith("-"):
        flag = args.pop(0)
        flag, _, inline = flag.partition("=")
        if flag in ("-d", "--detach"):
            options["detach"] = True
        elif flag == "--rm":
            options["rm"] = True
        elif flag in ("--name", "--entrypoint", "-p", "--publish"):
            value = inline or args.pop(0)
            key = {"--name": "name", "--entrypoint": "entrypoint"}.get(flag)
            if key:
                options[key] = value
            else:
                options["ports"].append(value)
        else:
            raise ValueError(f"unknown flag: {flag}")
    if not args:
        raise ValueError('"docker run" requires at least 1 argument.')
    return options, args


def run(args: list[str]) -> int:
    try:
        options, rest = parse_run(args)
    except ValueError as exc:
        return fail(f"docker: {exc}", 125)
    image, command_args = rest[0], rest[1:]
    if not known(image):
        return fail(
            f"Unable to find image '{image}' locally\ndocker: Error response from daemon: "
            f"pull access denied for {image_repo(image)[0]}, repository does not exist",
            125,
        )
    name = options["name"] or f"fake_{secrets.token_hex(4)}"
    existing = load(name)
    if existing is not None:
        return fail(
            f'docker: Error response from daemon: Conflict. The container name "/{name}" is '
            f'already in use by container "{existing["id"]}". You have to remove (or rename) '
            "that container to be able to reuse that name.",
            125,
        )
    try:
        argv = command_of(options["entrypoint"], command_args)
    except FileNotFoundError as exc:
        return fail(f'docker: Error response from daemon: exec: "{exc}": not found', 127)
    for published in options["ports"]:
        host_port = published.split(":")[-2] if ":" in published else published
        if "--port" not in argv and os.path.basename(argv[0]) == "redis-server":
            argv += ["--port", host_port]
    container = secrets.token_hex(32)
    workdir = STATE / container
    workdir.mkdir(parents=True)
    record = {"id": container, "name": name, "image": image, "rm": options["rm"]}
    record |= {"command": argv, "status": "running"}
    if not options["detach"]:
        record |= {"pid": os.getpid(), "start_time": start_time(os.getpid())}
        save(record)
        code = subprocess.run(argv, cwd=workdir, check=False).returncode
        if options["rm"]:
            remove(name)
        else:
            save({**record, "status": "exited"})
        return code
    with open(workdir / "log", "ab") as log:
        process = subprocess.Popen(
            argv,
            cwd=workdir,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    record |= {"pid": process.pid, "start_time": start_time(process.pid)}
    save(record)
    print(container)
    return 0


def each(names: list[str], act: Callable[[str, dict], int]) -> int:
    """Apply `act` to each named container; the docker CLI's error for a missing one."""
    code = 0
    for name in names:
        record = load(name)
        if record is None:
            code = fail(f"Error response from daemon: No such container: {name}")
        else:
            code = act(name, record) or code
    return code


def stop(args: list[str]) -> int:
    grace = 10.0
    if args[:1] in (["-t"], ["--time"]):
        grace = float(args[1])
        args = args[2:]

    def stopped(name: str, record: dict) -> int:
        terminate(record, grace)
        if record["rm"]:
            remove(name)
        else:
            save({**record, "status": "exited"})
        print(name)
        return 0

    return each(args, stopped)


def rm(args: list[str]) -> int:
    force = False
    while args and args[0].startswith("-"):
        flag = args.pop(0)
        if flag not in ("-f", "--force"):
            return fail(f"unknown flag: {flag}", 125)
        force = True

    def removed(name: str, record: dict) -> int:
        if record["status"] == "running":
            if not force:
                return fail(
                    f'Error response from daemon: cannot remove container "/{name}": container '
                    "is running: stop the container before removing or force remove"
                )
            terminate(record, 0)
        remove(name)
        print(name)
        return 0

    return each(args, removed)


def ps(args: list[str]) -> int:
    show_all = "-a" in args or "--all" in args
    print("CONTAINER ID   IMAGE        COMMAND   STATUS    NAMES")
    for path in sorted(STATE.glob("*.json")) if STATE.exists() else []:
        record = load(path.stem)
        if record is None or (record["status"] != "running" and not show_all):
            continue
        command = os.path.basename(record["command"][0])
        print(
            f"{record['id'][:12]}   {record['image']}   {command}   {record['status']}   "
            f"{record['name']}"
        )
    return 0


def pull(args: list[str]) -> int:
    image = args[-1]
    if not known(image):
        return fail(
            f"Error response from daemon: pull access denied for {image_repo(image)[0]}, "
            "repository does not exist or may require 'docker login'"
        )
    repo, tag = image_repo(image)
    print(f"{tag}: Pulling from library/{repo}")
    print(f"Digest: sha256:{digest(image)}")
    print(f"Status: Image is up to date for {repo}:{tag}")
    print(f"docker.io/library/{repo}:{tag}")
    return 0


def logs(args: list[str]) -> int:
    record = load(args[-1])
    if record is None:
        return fail(f"Error response from daemon: No such container: {args[-1]}")
    sys.stdout.write((STATE / record["id"] / "log").read_text(errors="replace"))
    return 0


COMMANDS = {"run": run, "stop": stop, "rm": rm, "ps": ps, "pull": pull, "logs": logs}


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-v", "--version", "version"):
        print("Docker version 28.2.2, build fake-vm")
        return 0
    handler = COMMANDS.get(argv[0])
    if handler is None:
        return fail(f"docker: '{argv[0]}' is not a docker command.\nSee 'docker --help'")
    return handler(list(argv[1:]))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
