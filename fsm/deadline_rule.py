"""The worker-wide deadline rule (TEAM contract 3), as plain functions of an entity's times.

A time limit fires for an entity in state S only when `now >= deadline` AND one of:

- an observation that succeeded at or after the deadline still showed S;
- `now >= deadline + bound`, the bound being the state's own limit: we waited "the limit again"
  for one successful look (and the worker tried one more look just before firing);
- the entity's lifecycle has no backend route (nothing could be observed).

So a failed look never ages an entity into a timeout it did not earn: while looks fail, the limit
waits (boundedly) for one that succeeds, and an observation that shows the entity left S in time
(its job failed, its operation succeeded) wins. Until its deadline an entity is never looked at
later than the deadline itself; after it, at least every `after_deadline_interval`.
"""

from __future__ import annotations

from datetime import datetime, timedelta

#: after a deadline, looks come at least this many times within the bound
LOOKS_WITHIN_BOUND = 10


def bound(deadline_at: datetime, state_entered_at: datetime) -> timedelta:
    """The state's own limit (as this entity had it): how long a deadline waits for a look."""
    return max(deadline_at - state_entered_at, timedelta(0))


def may_fire(
    *,
    now: datetime,
    deadline_at: datetime | None,
    state_entered_at: datetime,
    last_observed_at: datetime | None,
    routed: bool,
) -> bool:
    """Whether the time limit of the entity's current state may fire at `now`."""
    if deadline_at is None or now < deadline_at:
        return False
    if not routed:
        return True
    if last_observed_at is not None and last_observed_at >= deadline_at:
        return True
    return now >= deadline_at + bound(deadline_at, state_entered_at)


def after_deadline_interval(interval: float, deadline_at: datetime, entered: datetime) -> float:
    """Seconds between looks once the deadline passed: the state's refresh interval, or shorter
    so that the bound holds several looks (a few failed looks must not decide the outcome)."""
    window = bound(deadline_at, entered).total_seconds() / LOOKS_WITHIN_BOUND
    return max(min(interval, window), 1e-3)


def next_look(
    wanted: datetime,
    *,
    now: datetime,
    deadline_at: datetime | None,
    state_entered_at: datetime,
    interval: float,
) -> datetime:
    """`wanted` (the next refresh by interval or backoff), moved earlier where the rule needs a
    look: never after the deadline; after it, at least every `after_deadline_interval`."""
    if deadline_at is None:
        return wanted
    if now < deadline_at:
        return min(wanted, deadline_at)
    every = after_deadline_interval(interval, deadline_at, state_entered_at)
    return min(wanted, now + timedelta(seconds=every))
