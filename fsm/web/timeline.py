"""An entity's history as state bands over time (server-side SVG): one band per state it was
in, from the moment it entered (observed time) to the next transition, or to now."""

from __future__ import annotations

from datetime import datetime, timedelta
from html import escape

from fsm.web.drawing import FILLS
from storage.records import EntityRow, TransitionRow

WIDTH, BAND, AXIS = 900, 28, 18
PALETTE = ("#9ecae1", "#a1d99b", "#fdae6b", "#bcbddc", "#fc9272", "#c7e9c0", "#fdd0a2", "#d9d9d9")


def bands(
    entity: EntityRow, history: list[TransitionRow], now: datetime
) -> list[tuple[str, datetime, datetime]]:
    """(state, from, to) spans; times never run backwards even if observations did. The
    current state runs to `now`, a terminal one only a tenth of the entity's life."""
    state = history[0].from_state if history else entity.state
    start = entity.created_at
    spans: list[tuple[str, datetime, datetime]] = []
    for t in history:
        moment = max(start, t.observed_at)
        spans.append((state, start, moment))
        state, start = t.to_state, moment
    if entity.terminal:  # it stays there for ever: a stub, not a band that dwarfs the rest
        lived = start - entity.created_at
        end = start + max(lived / 10, timedelta(seconds=1))
    else:
        end = max(start, now)
    spans.append((state, start, end))
    return spans


def colours(spans: list[tuple[str, datetime, datetime]]) -> dict[str, str]:
    """A colour per state, in the order the entity first entered them."""
    found: dict[str, str] = {}
    for state, _start, _end in spans:
        found.setdefault(state, PALETTE[len(found) % len(PALETTE)])
    return found


def legend(entity: EntityRow, history: list[TransitionRow], now: datetime) -> str:
    chips = "".join(
        f'<span class="chip"><i style="background:{c}"></i>{escape(state)}</span>'
        for state, c in colours(bands(entity, history, now)).items()
    )
    return f'<p class="legend">{chips}</p>'


def svg(entity: EntityRow, history: list[TransitionRow], now: datetime) -> str:
    spans = bands(entity, history, now)
    first, last = spans[0][1], spans[-1][2]
    total = max((last - first).total_seconds(), 1e-6)
    palette = colours(spans)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{BAND + AXIS}" '
        f'viewBox="0 0 {WIDTH} {BAND + AXIS}" role="img" aria-label="state timeline" '
        'data-testid="timeline">'
    ]
    for state, start, end in spans:
        colour = palette[state]
        x = (start - first).total_seconds() / total * WIDTH
        w = max((end - start).total_seconds() / total * WIDTH, 1.0)
        label = escape(state)
        parts.append(
            f'<g class="band" data-state="{label}"><title>{label}: {escape(start.isoformat())} → '
            f'{escape(end.isoformat())}</title><rect x="{x:.1f}" y="0" width="{w:.1f}" '
            f'height="{BAND}" fill="{colour}" stroke="{FILLS[-1]}" stroke-width="0.5"/>'
            + (
                f'<text x="{x + 4:.1f}" y="18" font-size="11">{label}</text>'
                if w > 8 * len(state)
                else ""
            )
            + "</g>"
        )
    parts.append(
        f'<text x="0" y="{BAND + AXIS - 4}" font-size="10">{escape(first.isoformat())}</text>'
        f'<text x="{WIDTH}" y="{BAND + AXIS - 4}" font-size="10" text-anchor="end">'
        f"{escape(last.isoformat())}</text></svg>"
    )
    return "".join(parts)
