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


@pytest.mark.parametrize("suffix", ["-wal", "-shm"])
@pytest.mark.parametrize("command", ["status", "verify"])
def test_a_reader_names_a_planted_journal_link_instead_of_failing_vaguely(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], suffix: str, command: str
) -> None:
    """A link planted at `fsm.db-shm` after the database was made: readers refuse it as the
    writer does, saying which file to remove (not "unable to open database file"), and never
    write through it."""
    from fsm import Engine
    from fsm.cli import main

    db = tmp_path / "fsm.db"
    Engine(f"sqlite:///{db}").close()
    victim = tmp_path / "victim"
    victim.write_text("VICTIM")
    Path(f"{db}{suffix}").symlink_to(victim)
    assert main([command, "--db", f"sqlite:///{db}"]) != 0
    err = capsys.readouterr().err
    assert f"fsm.db{suffix} is a symbolic link" in err
    assert victim.read_text() == "VICTIM"
