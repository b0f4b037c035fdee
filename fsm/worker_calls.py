"""Backend calls bounded by the backend's own timeout (contract 2).

Each call runs in a daemon thread; the worker waits for it until the call's deadline and then
abandons it (a thread cannot be killed). A backend whose abandoned call of a kind has not come
back gets no new call of that kind: it fails fast instead of piling up threads.

The thread of a (backend, kind) is kept while calls keep coming (a `_Lane`, ended after
`LANE_IDLE_SECONDS` without one): starting a thread per call cost ~1 ms on a loaded machine,
about a tenth of a refresh batch of 100 simulated services, where handing a call to a waiting
thread costs ~20 µs.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class CallTimedOut(Exception):
    """A backend call took longer than its timeout and was abandoned."""


class BackendBusy(Exception):
    """A backend's earlier call of this kind overran its timeout and has not returned yet."""


#: a lane's thread ends after this long without a call (the next call starts a new one)
LANE_IDLE_SECONDS = 5.0


class PendingCall(Generic[T]):
    """One call, run by its lane's thread; `result` waits for it until its deadline."""

    def __init__(self, what: str, timeout: float, fn: Callable[..., T], *args: Any) -> None:
        self.what = what
        self.timeout = timeout
        self.deadline = time.monotonic() + timeout
        self.done = threading.Event()
        self._work: tuple[Callable[..., T], tuple[Any, ...]] | None = (fn, args)
        self._value: T | None = None
        self._error: BaseException | None = None

    def run(self) -> None:
        work, self._work = self._work, None  # let go of the arguments (entity rows) once run
        try:
            assert work is not None, "a call runs once"
            fn, args = work
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


class _Lane:
    """The calls of one (backend, kind), run one after the other by one daemon thread that
    ends when no call came for `LANE_IDLE_SECONDS` (under the lock, so none is left behind)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._ready = threading.Condition(threading.Lock())
        self._calls: deque[PendingCall[Any]] = deque()
        self._running = False

    def submit(self, call: PendingCall[Any]) -> None:
        with self._ready:
            self._calls.append(call)
            if self._running:
                self._ready.notify()
                return
            self._running = True
        threading.Thread(target=self._serve, name=f"fsm-{self.name}", daemon=True).start()

    def _serve(self) -> None:
        while True:
            with self._ready:
                if not self._calls:
                    self._ready.wait(LANE_IDLE_SECONDS)
                if not self._calls:
                    self._running = False
                    return
                call = self._calls.popleft()
            call.run()


class BoundedCalls:
    """Starts bounded calls and remembers the abandoned ones, per (backend, kind)."""

    def __init__(self) -> None:
        self._abandoned: dict[tuple[int, str], PendingCall[Any]] = {}
        self._lanes: dict[tuple[int, str], _Lane] = {}

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
        call = PendingCall(f"{name}.{kind}", timeout, fn, *args)
        lane = self._lanes.get(key)
        if lane is None:
            lane = self._lanes[key] = _Lane(f"{name}.{kind}")
        lane.submit(call)
        return call

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
