"""Hypothesis over every `fsm` command's arguments and the files they read.

For any command line (valid, hostile or absurd) and any definition or config file: the exit code
is 0, 1 or 2; no traceback and no "internal error" is printed; a failure is one line on stderr
(or, for `lint` and `verify`, the problems found, on stdout); everything printed can be written
to a UTF-8 terminal; a command that failed leaves no new file behind (no empty database); and no
secret given in the input (a URL's password, `$FSM_DB`, a config value) appears in the output or
in any byte of any file the command wrote.

The commands run in-process through `fsm.cli.main` (the console script's entry point), each
example in a fresh directory with copies of two prepared databases.
"""

from __future__ import annotations

import io
import logging
import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from fsm import Engine
from fsm.cli import main
from fsm.lifecycles import builtin_definition

FAST = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
SLOW = settings(FAST, max_examples=30)
PG = os.environ.get("FSM_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
#: what a Linux argv can hold: any text without NUL, including bytes that are not UTF-8
#: (Python decodes those to lone surrogates, U+DC80..U+DCFF)
TEXT = st.text(st.characters(exclude_characters="\x00"), max_size=40) | st.builds(
    str.__add__,
    st.text(max_size=10).map(lambda t: t.replace("\x00", "")),
    st.text(st.characters(min_codepoint=0xDC80, max_codepoint=0xDCFF), min_size=1, max_size=3),
)
SECRETS = st.text("0123456789abcdef", min_size=12, max_size=12).map(lambda h: f"zq{h}")
LAUGHS = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{b}: &{b} [{', '.join([f'*{a}'] * 9)}]\n" for a, b in zip("abcdefg", "bcdefgh", strict=True)
)


