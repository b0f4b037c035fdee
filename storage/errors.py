"""Typed errors of the storage layer: callers catch these, never driver exceptions."""

from __future__ import annotations


class StorageError(Exception):
    """Base class of everything the storage layer raises."""


class DatabaseUnavailable(StorageError):
    """The database cannot be reached or opened (wrong URL, server down, unreadable file)."""


class DatabaseFull(DatabaseUnavailable):
    """The disk (or the database's quota) is full; nothing of the failed write was kept, and
    writing resumes once space is freed."""


class DatabaseCorrupt(StorageError):
    """The file or schema is not a database this project can use."""


class VersionConflict(StorageError):
    """A writer held a stale version of an entity; nothing was written."""

    def __init__(self, entity_id: str, expected: int, actual: int | None) -> None:
        self.entity_id = entity_id
        self.expected = expected
        self.actual = actual
        found = "it no longer exists" if actual is None else f"it is at version {actual}"
        super().__init__(f"entity {entity_id!r}: expected version {expected}, but {found}")


class EntityNotFound(StorageError, LookupError):
    """No entity has the given id."""

    def __init__(self, entity_id: str) -> None:
        self.entity_id = entity_id
        super().__init__(f"no entity with id {entity_id!r}")


class DuplicateEntity(StorageError):
    """An entity with the given id exists already."""

    def __init__(self, entity_id: str) -> None:
        self.entity_id = entity_id
        super().__init__(f"an entity with id {entity_id!r} exists already")


class WorkerRefused(StorageError):
    """Another worker already drives this database and the backend cannot share it."""
