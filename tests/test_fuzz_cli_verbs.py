"""Hypothesis over the writing verbs' arguments (`create`, `command`, `submit`, `stop`,
`cancel`, `commands`), with the checks of `test_fuzz_cli`: exit 0, 1 or 2, one typed line on
failure, no traceback, no secret in any output or written byte, no file left by a failure — and
nothing partial: a verb that failed left every row of the database as it was."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import yaml
from hypothesis import given
from hypothesis import strategies as st

from tests.test_fuzz_cli import FAST, NUMBERS, SECRETS, TEXT, check, prepared, workspace

__all__ = ["prepared"]  # the fixture, shared with test_fuzz_cli

WRITE_DBS = st.sampled_from(["full", "full", "full", "new", "missing-dir", "text", "dir"])
IDS = st.sampled_from(["svc[/]web", "host-1", "op-ü", "done-0", "nosuch"]) | TEXT
VERBS = st.sampled_from(["stop", "ping_ok", "job_failed", "submit", "start", "nosuch"]) | TEXT
TIMES = (
    st.sampled_from(
        [
            "2030-01-01T00:00:00Z",
            "2030-01-01T00:00:00",
            "2030-01-01T00:00:00+05:00",
            "tomorrow",
            "",
            "9999-12-31T23:59:59Z",
            "0001-01-01T00:00:00Z",
        ]
    )
    | TEXT
)


def _db(tag: str, ws: Path) -> str:
    return {
        "full": f"sqlite:///{ws}/full.db",
        "new": f"sqlite:///{ws}/new.db",
        "missing-dir": f"sqlite:///{ws}/no/such/x.db",
        "text": f"sqlite:///{ws}/notes.txt",
        "dir": f"sqlite:///{ws}/dir",
    }[tag]


def _json_values(secret: str) -> st.SearchStrategy[str]:
    return (
        st.sampled_from(
            [
                "{}",
                '{"owner": "ann"}',
                f'{{"password": "{secret}"}}',
                f'{{"nested": {{"token": "{secret}"}}}}',
                '{"a":',
                "[1]",
                "null",
                "@missing.json",
                "@notes.txt",
                "@dir",
                "@pipe.yaml",
                "@data.json",
                "[" * 5000,
                '{"x": ' + "[" * 200 + "]" * 200 + "}",
            ]
        )
        | TEXT
    )


def _config(ws: Path, draw: st.DrawFn, secret: str) -> list[str]:
    kind = draw(st.sampled_from(["none", "profiles", "broken", "secret", "missing"]))
    path = ws / "run.yaml"
    if kind == "none":
        return []
    if kind == "profiles":
        body: Any = {
            "backends": [{"name": "laptop", "kind": "sim"}, {"name": "lab", "kind": "sim"}]
        }
    elif kind == "broken":
        body = {"backends": [{"name": draw(TEXT), "kind": "sim"}], "guards": {"g": draw(TEXT)}}
    elif kind == "secret":
        body = {"backends": [{"kind": "nosuch", "token": secret}]}
    else:
        return ["--config", str(ws / "missing.yaml")]
    path.write_text(yaml.safe_dump(body))
    return ["--config", str(path)]


def _rows(ws: Path) -> list[Any]:
    """Every row of the prepared database (the one a failed verb must leave alone)."""
    with sqlite3.connect(ws / "full.db") as conn:
        return [
            conn.execute(f"SELECT * FROM {table} ORDER BY 1").fetchall()
            for table in ("entity", "transition", "scheduled_command")
        ]


@FAST
@given(data=st.data(), secret=SECRETS)
def test_writing_verbs(prepared: Path, data: st.DataObject, secret: str) -> None:
    with workspace(prepared) as ws:
        (ws / "data.json").write_text(f'{{"api_key": "{secret}", "n": 1}}')
        verb = data.draw(
            st.sampled_from(["create", "command", "submit", "stop", "cancel", "commands"])
        )
        if verb == "create":
            args = [
                "create",
                data.draw(st.sampled_from(["service", "host", "operation", "x"]) | TEXT),
            ]
            for flag, values in (
                ("--data", _json_values(secret)),
                ("--id", IDS),
                ("--backend", st.sampled_from(["laptop", "lab", "nope"]) | TEXT),
            ):
                if data.draw(st.booleans()):
                    args += [flag, data.draw(values)]
        elif verb in ("command", "submit", "stop"):
            args = [verb, data.draw(IDS)]
            if verb == "command":
                args.append(data.draw(VERBS))
            if verb != "stop" and data.draw(st.booleans()):
                args += ["--args", data.draw(_json_values(secret))]
            if data.draw(st.booleans()):
                args += ["--at", data.draw(TIMES)]
            if data.draw(st.booleans()):
                args += ["--in", data.draw(NUMBERS)]
        elif verb == "cancel":
            args = ["cancel", data.draw(st.sampled_from(["1", "0", "-1", "abc", "9" * 30]) | TEXT)]
        else:
            args = ["commands", *data.draw(st.lists(IDS, max_size=1))]
            if data.draw(st.booleans()):
                args.append("--pending")
        args += _config(ws, data.draw, secret)
        args += ["--db", _db(data.draw(WRITE_DBS), ws)]
        if data.draw(st.booleans()):
            args.append("--json")
        before = _rows(ws)
        code = check(ws, args, secret=secret)
        if code != 0:
            assert _rows(ws) == before, args
