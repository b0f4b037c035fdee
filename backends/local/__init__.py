"""Local processes as services: the embedded default backend."""

from backends.local.backend import LocalProcessBackend, SpecError, validate_spec

__all__ = ["LocalProcessBackend", "SpecError", "validate_spec"]
