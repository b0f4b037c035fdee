"""Fixtures for the Azure tests (a pytest plugin: `pytest_plugins = ["tests.azure_fixtures"]`)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.azure_support import SUBSCRIPTION, TOKEN, Rig, make_rig
from tests.fake_arm import FakeArm, TlsFiles, make_tls


@pytest.fixture(scope="session")
def arm_tls(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_tls(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def arm(arm_tls: TlsFiles) -> Iterator[FakeArm]:
    fake = FakeArm(arm_tls, subscription=SUBSCRIPTION, token=TOKEN).start()
    yield fake
    fake.stop()


@pytest.fixture
def rig(arm: FakeArm, tmp_path: Path) -> Iterator[Rig]:
    made = make_rig(arm, f"sqlite:///{tmp_path}/azure.db")
    yield made
    made.backend.close()
    made.engine.close()