# -- the prepared world ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two databases: `full.db` (every kind of entity, ids with markup) and `done.db` (only
    terminal entities: a worker on it is idle at once)."""
    base = tmp_path_factory.mktemp("fuzz-cli")
    engine = Engine(f"sqlite:///{base}/full.db")
    web = engine.create("service", id="svc[/]web").id
    engine.fire(web, "job_running", source="ssh[bold]")
    engine.fire(web, "ping_ok", payload={"note": "[/]"})
    engine.create("host", id="host-1")
    engine.create("operation", {"kind": "x"}, id="op-ü")
    engine.close()
    engine = Engine(f"sqlite:///{base}/done.db")
    for i in range(3):
        sid = engine.create("service", id=f"done-{i}").id
        engine.fire(sid, "job_failed")
    engine.close()
    (base / "notes.txt").write_text("not a database\n" * 10)
    return base


@pytest.fixture(scope="module")
def busy_port() -> Iterator[int]:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


@contextmanager
def workspace(prepared: Path) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="fsm-fuzz-") as name:
        ws = Path(name)
        for file in ("full.db", "done.db", "notes.txt"):
            shutil.copy(prepared / file, ws / file)
        (ws / "dir").mkdir()
        os.mkfifo(ws / "pipe.yaml")
        yield ws


def db_url(tag: str, ws: Path, secret: str) -> str | None:
    return {
        "default": None,
        "full": f"sqlite:///{ws}/full.db",
        "done": f"sqlite:///{ws}/done.db",
        "new": f"sqlite:///{ws}/new.db",
        "missing-dir": f"sqlite:///{ws}/no/such/x.db",
        "text": f"sqlite:///{ws}/notes.txt",
        "dir": f"sqlite:///{ws}/dir",
        "memory": "sqlite://",
        "pg-closed": f"postgresql://u:{secret}@127.0.0.1:1/x",
        "pg-real": PG.replace("postgres@", f"postgres:{secret}@", 1),
        "bad-port": f"postgresql://u:{secret}@127.0.0.1:99999/x",
        "word-port": f"postgresql://u:{secret}@127.0.0.1:abc/x",
        "query": f"postgresql://u@127.0.0.1:1/x?password={secret}",
        "raw-at": f"postgresql://u:p@ss{secret}@127.0.0.1:1/x",
        "mysql": f"mysql://u:{secret}@127.0.0.1/x",
        "garbage": f"{secret}://::",
        "empty": "",
    }[tag]


READ_DBS = st.sampled_from(
    [
        "query",
        "raw-at",
        "default",
        "full",
        "done",
        "new",
        "missing-dir",
        "text",
        "dir",
        "memory",
        "pg-closed",
        "pg-real",
        "bad-port",
        "word-port",
        "mysql",
        "garbage",
        "empty",
    ]
)
RUN_DBS = st.sampled_from(
    [
        *("done", "new", "done", "new", "missing-dir", "text", "dir"),
        *("pg-closed", "bad-port", "mysql", "query", "raw-at"),
    ]
)
NUMBERS = st.sampled_from(
    ["0", "-1", "0.01", "0.1", "1", "nan", "inf", "-inf", "1e12", "1e300", "abc", "", "1e-300"]
)


# -- definition and config files ---------------------------------------------------------------


def _definitions() -> st.SearchStrategy[Any]:
    body = builtin_definition("operation").to_dict()
    mutated = st.builds(
        lambda key, value: {**body, key: value},
        st.sampled_from(["name", "states", "transitions", "description", "extra"]),
        st.recursive(
            st.none() | st.booleans() | st.floats() | st.integers() | TEXT,
            lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
            max_leaves=12,
        ),
    )
    return st.just(body) | mutated


VALID_NUMBERS = st.sampled_from([0.5, 1, 2, 10, 30.0])
CONFIG_VALUES = st.one_of(
    VALID_NUMBERS,
    VALID_NUMBERS,
    VALID_NUMBERS,
    st.floats(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.booleans(),
    st.none(),
    TEXT,
    st.sampled_from(["abc", ".inf", ".nan", "1e400"]),
)


@st.composite
def config_bodies(draw: st.DrawFn, secret: str) -> dict[str, Any]:
    keys = ["interval", "batch_size", "lease_seconds", "max_backoff", "refresh_scale", "bogus"]
    body: dict[str, Any] = {}
    for key in draw(st.lists(st.sampled_from(keys), max_size=2, unique=True)):
        body[key] = draw(CONFIG_VALUES)
    backend = draw(
        st.sampled_from(
            [
                None,
                {"kind": "sim"},
                {"kind": "local", "state_dir": "procs"},
                {"kind": "local", "grace": draw(CONFIG_VALUES)},
                {"kind": "local", "ping_timeout": draw(CONFIG_VALUES), "state_dir": "procs"},
                {"kind": "local", "password": secret},
                {"kind": "nosuch", "token": secret},
                {"kind": draw(TEXT)},
            ]
        )
    )
    if backend is not None:
        body["backends"] = [backend]
    if draw(st.booleans()):
        body["db"] = draw(st.sampled_from([f"postgresql://u:{secret}@127.0.0.1:abc/x", secret]))
    if draw(st.booleans()):
        body["lifecycles"] = draw(st.sampled_from([["missing.yaml"], ["laughs.yaml"], [5]]))
    return body


FILES = st.sampled_from(
    [
        "definition",
        "laughs",
        "deep",
        "latin1",
        "bytes",
        "control",
        "missing",
        "dir",
        "pipe",
        "empty",
    ]
)


def write_file(ws: Path, kind: str, draw: st.DrawFn, name: str) -> Path:
    path = ws / name
    if kind == "definition":
        path.write_text(yaml.safe_dump(draw(_definitions())))
    elif kind == "laughs":
        path.write_text(LAUGHS + "name: *h\nstates: *h\n")
    elif kind == "deep":
        path.write_text("[" * 3000 + "]" * 3000)
    elif kind == "latin1":
        path.write_bytes("name: café\n".encode("latin-1"))
    elif kind == "bytes":
        path.write_bytes(draw(st.binary(max_size=200)))
    elif kind == "control":  # valid UTF-8 that YAML refuses (C0 controls, BOMs, surrogates)
        path.write_text(
            "name: " + draw(st.text(st.sampled_from("\x01\x1f\x7f\ufeff\ufffe\x85 a:"))),
            encoding="utf-8",
        )
    elif kind == "empty":
        path.write_text("")
    elif kind == "dir":
        return ws / "dir"
    elif kind == "pipe":
        return ws / "pipe.yaml"
    return path  # "missing": never written


# -- running a command line and checking everything about it ---------------------------------


@contextmanager
def environment(fsm_db: str | None) -> Iterator[None]:
    saved = os.environ.get("FSM_DB")
    handlers, level = logging.getLogger().handlers[:], logging.getLogger().level
    if fsm_db is None:
        os.environ.pop("FSM_DB", None)
    else:
        os.environ["FSM_DB"] = fsm_db
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("FSM_DB", None)
        else:
            os.environ["FSM_DB"] = saved
        logging.getLogger().handlers[:] = handlers
        logging.getLogger().setLevel(level)


def snapshot(ws: Path) -> dict[str, bytes]:
    found = {}
    for path in ws.rglob("*"):
        if path.is_file() and not path.is_symlink():
            found[str(path.relative_to(ws))] = path.read_bytes()
        elif path.is_dir():
            found[str(path.relative_to(ws)) + "/"] = b""
    return found


def check(
    ws: Path,
    args: list[str],
    *,
    secret: str,
    fsm_db: str | None = None,
    problems_on_stdout: bool = False,
) -> int:
    before = snapshot(ws)
    out, err = io.StringIO(), io.StringIO()
    cwd = os.getcwd()
    os.chdir(ws)
    try:
        with environment(fsm_db), redirect_stdout(out), redirect_stderr(err):
            code = main(args)
    finally:
        os.chdir(cwd)
    stdout, stderr = out.getvalue(), err.getvalue()
    shown = f"args={args!r}\nstdout={stdout[-800:]!r}\nstderr={stderr[-800:]!r}"
    assert code in (0, 1, 2), shown
    event(f"{args[0]}: exit {code}")
    assert "Traceback" not in stdout + stderr, shown
    assert "internal error" not in stderr, shown
    (stdout + stderr).encode("utf-8")  # a real terminal must be able to show it
    if code != 0:
        errors = [line for line in stderr.splitlines() if line.startswith("fsm: error: ")]
        if not (problems_on_stdout and code == 1 and not errors):
            assert len(errors) == 1, shown
            assert stderr.count("\n") == 1 or _only_logs_besides(stderr, errors[0]), shown
        after = snapshot(ws)
        created = [
            name
            for name in set(after) - set(before)
            if not name.endswith(("-wal", "-shm", "procs/"))
        ]
        assert created == [], (created, shown)
    written = [v for k, v in snapshot(ws).items() if before.get(k) != v]  # not the inputs
    assert secret not in stdout + stderr, shown
    assert not any(secret.encode() in data for data in written), shown
    return code


def _only_logs_besides(stderr: str, error: str) -> bool:
    """`fsm run` logs (timestamped or JSON lines) before it may fail."""
    return all(
        line == error or line[:4].isdigit() or line.startswith("{") for line in stderr.splitlines()
    )


# -- the commands ------------------------------------------------------------------------------


JUNK = st.lists(st.sampled_from(["--bogus", "-x", "--json", "--", "extra", "--db"]), max_size=2)


@FAST
@given(data=st.data(), secret=SECRETS)
def test_machines_lint_and_diagram(prepared: Path, data: st.DataObject, secret: str) -> None:
    with workspace(prepared) as ws:
        command = data.draw(st.sampled_from(["machines", "lint", "diagram"]))
        if command == "machines":
            args = ["machines", *data.draw(JUNK)]
        elif command == "lint":
            kinds = data.draw(st.lists(FILES, min_size=1, max_size=3))
            files = [str(write_file(ws, k, data.draw, f"d{i}.yaml")) for i, k in enumerate(kinds)]
            if data.draw(st.booleans()):
                files.append(str(write_file(ws, data.draw(FILES), data.draw, "d.json")))
            guards = data.draw(st.lists(TEXT, max_size=2))
            args = ["lint", *files, *[x for g in guards for x in ("--guard", g)]]
            if data.draw(st.booleans()):
                args.append("--json")
        else:
            name = data.draw(st.sampled_from(["service", "host", "file", "nosuch", ""]))
            if name == "file":
                name = str(write_file(ws, data.draw(FILES), data.draw, "draw.yaml"))
            fmt = data.draw(st.sampled_from(["mermaid", "dot", "png", "", "svg"]))
            output = data.draw(st.sampled_from([None, "out.txt", "no/such/out.txt", "dir"]))
            args = ["diagram", name, "--format", fmt]
            if output is not None:
                args += ["-o", str(ws / output)]
        check(ws, args, secret=secret, problems_on_stdout=command == "lint")


@FAST
@given(data=st.data(), secret=SECRETS)
def test_status_history_and_verify(prepared: Path, data: st.DataObject, secret: str) -> None:
    with workspace(prepared) as ws:
        command = data.draw(st.sampled_from(["status", "history", "verify"]))
        db = db_url(data.draw(READ_DBS), ws, secret)
        fsm_db = db_url(data.draw(READ_DBS), ws, secret) if data.draw(st.booleans()) else None
        args = [command]
        if command == "history":
            args.append(data.draw(st.sampled_from(["svc[/]web", "op-ü", "done-0"]) | TEXT))
        if command == "status":
            for flag, values in (
                ("--lifecycle", ["service", "host", "nosuch"]),
                ("--state", ["HEALTHY", "FAILED", "NEW", "nosuch"]),
            ):
                if data.draw(st.booleans()):
                    args += [flag, data.draw(st.sampled_from(values) | TEXT)]
        if db is not None:
            args += ["--db", db]
        if data.draw(st.booleans()):
            args.append("--json")
        args += data.draw(JUNK)
        check(ws, args, secret=secret, fsm_db=fsm_db, problems_on_stdout=command == "verify")


@FAST
@given(data=st.data(), secret=SECRETS)
def test_watch(prepared: Path, data: st.DataObject, secret: str) -> None:
    with workspace(prepared) as ws:
        db = db_url(data.draw(READ_DBS), ws, secret)
        args = ["watch", "--for", data.draw(st.sampled_from(["0", "0.05", "nan", "inf", "-1"]))]
        if db is not None:
            args += ["--db", db]
        if data.draw(st.booleans()):
            args += ["--since", data.draw(NUMBERS)]
        interval = data.draw(NUMBERS)
        args += ["--interval", "0.05" if _valid_but_slow(interval) else interval]
        check(ws, args, secret=secret)


def _valid_but_slow(seconds: str) -> bool:
    """An interval `watch` accepts but would sleep through (the test only waits 0.05 s)."""
    try:
        value = float(seconds)
    except ValueError:
        return False
    return 0.2 < value <= 3600


@SLOW
@given(data=st.data(), secret=SECRETS)
def test_run(prepared: Path, busy_port: int, data: st.DataObject, secret: str) -> None:
    with workspace(prepared) as ws:
        args = ["run", "--exit-when-idle"]
        db = db_url(data.draw(RUN_DBS), ws, secret)
        if db is not None:
            args += ["--db", db]
        config = data.draw(st.sampled_from(["none", "body", "body", "file"]))
        if config == "body":
            (ws / "laughs.yaml").write_text(LAUGHS)
            (ws / "run.yaml").write_text(yaml.safe_dump(data.draw(config_bodies(secret))))
            args += ["--config", str(ws / "run.yaml")]
        elif config == "file":
            args += ["--config", str(write_file(ws, data.draw(FILES), data.draw, "run.yaml"))]
        sometimes = st.integers(0, 3).map(lambda n: n == 0)  # each hostile option: 1 in 4
        if data.draw(sometimes):
            port = data.draw(st.sampled_from([str(busy_port), "0", "70000", "abc"]))
            args += ["--metrics-port", port]
        if data.draw(st.booleans()):
            args += ["--worker-id", data.draw(st.sampled_from(["w-1", "[/]w"]) | TEXT)]
        if data.draw(sometimes):
            audit = data.draw(st.sampled_from(["audit.jsonl", "no/such/a.jsonl", "dir"]))
            args += ["--lease-audit", str(ws / audit)]
        if data.draw(st.booleans()):
            args.append("--log-json")
        if data.draw(sometimes):
            args += ["--log-level", data.draw(st.sampled_from(["DEBUG", "info", "LOUD"]))]
        check(ws, args, secret=secret)


@settings(SLOW, max_examples=15)
@given(data=st.data(), secret=SECRETS)
def test_scripted_demo(prepared: Path, data: st.DataObject, secret: str) -> None:
    with workspace(prepared) as ws:
        tag = data.draw(st.sampled_from(["new", "text", "full", "pg-closed", "word-port", "mysql"]))
        db = db_url(tag, ws, secret)
        args = ["demo", "--scripted", "--db", db or ""]
        if data.draw(st.booleans()):
            args += ["--seconds", data.draw(NUMBERS)]
        check(ws, args, secret=secret)
