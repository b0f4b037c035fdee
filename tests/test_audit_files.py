"""Audit of issue 8, items 6 and 11: files the local backend is pointed at."""

from __future__ import annotations

from pathlib import Path

import pytest

from backends.local import LocalProcessBackend, StateDirError


def test_a_state_dir_that_cannot_be_made_private_is_refused_with_its_path() -> None:
    """`state_dir: /proc/1` (a directory whose mode nobody may change): one clear, typed error
    naming the directory, not a bare "Operation not permitted"."""
    with pytest.raises(StateDirError, match="/proc/1"):
        LocalProcessBackend(Path("/proc/1"))
