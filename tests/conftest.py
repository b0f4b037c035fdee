"""Shared fixtures: every database test runs on a SQLite file and on the real PostgreSQL."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, settings

from fsm import Engine, ManualClock
from tests.components import unavailable

PG_URL = os.environ.get("FSM_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")

settings.register_profile(
    "ci",
    max_examples=200,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.register_profile(
    "long",
    max_examples=2000,
    stateful_step_count=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def _pg_available() -> str | None:
    try:
        with psycopg.connect(PG_URL, connect_timeout=3):
            return None
    except psycopg.Error as exc:
        return str(exc).strip().splitlines()[0]


@pytest.fixture(scope="session")
def pg_server() -> str:
    """The PostgreSQL URL; in CI an unreachable server fails the run instead of skipping."""
    problem = _pg_available()
    if problem is not None:
        unavailable(f"PostgreSQL at {PG_URL} is not reachable: {problem}")
    return PG_URL


@pytest.fixture
def pg_url(pg_server: str) -> Iterator[str]:
    """A fresh, empty schema on the real PostgreSQL, dropped afterwards."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    base = pg_server.replace("postgresql://", "postgresql+psycopg://", 1)
    sep = "&" if "?" in base else "?"
    yield f"{base}{sep}options=-csearch_path%3D{schema}"
    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


@pytest.fixture
def sqlite_url(tmp_path: os.PathLike[str]) -> str:
    return f"sqlite:///{tmp_path}/fsm.db"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest) -> str:
    """Each test using this runs twice: SQLite file, then real PostgreSQL."""
    if request.param == "sqlite":
        return str(request.getfixturevalue("sqlite_url"))
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def engine(db_url: str, clock: ManualClock) -> Iterator[Engine]:
    eng = Engine(db_url, clock=clock)
    yield eng
    eng.close()


_pg_results: dict[str, int] = {"passed": 0, "failed": 0, "skipped": 0}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Count PostgreSQL tests, so CI output shows that they ran rather than skipped."""
    if "postgres" not in report.keywords:
        return
    if report.when == "call" or (report.when == "setup" and not report.passed):
        _pg_results[report.outcome] = _pg_results.get(report.outcome, 0) + 1


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    r = _pg_results
    terminalreporter.write_line(
        f"PostgreSQL tests: {r['passed']} passed, {r['failed']} failed, {r['skipped']} skipped"
    )


#: files whose tests use the machine's one Slurm cluster (and may change its slurm.conf)
_SHARED_CLUSTER = ("cluster", "slurm_ssh")


@pytest.hookimpl(tryfirst=True)  # before xdist's, which turns the marks into the groups
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Keep a module's tests on one xdist worker (their module fixtures are costly) and every
    test of the shared Slurm cluster on the same one, so no two of them reconfigure it at once."""
    for item in items:
        module = item.path.stem
        group = "slurm-cluster" if any(k in module for k in _SHARED_CLUSTER) else module
        item.add_marker(pytest.mark.xdist_group(group))


@pytest.hookimpl(optionalhook=True)  # pytest-xdist's, on the controller
def pytest_xdist_node_collection_finished(node: Any, ids: list[str]) -> None:
    """Refuse to run when xdist's loadgroup did not take (it suffixes each node id with its
    group): the shared Slurm cluster's tests would silently run on two workers at once."""
    if node.config.getoption("dist") == "loadgroup" and not all("@" in i for i in ids):
        pytest.exit(
            "pytest-xdist's --dist loadgroup does not group tests with this pytest "
            f"({pytest.__version__}, see pytest-xdist#1386): install from constraints.txt",
            returncode=pytest.ExitCode.USAGE_ERROR,
        )
