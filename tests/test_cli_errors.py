"""Hostile or careless input to the `fsm` command: one typed line and a non-zero exit, never a
traceback, never a database left behind by a command that was refused."""

from __future__ import annotations

import os
import resource
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fsm import Engine
from fsm.cli import main
from tests.components import unavailable

ROOT = Path(__file__).resolve().parent.parent

LAUGHS = "\n".join(
    [
        'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]',
        *(
            f"{b}: &{b} [{', '.join([f'*{a}'] * 9)}]"
            for a, b in zip("abcdefg", "bcdefgh", strict=True)
        ),
        "name: *h",
        "states: *h",
        "transitions: *h",
    ]
)


def fsm(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def fsm_process(
    *args: str, limit_memory: bool = False, **options: object
) -> subprocess.CompletedProcess[str]:
    script = Path(sys.executable).with_name("fsm")

    def limits() -> None:
        if limit_memory:
            resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))  # 1 GiB

    return subprocess.run(  # type: ignore[call-overload, no-any-return]
        [str(script), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        preexec_fn=limits,
        **options,
    )


def one_error_line(err: str) -> str:
    assert "Traceback" not in err, err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("fsm: error: "), err
    assert "internal error" not in lines[0]
    return lines[0]


# -- item 8: a billion laughs, deep nesting, non-UTF-8 --------------------------------------


def test_a_billion_laughs_definition_is_refused_quickly_and_small(tmp_path: Path) -> None:
    path = tmp_path / "laughs.yaml"
    path.write_text(LAUGHS)
    assert path.stat().st_size < 1024
    started = time.monotonic()
    try:
        done = fsm_process("lint", str(path), limit_memory=True)
    except subprocess.TimeoutExpired:
        pytest.fail("fsm lint still ran after 60 s")
    assert time.monotonic() - started < 30
    assert done.returncode == 1, done.stderr[-500:]
    assert "Traceback" not in done.stderr and "MemoryError" not in done.stderr
    assert "too many aliases" in done.stdout


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_deeply_nested_files_are_one_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], suffix: str
) -> None:
    path = tmp_path / f"deep{suffix}"
    path.write_text('{"name": ' + "[" * 5000 + "]" * 5000 + "}")
    code, out, err = fsm(capsys, "lint", str(path))
    assert code == 1 and err == ""
    assert "nests deeper than" in out
    config = tmp_path / f"deep-config{suffix}"
    config.write_text('{"backends": ' + "[" * 5000 + "]" * 5000 + "}")
    db = tmp_path / "fsm.db"
    code, _, err = fsm(
        capsys, "run", "--exit-when-idle", "--config", str(config), "--db", f"sqlite:///{db}"
    )
    assert code == 1 and "nests deeper than" in one_error_line(err)
    assert not db.exists()


def test_non_utf8_files_are_one_problem(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes("name: café\n".encode("latin-1"))
    code, out, _ = fsm(capsys, "lint", str(path))
    assert code == 1 and "not UTF-8" in out
    db = tmp_path / "fsm.db"
    code, _, err = fsm(
        capsys, "run", "--exit-when-idle", "--config", str(path), "--db", f"sqlite:///{db}"
    )
    assert code == 1 and "not UTF-8" in one_error_line(err)
    assert not db.exists()


@pytest.mark.parametrize("text", ["name: a\x1fb\n", "\ufeff\ufffe: x", "a: b\n\x00"])
def test_control_characters_are_one_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str
) -> None:
    path = tmp_path / "control.yaml"
    path.write_text(text, encoding="utf-8")
    code, out, err = fsm(capsys, "lint", str(path))
    assert code == 1 and err == ""
    assert "not valid YAML" in out


