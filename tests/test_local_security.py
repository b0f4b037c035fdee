"""The local backend acts only on processes it started, proven by its own private record.

Entity data is written by callers: nothing in it (a pid, a start time, a port, a file name) may
make the backend signal, adopt or report a process. Real processes throughout: strangers are
`sleep`s in sessions of their own, so a wrongly aimed `killpg` would really kill them.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from backends.base import CommandFailed
from backends.local import LocalProcessBackend
from fsm import Engine
from fsm.config import ConfigError, load_config
from fsm.observation import FailureKind
from fsm.worker import Worker
from tests.components import unavailable
from tests.local_support import alive, local_rig

ROOT = Path(__file__).resolve().parent.parent


def ticks(pid: int) -> int:
    text = Path(f"/proc/{pid}/stat").read_text()
    return int(text[text.rfind(")") + 2 :].split()[19])


def wait_dead(pid: int, seconds: float = 10) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        time.sleep(0.05)
    return False


@pytest.fixture
def stranger() -> Iterator[subprocess.Popen[bytes]]:
    """A process the backend never started, leading a group of its own."""
    proc = subprocess.Popen(["sleep", "300"], start_new_session=True)
    yield proc
    proc.kill()
    proc.wait()


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[tuple[Engine, Worker, LocalProcessBackend]]:
    with local_rig(tmp_path) as made:
        yield made


SLEEPER = [sys.executable, "-c", "import time; time.sleep(300)"]


def submit(worker: Worker, engine: Engine, argv: list[str] = SLEEPER, **spec: object) -> str:
    sid = engine.create("service").id
    worker.command(sid, "submit", {"process": {"argv": argv, "health": {"tcp": True}, **spec}})
    return sid


def forged(target: int) -> dict[str, object]:
    return {"pid": target, "start_ticks": ticks(target), "port": 1}


# -- item 1: forged data never names a process for us to act on -------------------------------


def test_stop_of_a_never_submitted_service_with_forged_data_signals_nothing(
    rig: tuple[Engine, Worker, LocalProcessBackend], stranger: subprocess.Popen[bytes]
) -> None:
    engine, worker, _ = rig
    sid = engine.create("service", forged(stranger.pid)).id
    worker.command(sid, "stop")
    assert engine.get(sid).state == "STOPPED"
    time.sleep(0.3)
    assert alive(stranger.pid)


def test_release_after_job_failed_with_forged_data_signals_nothing(
    rig: tuple[Engine, Worker, LocalProcessBackend], stranger: subprocess.Popen[bytes]
) -> None:
    engine, _worker, backend = rig
    sid = engine.create("service").id
    engine.fire(sid, "job_running", data=forged(stranger.pid))
    engine.fire(sid, "job_failed")
    backend.release(engine.get(sid), engine.clock())  # what the worker does for a failed one
    time.sleep(0.3)
    assert alive(stranger.pid)


def test_observe_never_reports_a_strangers_process_as_the_service(
    rig: tuple[Engine, Worker, LocalProcessBackend], stranger: subprocess.Popen[bytes]
) -> None:
    engine, worker, backend = rig
    waiting = engine.create("service", forged(stranger.pid)).id
    running = engine.create("service").id
    engine.fire(running, "job_running", data=forged(stranger.pid))
    by_id = {o.entity_id: o for o in backend.observe(engine.list_entities(), engine.clock())}
    assert by_id[waiting].events == ()  # never submitted: nothing runs for it yet
    assert by_id[running].events == ("job_failed",)  # we run nothing for it, whatever data says
    assert "job_running" not in by_id[running].events
    assert until_state(worker, engine, running, "FAILED")  # the refresh; then the release
    time.sleep(0.3)
    assert alive(stranger.pid)


def test_data_pointing_at_another_services_process_is_not_acted_on(
    rig: tuple[Engine, Worker, LocalProcessBackend],
) -> None:
    engine, worker, backend = rig
    first, second = submit(worker, engine), submit(worker, engine)
    first_pid, second_pid = engine.get(first).data["pid"], engine.get(second).data["pid"]
    engine.fire(second, "ping_ok", data=forged(first_pid))  # second's data now names first's
    never = engine.create("service", forged(first_pid)).id
    worker.command(never, "stop")
    [seen] = backend.observe([engine.get(second)], engine.clock())
    assert seen.events[0] == "job_running"  # second's own process, from the record
    worker.command(second, "stop")  # stops second's own process, not first's
    assert wait_dead(second_pid)
    assert alive(first_pid)
    [first_seen] = backend.observe([engine.get(first)], engine.clock())
    assert first_seen.events[0] == "job_running"


def test_data_naming_the_worker_itself_is_not_acted_on(tmp_path: Path) -> None:
    """In a worker process of its own (a wrong signal would hit it, not the test runner)."""
    script = textwrap.dedent(
        f"""
        import os, sys
        from pathlib import Path
        from backends.local import LocalProcessBackend
        from fsm import Engine
        from fsm.worker import Worker
        text = Path(f"/proc/{{os.getpid()}}/stat").read_text()
        me = {{"pid": os.getpid(), "start_ticks": int(text[text.rfind(")") + 2:].split()[19])}}
        engine = Engine("sqlite:///{tmp_path}/w.db")
        backend = LocalProcessBackend("{tmp_path}/procs", grace=1.0)
        worker = Worker(engine, [backend])
        stopped = engine.create("service", me).id
        worker.command(stopped, "stop")
        failed = engine.create("service").id
        engine.fire(failed, "job_running", data=me)
        engine.fire(failed, "job_failed")
        backend.release(engine.get(failed), engine.clock())
        print("survived", engine.get(stopped).state)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        start_new_session=True,
        check=False,
    )
    assert done.returncode == 0, (done.returncode, done.stderr[-2000:])
    assert done.stdout.split() == ["survived", "STOPPED"]


