"""Local processes as services: the embedded default backend."""

from backends.local.backend import LocalProcessBackend
from backends.local.spec import SpecError, validate_spec
from backends.local.state import StateDirError

__all__ = ["LocalProcessBackend", "SpecError", "StateDirError", "validate_spec"]
