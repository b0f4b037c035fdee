"""Issue 8, item 2: one redaction policy for everything persisted or logged. Every test puts
canary secrets in, then looks for them in the database's bytes and in the logs."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fsm import Engine, Event, FsmError, Observation, StorageError, Worker
from fsm.cli import main
from tests.hardening_support import stored_bytes

ISSUE_KEYS = (
    "pass",
    "pw",
    "db_pass",
    "jwt",
    "bearer",
    "session_id",
    "dsn",
    "connection_string",
    "otp",
    "pin",
    "sig",
)
KNOWN_KEYS = ("password", "apiKey", "accessToken", "client-secret", "DB_PASSWORD", "GITHUBTOKEN")
PLAIN_KEYS = ("job_id", "max_tokens", "continuation_token", "public_key", "tokenizer", "node")


def canary() -> str:
    return f"CANARY{uuid.uuid4().hex[:12]}"


def innocuous(secret: str) -> dict[str, Any]:
    """Secrets under keys that say nothing: only their form gives them away."""
    return {
        "url": f"https://api.example.com/v1/items?page=2&token={secret}&sort=asc",
        "dsn_like": f"postgresql://svc:{secret}@db.example.com:5432/app",
        "header": f"Bearer {secret}abcdefgh",
        "argv": ["serve", "--password", secret, "--port", "8080"],
        "argv_eq": ["serve", f"--api-key={secret}"],
        "env": [{"name": "API_TOKEN", "value": secret}, {"name": "MODE", "value": "fast"}],
        "env_line": f"DB_PASSWORD={secret} RUN=1",
        "log": f"connect failed: {{'password': '{secret}', 'user': 'bob'}}",
    }


def _assert_absent(engine: Engine, *secrets: str) -> None:
    blob = stored_bytes(engine)
    for secret in secrets:
        assert secret.encode() not in blob, f"{secret} reached the database"


# -- the policy ------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ISSUE_KEYS + KNOWN_KEYS)
def test_secret_key_names_are_masked(key: str) -> None:
    from fsm.redaction import redact

    secret = canary()
    assert secret not in json.dumps(redact({key: secret, "nested": [{key: secret}]}))


@pytest.mark.parametrize("key", PLAIN_KEYS)
def test_plain_keys_are_kept(key: str) -> None:
    from fsm.redaction import redact

    assert redact({key: "value-1"}) == {key: "value-1"}


def test_values_that_look_secret_are_masked_under_any_key() -> None:
    from fsm.redaction import redact

    secret = canary()
    masked = redact(innocuous(secret))
    assert secret not in json.dumps(masked)
    assert masked["argv"] == ["serve", "--password", "***", "--port", "8080"]
    assert masked["env"][1] == {"name": "MODE", "value": "fast"}
    assert masked["url"].startswith("https://api.example.com/v1/items?page=2&token=")
    assert masked["url"].endswith("&sort=asc")


def test_well_known_token_formats_are_masked() -> None:
    from fsm.redaction import redact_text

    samples = [
        "ghp_" + "a1" * 18,
        "github_pat_" + "b2" * 15,
        "xoxb-1234567890-abcdefghij",
        "AKIA" + "ABCDEFGHIJKLMNOP",
        "hf_" + "c" * 34,
        "sk-" + "d" * 40,
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9P",
        "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXk\n-----END OPENSSH PRIVATE KEY-----",
    ]
    for sample in samples:
        text = redact_text(f"found {sample} here")
        assert sample not in text and text.startswith("found ") and text.endswith(" here")


def test_the_policy_is_extensible() -> None:
    from fsm.redaction import RedactionPolicy

    policy = RedactionPolicy()
    assert policy.redact({"ssn": "123", "pin_code": "9"}) == {"ssn": "123", "pin_code": "***"}
    policy.add_secret_keys("ssn", "license_key")
    policy.allow_keys("pin_code")
    policy.add_secret_pattern(r"EMP-(?P<secret>\d{6})")
    policy.add_secret_pattern(r"\bINTERNAL-[A-Z]{8}\b")
    out = policy.redact(
        {"ssn": "123", "LicenseKey": "k", "pin_code": "9", "note": "EMP-123456 INTERNAL-ABCDEFGH"}
    )
    assert out == {"ssn": "***", "LicenseKey": "***", "pin_code": "9", "note": "EMP-*** ***"}


json_leaf = st.one_of(st.none(), st.booleans(), st.integers(-(2**40), 2**40), st.text(max_size=30))


@st.composite
def secret_documents(draw: st.DrawFn) -> tuple[Any, list[str]]:
    """A JSON document with canaries hidden in it in every way the policy must catch."""
    secrets: list[str] = []

    def hide() -> Any:
        secret = f"CANARY{draw(st.integers(0, 10**9))}x"
        secrets.append(secret)
        form = draw(st.integers(0, 5))
        if form == 0:
            return {draw(st.sampled_from(ISSUE_KEYS + KNOWN_KEYS)): secret}
        if form == 1:
            return f"https://u:{secret}@h.example/x"
        if form == 2:
            return ["--password", secret]
        if form == 3:
            return {"name": "DB_PASSWORD", "value": secret}
        if form == 4:
            return f"token={secret}&a=b"
        return f"Authorization: Bearer {secret}zzzzzzzzzz"

    tree = draw(
        st.recursive(
            st.one_of(json_leaf, st.builds(hide)),
            lambda kids: st.one_of(
                st.lists(kids, max_size=4),
                st.dictionaries(st.sampled_from((*PLAIN_KEYS, "a", "b")), kids, max_size=4),
            ),
            max_leaves=12,
        )
    )
    return {"doc": tree, "last": hide()}, secrets


@given(secret_documents())
def test_no_hidden_secret_survives_and_masking_is_idempotent(doc: tuple[Any, list[str]]) -> None:
    from fsm.redaction import redact

    value, secrets = doc
    masked = redact(value)
    text = json.dumps(masked)
    for secret in secrets:
        assert secret not in text
    assert redact(masked) == masked


# -- what is persisted -----------------------------------------------------------------------


def test_entity_data_and_payloads_never_keep_a_secret(engine: Engine) -> None:
    secrets = [canary() for _ in range(6)]
    s = engine.create(
        "service",
        {"db_pass": secrets[0], "config": innocuous(secrets[1]), "job_id": None},
    )
    engine.fire(s.id, "job_pending", {"jwt": secrets[2]}, data={"session_id": secrets[3]})
    engine.fire(s.id, "job_running", innocuous(secrets[4]), data=innocuous(secrets[5]))
    stored = engine.get(s.id).data
    assert stored["db_pass"] == "***" and stored["session_id"] == "***"
    assert stored["job_id"] is None and stored["config"]["argv"][0] == "serve"
    _assert_absent(engine, *secrets)


class _Recorder:
    """A backend that remembers what it was given and reports data with secrets."""

    name = "recorder"
    lifecycles = frozenset({"service"})
    commands = frozenset({"submit"})
    releases = False

    def __init__(self, leak: str) -> None:
        self.leak = leak
        self.seen: list[Mapping[str, Any]] = []

    def observe_safely(self, entities: Sequence[Any], now: datetime) -> list[Observation]:
        return [
            Observation(e.id, (), None, {"tunnel": {"otp": self.leak, "port": 1}}, now)
            for e in entities
        ]

    def execute(
        self, entity: Any, command: str, arguments: Mapping[str, Any], now: datetime
    ) -> Any:
        self.seen.append(arguments)

        class Result:
            data = {"connection_string": f"Server=x;Password={self.leak}"}
            events = ("job_pending",)
            payload = {"pin": self.leak}

        return Result()

    def release(self, entity: Any, now: datetime) -> None:  # pragma: no cover - releases=False
        raise AssertionError


def test_backend_data_results_and_observations_are_masked(engine: Engine, clock: Any) -> None:
    leak = canary()
    backend = _Recorder(leak)
    worker = Worker(engine, [backend])
    s = engine.create("service")
    worker.command(s.id, "submit", {"env": {"HF_TOKEN": leak}})
    assert backend.seen[0] == {"env": {"HF_TOKEN": leak}}  # the backend gets the real value
    clock.advance(3600)
    assert worker.refresh().claimed == 1
    assert engine.get(s.id).data["tunnel"] == {"otp": "***", "port": 1}
    _assert_absent(engine, leak)


def test_scheduled_arguments_hold_references_never_secrets(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fsm.secret_refs import SecretInArguments, secret_ref

    secret = canary()
    backend = _Recorder(canary())
    worker = Worker(engine, [backend])
    s = engine.create("service")
    with pytest.raises(SecretInArguments, match="HF_TOKEN"):
        worker.schedule(s.id, "submit", {"env": {"HF_TOKEN": secret}}, delay=0)
    with pytest.raises(SecretInArguments):
        worker.schedule(s.id, "submit", {"argv": ["x", "--password", secret]}, delay=0)
    _assert_absent(engine, secret)
    monkeypatch.setenv("FSM_SECRET_HF_TOKEN", secret)
    worker.schedule(s.id, "submit", {"env": {"HF_TOKEN": secret_ref("HF_TOKEN")}}, delay=0)
    assert worker.run_commands() == 1
    assert backend.seen == [{"env": {"HF_TOKEN": secret}}]  # resolved in memory only
    history = engine.history(s.id)
    assert history[-1].payload["env"] == {"HF_TOKEN": {"$secret": "HF_TOKEN"}}
    _assert_absent(engine, secret, backend.leak)


def test_a_missing_secret_reference_is_refused_before_the_backend_acts(engine: Engine) -> None:
    from fsm.secret_refs import SecretNotFound, secret_ref

    backend = _Recorder("x")
    worker = Worker(engine, [backend])
    s = engine.create("service")
    with pytest.raises(SecretNotFound, match="FSM_SECRET_NOPE"):
        worker.command(s.id, "submit", {"env": {"T": secret_ref("NOPE")}})
    assert backend.seen == [] and engine.get(s.id).state == "SUBMITTED"


def test_refused_and_failed_commands_leave_no_secret(engine: Engine, clock: Any) -> None:
    secret = canary()
    worker = Worker(engine, [])
    s = engine.create("service")
    worker.schedule(s.id, "ping_ok", {"note": "fine"}, delay=5)
    engine.fire(s.id, "stop")  # STOPPED: the scheduled ping is refused when it runs
    clock.advance(10)
    worker.run_commands()
    with engine.store.transaction() as uow:
        outcome = uow.connection.exec_driver_sql("SELECT outcome FROM scheduled_command").scalar()
    assert outcome is not None and outcome.startswith("refused")
    from storage import queue

    cid = worker.schedule(s.id, "stop", {}, delay=0)  # an outcome text with a secret is masked
    with engine.store.transaction() as uow:
        assert [c.id for c in queue.claim_commands(uow, worker.id, clock(), clock(), 10)] == [cid]
        queue.complete_command(uow, cid, worker.id, clock(), f"failed: password={secret}")
    _assert_absent(engine, secret)


# -- URLs, messages and logs -----------------------------------------------------------------


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


URLS = [
    "postgresql://svc:{s}@127.0.0.1:1/db",
    "postgresql://svc:{s}@127.0.0.1:notaport/db",
    "postgresql://svc:{s}@[::1/db",
    "postgresql://127.0.0.1:1/db?password={s}",
    "mysql+nosuchdriver://svc:{s}@h/db",
    "nonsense://svc:{s}@",
    "svc:{s}@host",
]


@pytest.mark.parametrize("template", URLS)
def test_database_urls_never_show_their_password(
    template: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PGCONNECT_TIMEOUT", "2")
    secret = canary()
    url = template.format(s=secret)
    with pytest.raises((StorageError, FsmError)) as raised:
        Engine(url)
    assert secret not in str(raised.value)
    for args in (["status", "--db", url], ["history", "x", "--db", url, "--json"]):
        main(args)
        out, err = capsys.readouterr()
        assert secret not in out + err
    monkeypatch.setenv("FSM_DB", url)
    main(["status"])
    out, err = capsys.readouterr()
    assert secret not in out + err and err.startswith("fsm: error:")


def test_run_with_json_logs_never_shows_the_password(
    tmp_path: Any,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    restore_logging: None,
) -> None:
    monkeypatch.setenv("PGCONNECT_TIMEOUT", "2")
    secret = canary()
    for url in (f"postgresql://svc:{secret}@127.0.0.1:1/db", f"postgresql://svc:{secret}@[::1"):
        main(["run", "--db", url, "--log-json", "--exit-when-idle"])
        out, err = capsys.readouterr()
        assert secret not in out + err


def test_every_log_line_is_masked(
    capsys: pytest.CaptureFixture[str], restore_logging: None
) -> None:
    from fsm.logs import configure

    secrets = [canary() for _ in range(6)]
    for json_lines in (False, True):
        configure(json_lines=json_lines)
        log = logging.getLogger("somebody.else")
        log.warning("connecting to %s", f"postgresql://u:{secrets[0]}@h/db")
        log.warning("payload %s and %r", {"password": secrets[1]}, ["--token", secrets[2]])
        log.warning("mapping %(x)s", {"x": f"Bearer {secrets[3]}abcdefgh"})
        log.warning(f"formatted by the caller: api_key={secrets[4]}")
        try:
            raise RuntimeError(f"DB_PASSWORD={secrets[5]}")
        except RuntimeError:
            log.exception("it failed")
        _, err = capsys.readouterr()
        assert err.count("***") >= 6
        for secret in secrets:
            assert secret not in err


def test_storage_messages_follow_the_policy(engine: Engine) -> None:
    from storage.database import redacted

    secret = canary()
    assert secret not in redacted(f"postgresql://u:{secret}@h/db?sslpassword={secret}")
    assert secret not in repr(Engine)  # nothing global leaks either
    event = Event("nope", "stop", {"password": secret})
    assert engine.apply([event]).outcomes[0].error is not None
    _assert_absent(engine, secret)
