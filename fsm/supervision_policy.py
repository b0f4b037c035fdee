"""A supervisor's restart policy and retained spec: parsed once, validated field by field.

The policy is data (it lives in the supervisor entity's data, so a restarted worker reads the
same one). Every number it produces is a pure function of the policy, the supervisor's id and
the attempt: the jitter is drawn from a hash of those, so a replay gives the same backoff.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from fsm import validation
from fsm.errors import InvalidInput
from fsm.secret_refs import storable_arguments

#: the terminal states of a service attempt a policy may restart on; STOPPED means stopped by
#: anyone but the supervisor itself (an `scancel`, a stop of the attempt): a stop of the
#: supervisor never restarts anything
RESTARTABLE = ("FAILED", "TIMEOUT", "STOPPED")
MAX_RESTARTS = 1000
_POLICY_KEYS = frozenset({"on", "max_restarts", "window", "backoff", "grace"})
_BACKOFF_KEYS = frozenset({"initial", "factor", "max", "jitter"})
_SPEC_KEYS = frozenset({"lifecycle", "data", "submit", "profile"})


def _unknown(given: Mapping[str, Any], allowed: frozenset[str], where: str) -> None:
    extra = sorted(str(k) for k in given if k not in allowed)
    if extra:
        raise InvalidInput(where, f"has unknown keys {extra[:5]} (known: {sorted(allowed)})")


def _mapping(value: object, where: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidInput(where, f"must be a mapping, not {type(value).__name__}")
    return value


@dataclass(frozen=True, slots=True)
class Policy:
    """When and how often an ended attempt is replaced.

    - `on`: the attempt's terminal states that restart it (see `RESTARTABLE`);
    - `max_restarts` within `window` seconds (None: over the supervisor's whole life), counted
      at the moments the attempts ended; one more end with the budget spent gives up;
    - backoff: `initial * factor ** (n - 1)` seconds for the n-th attempt in a row that ended
      before it counted as started, capped at `max`, minus up to `jitter` of it;
    - `grace`: seconds an attempt must stay HEALTHY to count as started (it then resets the
      backoff to `initial`).
    """

    on: frozenset[str] = frozenset(RESTARTABLE)
    max_restarts: int = 5
    window: float | None = 600.0
    initial: float = 1.0
    factor: float = 2.0
    cap: float = 300.0
    jitter: float = 0.2
    grace: float = 0.0

    @classmethod
    def from_dict(cls, raw: object) -> Policy:
        """Parse `{on, max_restarts, window, backoff: {initial, factor, max, jitter}, grace}`."""
        given = _mapping(raw, "policy")
        _unknown(given, _POLICY_KEYS, "policy")
        d = cls()
        backoff = _mapping(given.get("backoff"), "policy.backoff")
        _unknown(backoff, _BACKOFF_KEYS, "policy.backoff")
        on = given.get("on", list(RESTARTABLE))
        if isinstance(on, str) or not isinstance(on, Sequence):
            raise InvalidInput("policy.on", "must be a list of states")
        for state in on:
            if state not in RESTARTABLE:
                raise InvalidInput("policy.on", f"may name only {list(RESTARTABLE)}, not {state!r}")
        window = given.get("window", d.window)
        policy = cls(
            on=frozenset(on),
            max_restarts=validation.count(
                given.get("max_restarts", d.max_restarts),
                "policy.max_restarts",
                maximum=MAX_RESTARTS,
            ),
            window=None if window is None else validation.seconds(window, "policy.window"),
            initial=validation.seconds(backoff.get("initial", d.initial), "backoff.initial"),
            factor=validation.finite_number(
                backoff.get("factor", d.factor), "backoff.factor", minimum=1, maximum=100
            ),
            cap=validation.seconds(backoff.get("max", d.cap), "backoff.max"),
            jitter=validation.finite_number(
                backoff.get("jitter", d.jitter), "backoff.jitter", minimum=0, maximum=1
            ),
            grace=validation.seconds(given.get("grace", d.grace), "policy.grace"),
        )
        if policy.window == 0:
            raise InvalidInput("policy.window", "must be positive, or null for no window")
        return policy

    def to_dict(self) -> dict[str, Any]:
        return {
            "on": [s for s in RESTARTABLE if s in self.on],
            "max_restarts": self.max_restarts,
            "window": self.window,
            "backoff": {
                "initial": self.initial,
                "factor": self.factor,
                "max": self.cap,
                "jitter": self.jitter,
            },
            "grace": self.grace,
        }

    def base_delay(self, in_a_row: int) -> float:
        """The backoff before jitter for the `in_a_row`-th early end in a row (1, 2, ...)."""
        exponent = min(max(in_a_row, 1) - 1, 64)
        return float(min(self.cap, self.initial * self.factor**exponent))

    def delay(self, supervisor_id: str, attempt: int, in_a_row: int) -> float:
        """The backoff after attempt `attempt` ended: deterministic for this supervisor and
        attempt (the jitter comes from a hash of both), in [base * (1 - jitter), base]."""
        base = self.base_delay(in_a_row)
        digest = hashlib.blake2b(f"{supervisor_id}:{attempt}".encode(), digest_size=8).digest()
        unit = int.from_bytes(digest, "big") / 2**64
        return base * (1.0 - self.jitter * unit)

    def restarts_in_window(self, restarts: Sequence[datetime], at: datetime) -> int:
        """Restarts decided within the window that ends at `at`."""
        if self.window is None:
            return len(restarts)
        since = at - timedelta(seconds=self.window)
        return sum(1 for t in restarts if t > since)


@dataclass(frozen=True, slots=True)
class Spec:
    """What every attempt is created with: its lifecycle, data, profile and the arguments of
    the backend's `submit` (a local process spec, Slurm job and container options). Retained
    in the supervisor's data, so secrets must be `{"$secret": NAME}` references."""

    lifecycle: str = "service"
    data: Mapping[str, Any] = field(default_factory=dict)
    submit: Mapping[str, Any] = field(default_factory=dict)
    profile: str | None = None

    @classmethod
    def from_dict(cls, raw: object) -> Spec:
        given = _mapping(raw, "spec")
        _unknown(given, _SPEC_KEYS, "spec")
        return cls(
            lifecycle=validation.text(given.get("lifecycle", "service"), "spec.lifecycle"),
            data=storable_arguments(given.get("data"), "spec.data"),
            submit=storable_arguments(given.get("submit"), "spec.submit"),
            profile=validation.optional_text(given.get("profile"), "spec.profile", max_length=100),
        )

    def to_dict(self) -> dict[str, Any]:
        found: dict[str, Any] = {"lifecycle": self.lifecycle, "data": dict(self.data)}
        found["submit"] = dict(self.submit)
        if self.profile is not None:
            found["profile"] = self.profile
        return found


def attempt_id(supervisor_id: str, attempt: int) -> str:
    """The id of a supervisor's n-th attempt: deterministic, so a retried launch cannot make a
    second one (the insert of the same id fails and its transaction rolls back)."""
    return f"{supervisor_id}-a{attempt}"