def _record_file(backend: LocalProcessBackend, sid: str) -> Path:
    [path] = [
        p for p in backend.state_dir.glob("*.json") if json.loads(p.read_text())["entity_id"] == sid
    ]
    return path


def test_a_record_naming_a_recycled_pid_is_never_signalled(
    rig: tuple[Engine, Worker, LocalProcessBackend], stranger: subprocess.Popen[bytes]
) -> None:
    """The record names a pid that now belongs to someone else: another start time, or (pid
    reused within one clock tick) the right start time but not our nonce."""
    engine, worker, backend = rig
    for start in (ticks(stranger.pid) + 1, ticks(stranger.pid)):
        sid = submit(worker, engine)
        path = _record_file(backend, sid)
        record = json.loads(path.read_text())
        os.killpg(record["pid"], signal.SIGKILL)  # our service is gone ...
        assert wait_dead(record["pid"])
        record.update(pid=stranger.pid, start_ticks=start)  # ... and its pid "recycled"
        path.write_text(json.dumps(record))
        [seen] = backend.observe([engine.get(sid)], engine.clock())
        assert seen.events == ("job_failed",)
        worker.command(sid, "stop")
        assert engine.get(sid).state == "STOPPED"
        time.sleep(0.3)
        assert alive(stranger.pid)


