"""What the tests need of this machine beyond Python: outside CI a missing component skips the
tests that need it; in CI (`CI=true`) it fails them, so every real component runs there."""

from __future__ import annotations

import os
from typing import NoReturn

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def unavailable(reason: str) -> NoReturn:
    """Skip here, fail in CI: `reason` says what is missing and how to get it."""
    if IN_CI:
        pytest.fail(f"required in CI: {reason}")
    pytest.skip(reason)
