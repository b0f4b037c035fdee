"""Which moves a diagram draws as edges, and which it lists inside a state instead.

Reflexive moves ("stays on: ..."), moves from every live state ("from any live state: ..."),
and families of moves out of one state named after their destinations ("adopted_<state> →
..."): see `fsm.diagram`.
"""

from __future__ import annotations

from collections.abc import Mapping

from fsm.definition import SAME_STATE, TransitionSpec
from fsm.lifecycle import Lifecycle

Move = tuple[str, str, str]  # (trigger, from, to)
TIMES = "\N{MULTIPLICATION SIGN}"


def guarded(trigger: str, t: TransitionSpec) -> str:
    checks = [*t.guards, *(f"!{u}" for u in t.unless)]
    return f"{trigger} [{' & '.join(checks)}]" if checks else trigger


def _from_any(lifecycle: Lifecycle, t: TransitionSpec) -> bool:
    """A move from every live state, worth one line in its destination instead of edges."""
    live = [s.name for s in lifecycle.definition.states if not s.terminal]
    return len(live) >= 4 and t.dest != SAME_STATE and set(t.sources) == set(live)


def families(lifecycle: Lifecycle) -> dict[tuple[str, str], list[TransitionSpec]]:
    """(source, prefix) -> three or more moves out of `source` named `prefix_<dest>`."""
    found: dict[tuple[str, str], list[TransitionSpec]] = {}
    for t in lifecycle.definition.transitions:
        suffix = "_" + t.dest.lower()
        if len(t.sources) == 1 and t.trigger.endswith(suffix) and len(t.trigger) > len(suffix):
            found.setdefault((t.sources[0], t.trigger[: -len(suffix)]), []).append(t)
    return {key: ts for key, ts in found.items() if len(ts) >= 3}


def moves(
    lifecycle: Lifecycle, fired: Mapping[Move, int] | None = None
) -> tuple[
    list[tuple[TransitionSpec, str, str]],
    dict[str, list[str]],
    dict[str, list[str]],
    dict[str, list[str]],
]:
    """Real moves in definition order; per state the events that leave it where it is, the
    events that reach it from any live state, and the families of moves out of it (with how
    often they fired)."""
    moves: list[tuple[TransitionSpec, str, str]] = []
    names = lifecycle.definition.state_names
    stays: dict[str, list[str]] = {name: [] for name in names}
    from_any: dict[str, list[str]] = {name: [] for name in names}
    family_lines: dict[str, list[str]] = {name: [] for name in names}
    grouped: set[TransitionSpec] = set()
    for (source, prefix), members in families(lifecycle).items():
        dests = []
        for t in members:
            times = (fired or {}).get((t.trigger, source, t.dest), 0)
            dests.append(f"{t.dest} {TIMES}{times}" if times else t.dest)
        family_lines[source].append(f"{prefix}_<state> → {', '.join(dests)}")
        grouped.update(members)
    for t in lifecycle.definition.transitions:
        if t in grouped:
            continue
        collapse = _from_any(lifecycle, t)
        if collapse:
            times = sum((fired or {}).get((t.trigger, s, t.dest), 0) for s in t.sources)
            label = guarded(t.trigger, t)
            from_any[t.dest].append(f"{label} {TIMES}{times}" if times else label)
        for source in t.sources:
            dest = source if t.dest == SAME_STATE else t.dest
            if dest == source:
                label = guarded(t.trigger, t)
                if label not in stays[source]:
                    stays[source].append(label)
            elif not collapse:
                moves.append((t, source, dest))
    return moves, stays, from_any, family_lines
