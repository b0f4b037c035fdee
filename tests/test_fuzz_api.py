"""The acceptance's fuzz suite over the public Python entry points: Engine methods,
Worker.schedule/command, load_definition, run configs and database URLs.

Whatever hypothesis throws at them: only the project's typed errors escape, a call that failed
wrote nothing, and no secret given in the input is found in the database's bytes or in the log
lines fsm's logging emits.
"""

from __future__ import annotations

import io
import logging
import math
import uuid
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fsm import Engine, Event, FsmError, ManualClock, NewEntity, StorageError, Worker
from fsm.config import load_config
from fsm.definition import Definition, load_definition
from fsm.logs import install_redaction
from tests.hardening_support import stored_bytes

TYPED = (FsmError, StorageError)
SECRET_KEYS = ("password", "db_pass", "pw", "jwt", "session_id", "api_key", "HF_TOKEN", "otp")
FUZZ = settings(
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# -- what goes in ----------------------------------------------------------------------------

odd_text = st.one_of(
    st.text(max_size=20),
    st.sampled_from(["", "\x00", "a\x00b", "\ud800", "x" * 201, "[/]", "'; DROP TABLE entity;--"]),
)
odd_numbers = st.one_of(
    st.integers(),
    st.sampled_from([2**63, -(2**63) - 1, 10**400, 0, -1]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
)
odd_times = st.one_of(
    st.datetimes(),
    st.datetimes(timezones=st.just(UTC)),
    st.sampled_from(
        [
            datetime(9999, 12, 31, 23, 59, tzinfo=UTC),
            datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=5))),
            datetime(2026, 1, 1, tzinfo=UTC),
        ]
    ),
)
scalars = st.one_of(st.none(), odd_text, odd_numbers, odd_times, st.binary(max_size=8))
anything = st.recursive(
    scalars,
    lambda kids: st.one_of(
        st.lists(kids, max_size=3),
        st.dictionaries(st.one_of(odd_text, st.integers()), kids, max_size=3),
        st.frozensets(st.integers(), max_size=2),
        st.tuples(kids),
    ),
    max_leaves=8,
)


def _deep(levels: int) -> Any:
    value: Any = {}
    for _ in range(levels):
        value = {"k": value}
    return value


@st.composite
def secret(draw: st.DrawFn, found: list[str]) -> Any:
    """A canary in one of the forms the redaction policy must catch; recorded in `found`."""
    value = f"CANARY{draw(st.integers(10**8, 10**9))}Z"
    found.append(value)
    form = draw(st.integers(0, 5))
    if form == 0:
        return {draw(st.sampled_from(SECRET_KEYS)): value}
    if form == 1:
        return f"postgresql://u:{value}@db.example/app"
    if form == 2:
        return ["--password", value]
    if form == 3:
        return {"name": "API_TOKEN", "value": value}
    if form == 4:
        return f"https://h.example/x?sig={value}&b=1"
    return f"Bearer {value}abcdefghij"


def documents(found: list[str]) -> st.SearchStrategy[Any]:
    """Mostly JSON-like mappings with secrets inside, sometimes garbage."""
    json_like = st.recursive(
        st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.text(max_size=8), secret(found)),
        lambda kids: st.one_of(
            st.lists(kids, max_size=3),
            st.dictionaries(st.sampled_from(["a", "job_id", "env", "argv"]), kids, max_size=3),
        ),
        max_leaves=6,
    )
    mapping = st.dictionaries(st.sampled_from(["a", "b", "note", *SECRET_KEYS]), json_like)
    return st.one_of(
        mapping,
        mapping.map(lambda m: {**m, "deep": _deep(900)}),
        anything,
    )


# -- what must hold --------------------------------------------------------------------------


@pytest.fixture
def logs() -> Iterator[io.StringIO]:
    """fsm's log lines, through the redacting filter fsm's logging set-up installs."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    install_redaction(handler)
    root = logging.getLogger()
    old_level, old_handlers = root.level, root.handlers[:]
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG)
    yield out
    root.handlers[:] = old_handlers
    root.setLevel(old_level)


def _snapshot(engine: Engine) -> tuple[Any, ...]:
    entities = tuple((e.id, e.version, e.state, repr(e.data)) for e in engine.list_entities())
    with engine.store.reading() as conn:
        transitions = conn.exec_driver_sql("SELECT count(*) FROM transition").scalar()
        commands = conn.exec_driver_sql("SELECT count(*) FROM scheduled_command").scalar()
    return entities, transitions, commands


def attempt(call: Callable[[], Any]) -> tuple[bool, Any]:
    """Run `call`; only the project's typed errors may escape it."""
    try:
        return True, call()
    except TYPED as exc:
        return False, exc


def no_secret_anywhere(engine: Engine, logs: io.StringIO, found: list[str], *texts: str) -> None:
    blob = stored_bytes(engine)
    log_text = logs.getvalue()
    for value in found:
        assert value.encode() not in blob, f"{value} reached the database"
        assert value not in log_text, f"{value} reached the logs"
        for text in texts:
            assert value not in text, f"{value} is shown in {text!r}"


