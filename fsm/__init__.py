"""Explicit, durable lifecycles for hosts and services.

Declare a lifecycle as data, compile it once, and let the engine apply events to entities,
recording every transition atomically with the new state.
"""

from fsm.clock import Clock, ManualClock, utc_now
from fsm.context import Callback, EventContext, Guard
from fsm.definition import Definition, StateSpec, TransitionSpec, load_definition
from fsm.engine import Engine
from fsm.errors import (
    CallbackError,
    DatabaseCorrupt,
    DatabaseFull,
    DatabaseUnavailable,
    DefinitionError,
    DuplicateEntity,
    EntityNotFound,
    FsmError,
    InvalidEvent,
    InvalidInput,
    StorageError,
    UnknownLifecycle,
    VersionConflict,
)
from fsm.events import BatchResult, Event, NewEntity, Outcome
from fsm.lifecycle import Lifecycle
from fsm.lifecycles import BUILTIN_NAMES, builtin_definition
from fsm.observation import FailureKind, Observation
from fsm.verify import Violation
from fsm.worker import TickStats, Worker, WorkerSettings
from storage import EntityRow as Entity
from storage import Store
from storage import TransitionRow as Transition

__all__ = [
    "BUILTIN_NAMES",
    "BatchResult",
    "Callback",
    "CallbackError",
    "Clock",
    "DatabaseCorrupt",
    "DatabaseFull",
    "DatabaseUnavailable",
    "Definition",
    "DefinitionError",
    "DuplicateEntity",
    "Engine",
    "Entity",
    "EntityNotFound",
    "Event",
    "EventContext",
    "FailureKind",
    "FsmError",
    "Guard",
    "InvalidEvent",
    "InvalidInput",
    "Lifecycle",
    "ManualClock",
    "NewEntity",
    "Observation",
    "Outcome",
    "StateSpec",
    "StorageError",
    "Store",
    "TickStats",
    "Transition",
    "TransitionSpec",
    "UnknownLifecycle",
    "VersionConflict",
    "Violation",
    "Worker",
    "WorkerSettings",
    "builtin_definition",
    "load_definition",
    "utc_now",
]
