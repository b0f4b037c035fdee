"""Which Slurm jobs are ours: an unguessable per-entity tag, the submitting user, the submit time.

A job id alone proves nothing: Slurm recycles ids (MaxJobId wraps, MinJobAge purges), and the
id recorded in an entity's data is caller-writable. So a job is taken for an entity's only when
- its name ends with `.<tag>`, where the tag is an HMAC of the entity id under a key kept in a
  private file on the orchestrator's side (0600 in a 0700 directory, never read through a
  symlink): nobody without the key can name a job for an entity, and one entity's tag never
  fits another's job;
- it belongs to the user we submit as (a stranger cannot submit a job as us, whatever its name);
- its submit time is not before the one we saw first for it (bound on first sight; a requeue
  moves a job's submit time on, never back), so an older record of the id — accounting keeps
  every job that ever had it — is never taken for ours.
`scancel` is sent with `--name=<that exact name> --user=<uid>` as well as the job id, so the
controller itself refuses to signal a job that is not the one just confirmed.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import secrets
import stat
from datetime import datetime, timedelta
from pathlib import Path

from backends.slurm.parse import JobRecord

DEFAULT_KEY_FILE = "~/.config/fsm/slurm-tag.key"
_KEY_BYTES = 32
_NOFOLLOW = os.O_NOFOLLOW | os.O_CLOEXEC


class KeyFileError(ValueError):
    """The tag key file cannot be trusted or made (owner, mode, symlink, size)."""


def _check_private(path: Path, info: os.stat_result, kind: str) -> None:
    if info.st_uid != os.geteuid():
        raise KeyFileError(f"{kind} {path} is owned by uid {info.st_uid}, not by this user")
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        mode = stat.S_IMODE(info.st_mode)
        raise KeyFileError(f"{kind} {path} is open to other users (mode {mode:04o})")


def load_key(path: str | Path) -> bytes:
    """The key in `path`, made (random, 0600) the first time; `KeyFileError` if not private."""
    file = Path(path).expanduser()
    try:
        file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        if file.parent.is_symlink():
            raise KeyFileError(f"the key's directory {file.parent} is a symlink")
        _check_private(file.parent, file.parent.stat(), "key directory")
        with contextlib.suppress(FileExistsError):
            fd = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, 0o600)
            try:
                os.write(fd, secrets.token_bytes(_KEY_BYTES))
                os.fsync(fd)
            finally:
                os.close(fd)
        fd = os.open(file, os.O_RDONLY | _NOFOLLOW)
    except OSError as exc:
        reason = "it is a symlink" if file.is_symlink() else exc.strerror
        raise KeyFileError(f"cannot use key_file {file}: {reason}") from exc
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise KeyFileError(f"key_file {file} is not a regular file")
        _check_private(file, info, "key_file")
        key = os.read(fd, 4096)
    finally:
        os.close(fd)
    if len(key) < 16:
        raise KeyFileError(f"key_file {file} holds {len(key)} bytes; at least 16 are needed")
    return key


class Identity:
    """Tags for entities and the check that a listed job is the one we submitted for one."""

    def __init__(self, key: bytes) -> None:
        if len(key) < 16:
            raise ValueError("the tag key must be at least 16 bytes")
        self._key = key

    def tag(self, entity_id: str) -> str:
        digest = hmac.new(self._key, b"fsm-slurm-job\x00" + entity_id.encode(), hashlib.sha256)
        return "fsm" + digest.hexdigest()[:24]

    def job_name(self, base: str, entity_id: str) -> str:
        """The job's name: the user's own name, then the tag (`svc.fsm0123...`)."""
        return f"{base}.{self.tag(entity_id)}"

    def owns(
        self, entity_id: str, record: JobRecord, uid: int | None, submit_time: str | None
    ) -> bool:
        """Whether `record` is the job we submitted for `entity_id` (see the module docstring).

        `submit_time` is the one bound at first sight (None before that). Both are printed by
        the same controller in the same `%Y-%m-%dT%H:%M:%S` form, so they compare as text."""
        if uid is None or record.uid != uid:
            return False
        if not record.name.endswith("." + self.tag(entity_id)):
            return False
        return submit_time is None or not record.submit or record.submit >= submit_time


def controller_time(moment: datetime | None) -> str | None:
    """`moment` as the controller prints submit times (local time, whole seconds), to compare
    as text with a job's; one second earlier, as the controller truncates."""
    if moment is None:
        return None
    local = (moment - timedelta(seconds=1)).astimezone()
    return local.strftime("%Y-%m-%dT%H:%M:%S")
