"""The live overlay of a lifecycle's diagram: entities per state now, moves fired in a window.

Shared by the web overview and `fsm diagram NAME --db URL --since WINDOW`, so both draw the same
numbers. Moves are counted per definition version and kept only for the versions of this
lifecycle (a version is a hash of the definition, name included).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta

from fsm.lifecycle import Lifecycle
from storage import Store
from storage.moves import FiredMove, fired_moves
from storage.records import StateCount

WINDOWS = {"hour": 3600.0, "day": 86400.0, "week": 7 * 86400.0, "all": None}
_SPAN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_UNIT = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
MAX_WINDOW = 10 * 365 * 86400.0


class WindowError(ValueError):
    """A window that is neither a name (hour, day, week, all) nor a span like 90m or 2d."""


def window_seconds(text: str) -> float | None:
    """ "hour" -> 3600, "90m" -> 5400, "all" -> None (no limit)."""
    if text in WINDOWS:
        return WINDOWS[text]
    found = _SPAN.match(text)
    if found is None:
        raise WindowError(f"unknown window {text[:40]!r}: use hour, day, week, all or e.g. 90m, 2d")
    seconds = float(found.group(1)) * _UNIT[found.group(2)]
    if not 0 < seconds <= MAX_WINDOW:
        raise WindowError(f"window {text[:40]!r} must be more than 0 and at most ten years")
    return seconds


@dataclass(frozen=True, slots=True)
class Overlay:
    lifecycle: str
    counts: dict[str, int]
    fired: Counter[tuple[str, str, str]]
    since: datetime | None


def versions_by_lifecycle(store: Store, lifecycles: dict[str, Lifecycle]) -> dict[str, str]:
    """definition version -> lifecycle name, for every version stored or registered."""
    owners = {version: name for name, version in store.definitions()}
    owners.update({lc.version: name for name, lc in lifecycles.items()})
    return owners


def overlays(
    counts: list[StateCount],
    moves: list[FiredMove],
    owners: dict[str, str],
    since: datetime | None,
) -> dict[str, Overlay]:
    """One overlay per lifecycle named in `counts` or in `moves`."""
    result: dict[str, Overlay] = {}

    def of(name: str) -> Overlay:
        if name not in result:
            result[name] = Overlay(name, {}, Counter(), since)
        return result[name]

    for c in counts:
        of(c.lifecycle).counts[c.state] = c.total
    for m in moves:
        name = owners.get(m.definition_version)
        if name is not None:
            of(name).fired[(m.event, m.from_state, m.to_state)] += m.times
    return result


def live_overlay(
    store: Store, lifecycles: dict[str, Lifecycle], name: str, window: float | None, now: datetime
) -> Overlay:
    """The overlay of one lifecycle, read in one snapshot."""
    since = None if window is None else now - timedelta(seconds=window)
    with store.reading() as conn:
        moves = fired_moves(conn, since)
    counts = [c for c in store.count_by_state() if c.lifecycle == name]
    found = overlays(counts, moves, versions_by_lifecycle(store, lifecycles), since)
    return found.get(name, Overlay(name, {}, Counter(), since))