def test_a_fifo_is_refused_not_waited_for(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fifo = tmp_path / "pipe.yaml"
    os.mkfifo(fifo)
    code, out, _ = fsm(capsys, "lint", str(fifo))
    assert code == 1 and "not a regular file" in out


# -- item 11: bad numbers in configs, URLs, options --------------------------------------------


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ("batch_size: .inf", "batch_size"),
        ("interval: .inf", "interval"),
        ("interval: .nan", "interval"),
        ("lease_seconds: .nan", "lease_seconds"),
        ("max_backoff: -.inf", "max_backoff"),
        ("batch_size: 2.5", "batch_size"),
        ("refresh_scale: 0", "refresh_scale"),
        ("backends: [{kind: local, grace: abc}]", "grace"),
        ("backends: [{kind: nosuch}]", "unknown backend kind"),
        ("lifecycles: [missing.yaml]", "missing.yaml"),
        ("db: 'postgresql://u:hunter2@h:abc/x'", "not a database URL"),
    ],
)
def test_bad_config_values_are_one_line_and_create_nothing(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    body: str,
    needle: str,
) -> None:
    config = tmp_path / "run.yaml"
    config.write_text(body + "\n")
    monkeypatch.chdir(tmp_path)
    code, out, err = fsm(capsys, "run", "--exit-when-idle", "--config", str(config))
    assert code in (1, 2) and out == ""
    line = one_error_line(err)
    assert needle in line and "hunter2" not in line
    assert list(tmp_path.iterdir()) == [config]  # no database, no lock file


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://u@localhost:99999/db",
        "postgresql://u@localhost:abc/db",
        "postgresql://u:hunter2@localhost:0/db",
        "mysql://u@localhost/db",
        "sqlite+aiosqlite:///x.db",
        "not a url",
    ],
)
@pytest.mark.parametrize(
    "command", [["status"], ["watch", "--for", "0"], ["run", "--exit-when-idle"], ["verify"]]
)
def test_bad_database_urls_exit_2_with_one_line(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    url: str,
    command: list[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    code, out, err = fsm(capsys, *command, "--db", url)
    assert code == 2 and out == ""
    line = one_error_line(err)
    assert "hunter2" not in line
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "args",
    [
        ["--since", "1e12"],
        ["--interval", "1e300"],
        ["--interval", "nan"],
        ["--since", "nan"],
        ["--for", "inf"],
        ["--for", "nan"],
    ],
)
def test_watch_refuses_absurd_times(
    sqlite_url: str, capsys: pytest.CaptureFixture[str], args: list[str]
) -> None:
    Engine(sqlite_url).close()
    code, out, err = fsm(capsys, "watch", "--db", sqlite_url, *args)
    assert code == 2 and out == ""
    one_error_line(err)


def test_demo_refuses_nan_seconds(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = fsm(capsys, "demo", "--db", f"sqlite:///{tmp_path}/d.db", "--seconds", "nan")
    assert code == 2
    one_error_line(err)
    assert list(tmp_path.iterdir()) == []


def test_watch_prints_ids_and_sources_with_markup_characters(
    sqlite_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    engine = Engine(sqlite_url)
    sid = engine.create("service", id="svc[/]x[bold]").id
    engine.fire(sid, "job_running", source="ssh[/]")
    engine.close()
    code, out, err = fsm(capsys, "watch", "--db", sqlite_url, "--since", "3600", "--for", "0.3")
    assert (code, err) == (0, "")
    assert "svc[/]x[bold]" in out and "(ssh[/])" in out


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def test_a_metrics_port_in_use_is_one_line_before_any_database(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], busy_port: int
) -> None:
    db = tmp_path / "fsm.db"
    args = ["run", "--db", f"sqlite:///{db}", "--metrics-port", str(busy_port), "--exit-when-idle"]
    code, _, err = fsm(capsys, *args)
    assert code == 1 and "in use" in one_error_line(err)
    assert not db.exists()


def test_bad_worker_ids_and_lease_audit_paths_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "fsm.db"
    for extra in (
        ["--worker-id", ""],
        ["--worker-id", "x" * 500],
        ["--worker-id", "bad\x00id"],
        ["--lease-audit", str(tmp_path / "no" / "such" / "dir" / "a.jsonl")],
        ["--lease-audit", str(tmp_path)],
    ):
        code, _, err = fsm(capsys, "run", "--db", f"sqlite:///{db}", "--exit-when-idle", *extra)
        assert code == 2, extra
        one_error_line(err)
        assert not db.exists()


@pytest.fixture
def immutable(tmp_path: Path) -> Iterator[list[Path]]:
    """Files made immutable (chattr +i): read-only even for root, as a read-only mount is."""
    if shutil.which("chattr") is None or os.geteuid() != 0:
        unavailable("chattr (e2fsprogs) and root are needed for this test")
    made: list[Path] = []
    yield made
    for path in made:
        subprocess.run(["chattr", "-i", str(path)], check=False)


def _freeze(made: list[Path], path: Path) -> None:
    done = subprocess.run(["chattr", "+i", str(path)], capture_output=True, check=False)
    if done.returncode != 0:
        unavailable(f"this filesystem has no immutable files: {done.stderr!r}")
    made.append(path)


def test_a_read_only_lock_file_or_database_is_one_line(
    tmp_path: Path, immutable: list[Path]
) -> None:
    db = tmp_path / "fsm.db"
    Engine(f"sqlite:///{db}").close()
    lock = tmp_path / "fsm.db.worker-lock"
    lock.write_text("")
    _freeze(immutable, lock)
    done = fsm_process("run", "--db", f"sqlite:///{db}", "--exit-when-idle", cwd=tmp_path)
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("fsm: error")]
    if done.returncode != 0:  # a worker that uses this lock file cannot open it: one line
        assert done.returncode == 1 and len(errors) == 1, done.stderr
    subprocess.run(["chattr", "-i", str(lock)], check=True)
    lock.unlink()
    for path in sorted(tmp_path.glob("fsm.db*")):
        _freeze(immutable, path)  # now the database itself cannot be written
    done = fsm_process("run", "--db", f"sqlite:///{db}", "--exit-when-idle", cwd=tmp_path)
    assert "Traceback" not in done.stderr + done.stdout
    errors = [line for line in done.stderr.splitlines() if line.startswith("fsm: error")]
    assert done.returncode == 0 or (done.returncode == 1 and len(errors) == 1), done.stderr


def test_a_real_process_never_prints_a_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(b"\xff\xfe interval: .inf")
    for args in (
        ["run", "--exit-when-idle", "--config", str(bad), "--db", f"sqlite:///{tmp_path}/x.db"],
        ["watch", "--db", "postgresql://u@h:abc/x", "--for", "0"],
        ["lint", str(bad)],
        ["diagram", str(bad)],
    ):
        done = fsm_process(*args, cwd=tmp_path)
        assert done.returncode in (1, 2), (args, done.stderr)
        assert "Traceback" not in done.stderr + done.stdout, args
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml"]