def test_records_of_another_boot_or_machine_are_never_acted_on(
    rig: tuple[Engine, Worker, LocalProcessBackend], stranger: subprocess.Popen[bytes]
) -> None:
    """A state dir shared over the network, or kept across a reboot: the pid and start time of
    another boot name nothing here (even when a process here happens to match them)."""
    engine, worker, backend = rig
    rebooted, remote = submit(worker, engine), submit(worker, engine)
    for sid, host in ((rebooted, socket.gethostname()), (remote, "build-07")):
        path = _record_file(backend, sid)
        record = json.loads(path.read_text())
        os.killpg(record["pid"], signal.SIGKILL)
        record.update(pid=stranger.pid, start_ticks=ticks(stranger.pid), boot_id="a-past-boot")
        record["host"] = host
        path.write_text(json.dumps(record))
    seen = {o.entity_id: o for o in backend.observe(engine.list_entities(), engine.clock())}
    assert seen[rebooted].events == ("job_failed",)  # rebooted: nothing from before lives
    assert seen[remote].failure is FailureKind.MISSING and "build-07" in seen[remote].detail
    with pytest.raises(CommandFailed, match="build-07"):
        worker.command(remote, "stop")
    assert engine.get(remote).state == "STARTING"
    with pytest.raises(CommandFailed, match="build-07"):
        backend.release(engine.get(remote), engine.clock())
    worker.command(rebooted, "stop")
    backend.release(engine.get(rebooted), engine.clock())
    time.sleep(0.3)
    assert alive(stranger.pid)
    assert [json.loads(p.read_text())["entity_id"] for p in backend.state_dir.glob("*.json")] == [
        remote
    ]


def test_a_restarted_engine_reattaches_from_the_record_on_disk(
    tmp_path: Path, rig: tuple[Engine, Worker, LocalProcessBackend]
) -> None:
    engine, worker, backend = rig
    sid = submit(worker, engine)
    pid = engine.get(sid).data["pid"]
    engine.fire(sid, "ping_ok", data={"pid": os.getpid(), "port": 1})  # data lies; no matter
    backend.close()
    engine2 = Engine(engine.store.url)
    backend2 = LocalProcessBackend(tmp_path / "procs", grace=2.0)  # nothing in memory
    worker2 = Worker(engine2, [backend2])
    [seen] = backend2.observe([engine2.get(sid)], engine2.clock())
    assert seen.events[0] == "job_running"
    worker2.command(sid, "stop")
    assert wait_dead(pid) and alive(os.getpid())
    backend2.close()
    engine2.close()


def test_a_submit_that_crashed_before_recording_the_pid_is_found_by_its_nonce(
    rig: tuple[Engine, Worker, LocalProcessBackend],
) -> None:
    engine, worker, backend = rig
    sid = submit(worker, engine)
    pid = engine.get(sid).data["pid"]
    path = _record_file(backend, sid)
    record = json.loads(path.read_text())
    del record["pid"], record["start_ticks"]
    path.write_text(json.dumps(record))
    [seen] = backend.observe([engine.get(sid)], engine.clock())
    assert seen.events[0] == "job_running"
    worker.command(sid, "stop")
    assert wait_dead(pid)


def test_release_ends_what_outlived_a_killed_shim(
    rig: tuple[Engine, Worker, LocalProcessBackend],
) -> None:
    """The shim dies, the service lives on in its group: failed, and released for real."""
    engine, worker, _backend = rig
    sid = submit(worker, engine)
    shim = engine.get(sid).data["pid"]
    service = child_of(shim)
    os.kill(shim, signal.SIGKILL)
    assert wait_dead(shim) and alive(service)
    assert until_state(worker, engine, sid, "FAILED")
    assert wait_dead(service)


def child_of(parent: int) -> int:
    """The service the shim started (once it has started it)."""
    deadline = time.monotonic() + 10
    while not (
        found := [int(p) for p in os.listdir("/proc") if p.isdigit() and _ppid(int(p)) == parent]
    ):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    return found[0]


def _ppid(pid: int) -> int | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(text[text.rfind(")") + 2 :].split()[1])


def test_a_service_gets_sigterm_not_an_inherited_ignore(
    rig: tuple[Engine, Worker, LocalProcessBackend],
) -> None:
    engine, worker, _ = rig
    sid = submit(worker, engine, ["sleep", "300"])
    service = child_of(engine.get(sid).data["pid"])
    time.sleep(0.2)  # the shim has set up its own signal handling by now
    started = time.monotonic()
    worker.command(sid, "stop")
    assert engine.history(sid)[-1].event == "stop"
    assert engine.get(sid).data["killed"] is False  # SIGTERM was enough: no SIGKILL needed
    assert time.monotonic() - started < 1.5
    assert wait_dead(service)


