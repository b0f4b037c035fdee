"""Bounded backend calls (fsm/worker_calls.py): one kept thread per backend and kind."""

from __future__ import annotations

import threading

import pytest

from fsm import worker_calls
from fsm.worker_calls import BackendBusy, BoundedCalls, CallTimedOut


class Backend:
    name = "b"


def test_calls_of_one_backend_and_kind_share_a_thread() -> None:
    calls, backend = BoundedCalls(), Backend()
    here = threading.current_thread
    seen = {calls.call(backend, "observe", "b", 5.0, here) for _ in range(20)}  # kept alive
    assert len(seen) == 1 and here() not in seen
    other = calls.call(backend, "release", "b", 5.0, here)
    assert other not in seen  # another kind has its own thread


def test_a_call_after_the_lane_went_idle_still_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(worker_calls, "LANE_IDLE_SECONDS", 0.0)  # every lane ends at once
    calls, backend = BoundedCalls(), Backend()
    assert [calls.call(backend, "observe", "b", 5.0, lambda n=n: n) for n in range(50)] == list(
        range(50)
    )


def test_an_abandoned_call_blocks_its_kind_until_it_returns() -> None:
    calls, backend = BoundedCalls(), Backend()
    release = threading.Event()
    with pytest.raises(CallTimedOut):
        calls.call(backend, "observe", "b", 0.05, release.wait)
    with pytest.raises(BackendBusy):
        calls.call(backend, "observe", "b", 5.0, lambda: 1)
    assert calls.call(backend, "command", "b", 5.0, lambda: 2) == 2  # other kinds go on
    release.set()
    pending = calls._abandoned[(id(backend), "observe")]
    assert pending.done.wait(5.0)
    assert calls.call(backend, "observe", "b", 5.0, lambda: 3) == 3
