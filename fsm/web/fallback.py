"""A layered SVG drawing of a lifecycle for machines without graphviz: states in columns by
their distance from the initial state, moves as straight arrows. Plain, but complete and
offline; every text is escaped."""

from __future__ import annotations

from collections import deque
from html import escape
from typing import NamedTuple

WIDTH, HEIGHT, GAP_X, GAP_Y, MARGIN = 130, 44, 70, 22, 20


class Box(NamedTuple):
    name: str
    entities: int
    fill: str
    ink: str
    terminal: bool
    initial: bool


class Edge(NamedTuple):
    event: str
    source: str
    dest: str
    times: int
    width: float


def _columns(initial: str, boxes: list[Box], edges: list[Edge]) -> dict[str, int]:
    depth = {initial: 0}
    queue = deque([initial])
    while queue:
        here = queue.popleft()
        for e in edges:
            if e.source == here and e.dest not in depth:
                depth[e.dest] = depth[here] + 1
                queue.append(e.dest)
    last = max(depth.values(), default=0)
    return {b.name: depth.get(b.name, last + 1) for b in boxes}


def layered_svg(title: str, initial: str, boxes: list[Box], edges: list[Edge]) -> str:
    column = _columns(initial, boxes, edges)
    rows: dict[int, int] = {}
    where: dict[str, tuple[float, float]] = {}
    for b in boxes:
        col = column[b.name]
        row = rows.get(col, 0)
        rows[col] = row + 1
        where[b.name] = (MARGIN + col * (WIDTH + GAP_X), MARGIN + row * (HEIGHT + GAP_Y))
    width = MARGIN * 2 + (max(column.values(), default=0) + 1) * (WIDTH + GAP_X)
    height = MARGIN * 2 + max(rows.values(), default=1) * (HEIGHT + GAP_Y)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)} lifecycle">',
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" '
        'markerHeight="7" orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="#555"/></marker></defs>',
    ]
    for e in edges:
        if e.source not in where or e.dest not in where:
            continue
        (x1, y1), (x2, y2) = where[e.source], where[e.dest]
        x1, y1, x2, y2 = x1 + WIDTH, y1 + HEIGHT / 2, x2, y2 + HEIGHT / 2
        if x2 <= x1:  # backwards or same column: leave from the bottom
            x1, y1 = x1 - WIDTH / 2, y1 + HEIGHT / 2
        colour = "#08519c" if e.times else "#999"
        label = f"{e.event} \N{MULTIPLICATION SIGN}{e.times}" if e.times else e.event
        parts.append(
            f'<g class="edge" id="move-{escape(e.event)}-{escape(e.source)}-{escape(e.dest)}">'
            f'<line x1="{x1:.0f}" y1="{y1:.0f}" x2="{x2:.0f}" y2="{y2:.0f}" stroke="{colour}" '
            f'stroke-width="{e.width}" marker-end="url(#arrow)"/>'
            f'<text x="{(x1 + x2) / 2:.0f}" y="{(y1 + y2) / 2 - 3:.0f}" font-size="9" '
            f'text-anchor="middle">{escape(label)}</text></g>'
        )
    for b in boxes:
        x, y = where[b.name]
        border = 3 if b.initial else 2 if b.terminal else 1
        parts.append(
            f'<g class="node" id="state-{escape(b.name)}">'
            f"<title>{escape(b.name)}: {b.entities}</title>"
            f'<rect x="{x:.0f}" y="{y:.0f}" width="{WIDTH}" height="{HEIGHT}" rx="8" '
            f'fill="{b.fill}" stroke="#333" stroke-width="{border}"/>'
            f'<text x="{x + WIDTH / 2:.0f}" y="{y + 18:.0f}" font-size="11" text-anchor="middle" '
            f'fill="{b.ink}">{escape(b.name)}</text>'
            f'<text x="{x + WIDTH / 2:.0f}" y="{y + 34:.0f}" font-size="11" text-anchor="middle" '
            f'fill="{b.ink}">{b.entities}</text></g>'
        )
    parts.append("</svg>")
    return "\n".join(parts)
