"""Audit of issue 8, item 2: secret forms the hardening suites did not try. Each test puts a
canary in as a user would and looks for it (or any piece of it) where it must never appear."""

from __future__ import annotations

import uuid

import pytest

from fsm.cli import main
from fsm.redaction import redact, redact_text


def canary() -> str:
    return f"CANARY{uuid.uuid4().hex[:12]}"


def test_a_password_with_a_raw_at_sign_never_shows_in_the_driver_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`u:p@ss<secret>@host`: the driver splits at the first `@` and names `ss<secret>@host`
    as the host it could not resolve; no piece of the password may reach the message."""
    monkeypatch.setenv("PGCONNECT_TIMEOUT", "2")
    secret = canary()
    for url in (
        f"postgresql://svc:p@ss{secret}@127.0.0.1:1/db",
        f"postgresql://svc:{secret}@x@127.0.0.1:1/db",
    ):
        assert main(["status", "--db", url]) != 0
        out, err = capsys.readouterr()
        assert secret not in out + err, err
        assert err.startswith("fsm: error:")


@pytest.mark.parametrize(
    "text",
    [
        "serve --password {s} --port 8080",
        "mysqldump --db-pass {s}",
        "run.sh --token {s}",
        "['serve', '--password', '{s}']",
        '["serve", "--api-key", "{s}"]',
    ],
)
def test_a_secret_flag_followed_by_its_value_in_text_is_masked(text: str) -> None:
    """The argv rule (`["--password", v]`) also holds once the argv is text: a command line
    in entity data, or a log line that prints an argv list."""
    secret = canary()
    line = text.format(s=secret)
    assert secret not in redact_text(line)
    assert secret not in str(redact({"command": line}))


@pytest.mark.parametrize("text", ["serve --port 8080 --verbose", "--token-count 5", "a -- b"])
def test_flags_that_are_not_secret_keep_their_values(text: str) -> None:
    assert redact_text(text) == text