def test_release_raises_until_nothing_is_left(
    rig: tuple[Engine, Worker, LocalProcessBackend], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A process that cannot be signalled (EPERM, e.g. it ran a setuid program) is not
    confirmed gone: release raises so the worker retries, and keeps the record."""
    engine, worker, backend = rig
    sid = submit(worker, engine)
    pid = engine.get(sid).data["pid"]
    engine.fire(sid, "job_failed")

    def refused(*_args: object) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "killpg", refused)
    monkeypatch.setattr(signal, "pidfd_send_signal", refused)
    monkeypatch.setattr(backend, "grace", 0.2)
    with pytest.raises(CommandFailed):
        backend.release(engine.get(sid), engine.clock())
    assert alive(pid)
    monkeypatch.undo()
    backend.release(engine.get(sid), engine.clock())
    assert wait_dead(pid)
    assert list(backend.state_dir.glob("*.json")) == []  # released: the record goes
    backend.release(engine.get(sid), engine.clock())  # and again: idempotent


def test_submit_in_a_state_that_cannot_start_starts_nothing(
    rig: tuple[Engine, Worker, LocalProcessBackend],
) -> None:
    engine, worker, backend = rig
    sid = engine.create("service").id
    engine.fire(sid, "job_failed")
    with pytest.raises(CommandFailed):
        worker.command(sid, "submit", {"process": {"argv": SLEEPER}})
    assert list(backend.state_dir.glob("*.json")) == []


# -- item 2: environment values never reach the database ---------------------------------------


def test_env_values_reach_the_process_and_never_the_database(
    tmp_path: Path, rig: tuple[Engine, Worker, LocalProcessBackend], monkeypatch: pytest.MonkeyPatch
) -> None:
    engine, worker, backend = rig
    monkeypatch.setenv("FSM_SECRET_OTHER_SERVICE", "other-9b1c")  # the worker's, not the service's
    monkeypatch.setenv("FSM_SECRETS_DIR", str(tmp_path))
    monkeypatch.setenv("FSM_DB", "postgresql://u:db-pw-77a1@h/x")
    values = {"DB_PASSWORD": "pw-7f3a91c2", "GITHUB_TOKEN": "ghp_5e1d0b77aa", "MODE": "m-4c2e"}
    out = tmp_path / "env.json"
    argv = [
        sys.executable,
        "-c",
        f"import json, os, time; json.dump(dict(os.environ), open({str(out)!r}, 'w')); "
        "time.sleep(300)",
    ]
    sid = submit(worker, engine, argv, env=values)
    deadline = time.monotonic() + 10
    while not out.exists() or not out.read_text().endswith("}"):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    seen = json.loads(out.read_text())
    assert {k: seen[k] for k in values} == values  # the process got them
    assert not {"FSM_SECRET_OTHER_SERVICE", "FSM_SECRETS_DIR", "FSM_DB"} & set(seen)
    assert "PATH" in seen  # the rest of the worker's environment is inherited
    assert engine.get(sid).data["process"]["env_names"] == sorted(values)
    worker.command(sid, "stop")
    history = json.dumps([t._asdict() for t in engine.history(sid)], default=str)
    stored = b"".join(p.read_bytes() for p in tmp_path.glob("local.db*"))
    records = b"".join(p.read_bytes() for p in backend.state_dir.iterdir() if p.is_file())
    for value in values.values():
        assert value not in history
        assert value.encode() not in stored
        assert value.encode() not in records


# -- item 6: a private state directory, no planted link followed -------------------------------


def test_state_dir_is_created_private_and_forced_private(tmp_path: Path) -> None:
    fresh = tmp_path / "a" / "procs"
    LocalProcessBackend(fresh).close()
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o700
    readable = tmp_path / "readable"
    readable.mkdir(mode=0o755)
    readable.chmod(0o755)
    LocalProcessBackend(readable).close()
    assert stat.S_IMODE(readable.stat().st_mode) == 0o700


@pytest.mark.parametrize("case", ["world-writable", "group-writable", "foreign", "symlink"])
def test_an_untrustworthy_state_dir_is_refused(tmp_path: Path, case: str) -> None:
    target = tmp_path / "procs"
    target.mkdir()
    target.chmod(0o700)
    if case == "world-writable":
        target.chmod(0o777)
    elif case == "group-writable":
        target.chmod(0o770)
    elif case == "foreign":
        if os.geteuid() != 0:
            unavailable("needs root to make a directory owned by someone else")
        os.chown(target, 65534, 65534)
    else:
        link = tmp_path / "link"
        link.symlink_to(target)
        target = link
    with pytest.raises(ValueError, match="state_dir"):
        LocalProcessBackend(target)
    with pytest.raises(ConfigError, match="state_dir"):
        from fsm.config import make_backend

        make_backend({"kind": "local", "state_dir": str(target)})


def _stems(entity_id: str, created_at: object) -> list[str]:
    """Every name an entity's files have had: by id alone, and by id with creation time."""
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", entity_id)[:60]
    old = hashlib.sha256(entity_id.encode()).hexdigest()[:8]
    new = hashlib.sha256(f"{entity_id}\0{created_at.isoformat()}".encode()).hexdigest()[:16]  # type: ignore[attr-defined]
    return [f"{safe}-{old}", f"{safe}-{new}"]


def test_planted_links_in_the_state_dir_are_never_written_through(
    tmp_path: Path, rig: tuple[Engine, Worker, LocalProcessBackend]
) -> None:
    engine, worker, backend = rig
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    entity = engine.create("service")
    for stem in _stems(entity.id, entity.created_at):
        for name in (
            f"{stem}.partial",
            f".{stem}.status.partial",
            f"{stem}.status",
            f"{stem}.json",
        ):
            (backend.state_dir / name).symlink_to(victim)
    argv = [sys.executable, "-c", "print('service output')"]
    worker.command(entity.id, "submit", {"process": {"argv": argv, "health": {"tcp": True}}})
    assert until_state(worker, engine, entity.id, "FAILED")
    assert victim.read_text() == "precious\n"
    assert engine.history(entity.id)[-1].payload.get("exit_code") == 0  # recorded for real


def test_a_planted_log_link_is_refused_not_appended_to(
    tmp_path: Path, rig: tuple[Engine, Worker, LocalProcessBackend]
) -> None:
    engine, worker, backend = rig
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    entity = engine.create("service")
    for stem in _stems(entity.id, entity.created_at):
        (backend.state_dir / f"{stem}.log").symlink_to(victim)
    with pytest.raises(CommandFailed):
        worker.command(entity.id, "submit", {"process": {"argv": SLEEPER}})
    assert victim.read_text() == "precious\n"
    assert engine.get(entity.id).state == "SUBMITTED"


def until_state(worker: Worker, engine: Engine, sid: str, state: str, timeout: float = 20) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        worker.tick()
        if engine.get(sid).state == state:
            return True
        time.sleep(0.1)
    return False


# -- item 12 (local part): bad settings are refused when the config is loaded ------------------


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("grace", "abc"),
        ("grace", -1),
        ("grace", float("nan")),
        ("grace", float("inf")),
        ("ping_timeout", 0),
        ("ping_timeout", True),
        ("host", ""),
        ("state_dir", 5),
        ("surprise", 1),
    ],
)
def test_bad_local_settings_are_refused_when_the_config_is_loaded(
    tmp_path: Path, setting: str, value: object
) -> None:
    config = tmp_path / "run.yaml"
    config.write_text(json.dumps({"backends": [{"kind": "local", setting: value}]}))
    with pytest.raises(ConfigError, match=setting):
        load_config(config)