@pytest.fixture
def fuzz_engine(db_url: str) -> Iterator[Engine]:
    engine = Engine(db_url, clock=ManualClock())
    yield engine
    engine.close()


# -- Engine ----------------------------------------------------------------------------------


@FUZZ
@given(data=st.data())
def test_create(fuzz_engine: Engine, logs: io.StringIO, data: st.DataObject) -> None:
    found: list[str] = []
    engine = fuzz_engine
    before = _snapshot(engine)
    lifecycle = data.draw(st.one_of(st.sampled_from(["service", "host", "operation"]), anything))
    payload = data.draw(documents(found))
    entity_id = data.draw(st.one_of(st.none(), st.just(uuid.uuid4().hex), anything))
    parent = data.draw(st.one_of(st.none(), anything))
    ok, result = attempt(lambda: engine.create(lifecycle, payload, id=entity_id, parent_id=parent))
    if not ok:
        assert _snapshot(engine) == before
    no_secret_anywhere(engine, logs, found, str(result))  # the stored row, or the error


@FUZZ
@given(data=st.data())
def test_create_many(fuzz_engine: Engine, logs: io.StringIO, data: st.DataObject) -> None:
    found: list[str] = []
    engine = fuzz_engine
    before = _snapshot(engine)
    items = data.draw(
        st.lists(
            st.one_of(
                documents(found).map(lambda d: NewEntity("service", d)),
                st.tuples(anything, anything, anything, anything).map(lambda t: NewEntity(*t)),
                anything,
            ),
            max_size=4,
        )
    )
    ok, result = attempt(lambda: engine.create_many(items))
    if not ok:
        assert _snapshot(engine) == before  # all of them or none
    no_secret_anywhere(engine, logs, found, str(result))


def _event(found: list[str], ids: list[str]) -> st.SearchStrategy[Any]:
    names = st.sampled_from(["job_pending", "job_running", "ping_ok", "stop", "time_limit"])
    return st.one_of(
        st.builds(
            Event,
            st.sampled_from(ids),
            st.one_of(names, anything),
            st.one_of(st.none(), documents(found)),
            st.one_of(st.just("fuzz"), anything),
            st.one_of(st.none(), odd_times),
            st.one_of(st.none(), st.integers(-2, 5), anything),
            st.one_of(st.none(), documents(found)),
        ),
        st.tuples(st.one_of(st.sampled_from(ids), anything), names).map(lambda t: Event(*t)),
        anything,
    )


@FUZZ
@given(data=st.data())
def test_apply_and_fire(fuzz_engine: Engine, logs: io.StringIO, data: st.DataObject) -> None:
    found: list[str] = []
    engine = fuzz_engine
    ids = [engine.create("service").id for _ in range(3)]
    before = {e.id: e.version for e in engine.list_entities()}
    events = data.draw(st.lists(_event(found, ids), max_size=5))
    ok, result = attempt(lambda: engine.apply(events))
    texts = [] if ok else [str(result)]  # (an outcome repeats the caller's own event)
    if ok:
        failed_only = {
            o.event.entity_id
            for o in result.outcomes
            if isinstance(o.event, Event) and isinstance(o.event.entity_id, str)
        }
        for outcome in result.outcomes:
            assert outcome.error is None or isinstance(outcome.error, TYPED)
            texts.append(str(outcome.error))
            if outcome.error is None and isinstance(outcome.event, Event):
                failed_only.discard(outcome.event.entity_id)
        for entity_id in failed_only & set(before):
            assert engine.get(entity_id).version == before[entity_id]
    else:  # a database failure: nothing at all was written
        assert {e.id: e.version for e in engine.list_entities()} == before
    one = data.draw(_event(found, ids))
    if isinstance(one, Event):
        ok, result = attempt(lambda: engine.fire(*one[:2], one.payload, source=one.source))
        texts.append("" if ok else str(result))
    assert engine.verify() == []
    no_secret_anywhere(engine, logs, found, *texts)


@FUZZ
@given(method=st.sampled_from(["get", "history", "state_at", "list"]), value=anything)
def test_reads(fuzz_engine: Engine, method: str, value: Any) -> None:
    engine = fuzz_engine
    calls: dict[str, Callable[[], Any]] = {
        "get": lambda: engine.get(value),
        "history": lambda: engine.history(value),
        "state_at": lambda: engine.state_at("x", value),
        "list": lambda: engine.list_entities(limit=value, after_id=value),
    }
    attempt(calls[method])


@FUZZ
@given(options=st.dictionaries(st.sampled_from(["refresh_scale", "default_refresh"]), anything))
def test_engine_options(
    tmp_path_factory: pytest.TempPathFactory, options: Mapping[str, Any]
) -> None:
    db = tmp_path_factory.mktemp("opts") / "fsm.db"
    ok, engine = attempt(lambda: Engine(f"sqlite:///{db}", **options))
    if ok:
        for name, value in options.items():
            assert math.isfinite(value) and value > 0, (name, value)
        engine.close()
    else:
        assert not db.exists()


