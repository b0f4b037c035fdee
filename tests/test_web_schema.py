"""schemathesis against `fsm serve`'s own OpenAPI: generated requests (valid and invalid) to
every read endpoint, and to the write endpoints of a read-only and of a writing server, find no
5xx and no response that breaks the documented schema; no response ever holds a secret."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import (
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.generation.case import Case
from sqlalchemy import func, select

from fsm.web.app import close
from storage.tables import entity_table, scheduled_command_table, transition_table
from tests.web_support import SECRET, TOKEN, app_for, build

CHECKS = [not_a_server_error, response_schema_conformance, status_code_conformance]


def _app(tmp: Path, writes: bool) -> Iterator[FastAPI]:
    url = f"sqlite:///{tmp}/fsm.db"
    build(url, services=8, hosts=3)
    app = app_for(url, writes=writes)
    yield app
    close(app)


@pytest.fixture(scope="module")
def read_only_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FastAPI]:
    yield from _app(tmp_path_factory.mktemp("ro"), writes=False)


@pytest.fixture(scope="module")
def writing_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FastAPI]:
    yield from _app(tmp_path_factory.mktemp("rw"), writes=True)


@pytest.fixture(scope="module")
def read_only_schema(read_only_app: FastAPI) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_asgi("/openapi.json", read_only_app).exclude(
        path="/api/stream"  # an endless response: tested with a real server elsewhere
    )


@pytest.fixture(scope="module")
def writing_schema(writing_app: FastAPI) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_asgi("/openapi.json", writing_app).include(
        method=["POST", "DELETE"]
    )


FAST = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


def _check(case: Case, **options: object) -> None:
    response = case.call_and_validate(checks=CHECKS, **options)  # type: ignore[arg-type]
    assert SECRET not in response.text


def _every_operation(schema: schemathesis.BaseSchema, test: Callable[[Case], None]) -> int:
    """Run `test` on generated cases of each operation (schemathesis' own pytest plugin does
    not run under this pytest, so hypothesis drives it directly)."""
    count = 0
    for result in schema.get_all_operations():
        operation = result.ok()

        @FAST
        @given(case=operation.as_strategy())
        def run(case: Case) -> None:
            test(case)

        run()
        count += 1
    return count


def _written(app: FastAPI) -> tuple[int, ...]:
    store = app.state.reader.engine.store
    with store.reading() as conn:
        return tuple(
            int(conn.execute(select(func.count()).select_from(table)).scalar_one())
            for table in (entity_table, transition_table, scheduled_command_table)
        )


def test_read_only_server(
    read_only_schema: schemathesis.BaseSchema, read_only_app: FastAPI
) -> None:
    before = _written(read_only_app)

    def test(case: Case) -> None:
        _check(case)
        if case.method.upper() in ("POST", "DELETE"):
            # refused, malformed, or (an id no route takes, e.g. a newline) not found
            assert case.call().status_code in (403, 404, 422)

    assert _every_operation(read_only_schema, test) >= 10
    assert _written(read_only_app) == before


def test_writing_server_with_its_token(writing_schema: schemathesis.BaseSchema) -> None:
    auth = {"Authorization": f"Bearer {TOKEN.secret.decode()}"}
    assert _every_operation(writing_schema, lambda case: _check(case, headers=auth)) == 4
