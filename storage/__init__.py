"""Persistence for lifecycles: entities, their transitions and scheduled commands.

SQLite by default, PostgreSQL by URL. Knows nothing of lifecycle rules; `fsm` decides, this writes.
"""

from storage.database import DEFAULT_URL, redacted, resolve_url
from storage.errors import (
    DatabaseCorrupt,
    DatabaseFull,
    DatabaseUnavailable,
    DuplicateEntity,
    EntityNotFound,
    StorageError,
    VersionConflict,
    WorkerRefused,
)
from storage.records import EntityRow, EntityUpdate, StateCount, TransitionRow
from storage.store import Store, UnitOfWork

__all__ = [
    "DEFAULT_URL",
    "DatabaseCorrupt",
    "DatabaseFull",
    "DatabaseUnavailable",
    "DuplicateEntity",
    "EntityNotFound",
    "EntityRow",
    "EntityUpdate",
    "StateCount",
    "StorageError",
    "Store",
    "TransitionRow",
    "UnitOfWork",
    "VersionConflict",
    "WorkerRefused",
    "redacted",
    "resolve_url",
]