# -- Worker ----------------------------------------------------------------------------------


@FUZZ
@given(data=st.data())
def test_worker_schedule_and_command(
    fuzz_engine: Engine, logs: io.StringIO, data: st.DataObject
) -> None:
    found: list[str] = []
    engine = fuzz_engine
    worker = Worker(engine, [])
    s = engine.create("service")
    before = _snapshot(engine)
    command = data.draw(st.one_of(st.sampled_from(["stop", "job_pending", "submit"]), anything))
    arguments = data.draw(st.one_of(st.none(), documents(found)))
    when = data.draw(
        st.one_of(
            st.fixed_dictionaries({"delay": st.one_of(odd_numbers, anything)}),
            st.fixed_dictionaries({"at": st.one_of(odd_times, anything)}),
        )
    )
    target = data.draw(st.one_of(st.just(s.id), anything))
    ok, result = attempt(lambda: worker.schedule(target, command, arguments, **when))
    if not ok:
        assert _snapshot(engine) == before
    texts = [str(result)]  # a command id, or the error
    ok, result = attempt(lambda: worker.command(target, command, arguments))
    texts.append("" if ok else str(result))  # (outcomes repeat the caller's own event)
    engine.clock.advance(10**6)  # type: ignore[attr-defined]
    attempt(worker.run_commands)
    no_secret_anywhere(engine, logs, found, *texts)


# -- files and URLs --------------------------------------------------------------------------

yaml_texts = st.one_of(
    st.text(max_size=200),
    st.binary(max_size=200).map(lambda b: b.decode("latin-1")),
    st.sampled_from(
        [
            "a: &a [1, 2]\nb: &b [*a, *a, *a, *a]\nc: &c [*b, *b, *b, *b]\nd: [*c, *c, *c, *c]\n",
            "[" * 5000 + "]" * 5000,
            "name: x\nstates: .inf\n",
            "interval: .inf\nbatch_size: .nan\n",
            "backends: [{kind: sim, seed: .nan}]\n",
            "!!python/object/apply:os.system ['true']\n",
        ]
    ),
)


@FUZZ
@given(text=yaml_texts, raw=st.booleans())
def test_definition_and_config_files(
    tmp_path_factory: pytest.TempPathFactory, text: str, raw: bool
) -> None:
    folder = tmp_path_factory.mktemp("files")
    path = folder / "file.yaml"
    if raw:
        path.write_bytes(text.encode("utf-8", "surrogatepass") + b"\xff\xfe")
    else:
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
    attempt(lambda: load_definition(path))
    attempt(lambda: load_config(path))


@FUZZ
@given(raw=anything)
def test_definitions_from_data(raw: Any) -> None:
    attempt(lambda: Definition.from_dict(raw))


@st.composite
def urls(draw: st.DrawFn, folder: Path, found: list[str]) -> str:
    """Database URLs, well or badly formed, that never reach a real server or leave `folder`."""
    secret_value = f"CANARY{draw(st.integers(10**8, 10**9))}Z"
    found.append(secret_value)
    scheme = draw(
        st.sampled_from(["sqlite", "postgresql", "postgres", "postgresql+psycopg", "mysql", "x"])
    )
    user = draw(st.sampled_from(["", "svc", "svc:" + secret_value]))
    at = "@" if user else ""
    host = draw(st.sampled_from(["127.0.0.1:1", "127.0.0.1:notaport", "[::1", "%zz", ""]))
    if scheme == "sqlite":
        name = draw(st.sampled_from(["fsm.db", "missing/fsm.db", "", ":memory:"]))
        base = f"sqlite:///{folder / name}" if name and name != ":memory:" else f"sqlite://{name}"
    else:
        base = f"{scheme}://{user}{at}{host}/db"
    query = draw(
        st.sampled_from(["", f"?password={secret_value}", "?x=%", f"?sslkey={secret_value}"])
    )
    return draw(st.sampled_from([base + query, f"{user}{at}{host}", base[:7], f" {base}"]))


@settings(FUZZ, max_examples=60)
@given(data=st.data())
def test_database_urls(
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
    logs: io.StringIO,
    data: st.DataObject,
) -> None:
    monkeypatch.setenv("PGCONNECT_TIMEOUT", "2")
    folder = tmp_path_factory.mktemp("urls")
    found: list[str] = []
    url = data.draw(urls(folder, found))
    texts = []
    for opener in (Engine, Engine.open_existing):
        ok, result = attempt(lambda opener=opener: opener(url))  # type: ignore[misc]
        texts.append(str(result))
        if ok:
            texts.append(repr(result.store))
            result.close()
    monkeypatch.setenv("FSM_DB", url)
    ok, result = attempt(Engine.open_existing)
    texts.append(str(result))
    log_text = logs.getvalue()
    for value in found:
        assert value not in log_text
        for text in texts:
            assert value not in text, text
    assert all(p.is_relative_to(folder) for p in folder.rglob("*"))
