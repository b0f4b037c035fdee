"""Backend calls bounded by the backend's own timeout (contract 2).

Each call runs in a daemon thread; the worker waits for it until the call's deadline and then
abandons it (a thread cannot be killed). A backend whose abandoned call of a kind has not come
back gets no new call of that kind: it fails fast instead of piling up threads.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class CallTimedOut(Exception):
    """A backend call took longer than its timeout and was abandoned."""


class BackendBusy(Exception):
    """A backend's earlier call of this kind overran its timeout and has not returned yet."""


class PendingCall(Generic[T]):
    """One call in its own thread; `result` waits for it until its deadline."""

    def __init__(self, what: str, timeout: float, fn: Callable[..., T], *args: Any) -> None:
        self.what = what
        self.timeout = timeout
        self.deadline = time.monotonic() + timeout
        self.done = threading.Event()
        self._value: T | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(
            target=self._run, args=(fn, args), name=f"fsm-{what}", daemon=True
        )
        self._thread.start()

    def _run(self, fn: Callable[..., T], args: tuple[Any, ...]) -> None:
        try:
            self._value = fn(*args)
        except BaseException as exc:  # handed to the waiting worker
            self._error = exc
        finally:
            self.done.set()

    def result(self) -> T:
        if not self.done.wait(max(0.0, self.deadline - time.monotonic())):
            raise CallTimedOut(f"{self.what} gave no answer within {self.timeout:g}s")
        if self._error is not None:
            raise self._error
        return self._value  # type: ignore[return-value]


class BoundedCalls:
    """Starts bounded calls and remembers the abandoned ones, per (backend, kind)."""

    def __init__(self) -> None:
        self._abandoned: dict[tuple[int, str], PendingCall[Any]] = {}

    def start(
        self,
        backend: object,
        kind: str,
        name: str,
        timeout: float,
        fn: Callable[..., T],
        *args: Any,
    ) -> PendingCall[T]:
        key = (id(backend), kind)
        stuck = self._abandoned.get(key)
        if stuck is not None:
            if not stuck.done.is_set():
                raise BackendBusy(f"{name}: an earlier {kind} call has not returned yet")
            del self._abandoned[key]
        return PendingCall(f"{name}.{kind}", timeout, fn, *args)

    def wait(self, backend: object, kind: str, call: PendingCall[T]) -> T:
        try:
            return call.result()
        except CallTimedOut:
            self._abandoned[(id(backend), kind)] = call
            raise

    def call(
        self,
        backend: object,
        kind: str,
        name: str,
        timeout: float,
        fn: Callable[..., T],
        *args: Any,
    ) -> T:
        """Start and wait: the value, or the call's error, or `CallTimedOut` / `BackendBusy`."""
        return self.wait(backend, kind, self.start(backend, kind, name, timeout, fn, *args))
