"""The random inputs: payloads with nested secrets, entity data with per-entity time limits."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hypothesis import strategies as st

from fsm.testkit.model import CANARY, PLAIN_KEYS, SECRET_KEYS
from fsm.testkit.reference import Kit

# -- strategies ---------------------------------------------------------------------------------

_leaf: st.SearchStrategy[Any] = st.one_of(
    st.text(max_size=8),  # too short to spell a canary by chance
    st.integers(-(2**53), 2**53),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([None, True, False, [], {}]),
)


def _canary(n: int) -> str:
    return f"{CANARY}{n}"


# whole payloads, secrets nested under plain keys and in lists: one cheap draw each
_TEMPLATES: tuple[dict[str, Any], ...] = (
    {"job_id": 4242, "state": "RUNNING"},
    {"password": _canary(1), "user": "alice"},
    {"details": {"node": "n1", "sshKey": _canary(2)}, "exit_code": 0},
    {"attempts": [{"attempt": 1, "db_password": _canary(3)}, {"attempt": 2}]},
    {"Authorization": {"scheme": "Bearer", "value": _canary(4)}, "message": "ok"},
    {"config": {"nested": {"api_key": _canary(5), "accessToken": _canary(6)}}},
    {"client-secret": [_canary(7)], "message": "spécial \u2603 \u0000 chars"},
    {"token": _canary(8), "ratio": 0.1, "big": 2**62, "neg": -0.0, "none": None},
)


def payloads() -> st.SearchStrategy[dict[str, Any] | None]:
    """No payload, a fixed payload with nested secrets, or one random plain or secret entry."""
    entry = st.one_of(
        st.tuples(st.sampled_from(PLAIN_KEYS), _leaf),
        st.tuples(st.sampled_from(SECRET_KEYS), st.integers(0, 999).map(_canary)),
    )
    fixed = st.sampled_from([None, None, *_TEMPLATES])
    return st.one_of(
        fixed,
        fixed,
        entry.map(lambda kv: {kv[0]: kv[1]}),
    )


def data_choices(kits: Mapping[str, Kit]) -> list[dict[str, Any]]:
    """Entity data to create with or merge in: plain values and per-entity time limits.

    `time_limits` maps a state to its own limit in seconds; values that are not positive
    numbers must be ignored, and so must a `time_limits` that is not a mapping.
    """
    choices: list[dict[str, Any]] = [{}, {"job_id": 7}, {"job_id": 8, "owner": "bob"}]
    limited = sorted(
        {
            (s.name, s.time_limit)
            for kit in kits.values()
            for s in kit.lifecycle.definition.states
            if s.time_limit is not None
        }
    )
    for state, limit in limited:
        choices += [
            {"time_limits": {state: value}}
            for value in (limit / 4, int(limit * 1.5), 0, -1, "10", True, None)
        ]
    if limited:
        choices.append({"time_limits": "soon"})
    return choices
