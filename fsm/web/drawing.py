"""The overview's live diagrams as SVG: states filled by how many entities are in each, moves
drawn thicker the more often they fired in the window.

Graphviz's `dot` lays them out (run with an argv list, DOT on stdin, never a shell); when it is
not installed, `fallback.py` draws a layered picture in pure Python. Both run on the server, so
the page needs no network and no script to show a diagram.
"""

from __future__ import annotations

import functools
import math
import shutil
import subprocess

from fsm.definition import SAME_STATE
from fsm.lifecycle import Lifecycle
from fsm.web.fallback import Box, Edge, layered_svg
from fsm.web.overlay import Overlay

# a sequential scale, light to dark: index by the share of entities in the state
FILLS = ("#ffffff", "#deebf7", "#9ecae1", "#4292c6", "#08519c")
DOT_SECONDS = 10.0
_TIMES = "\N{MULTIPLICATION SIGN}"


def fill(count: int, most: int) -> tuple[str, str]:
    """(fill, text colour) for a state holding `count` of at most `most` entities."""
    if count <= 0 or most <= 0:
        return FILLS[0], "#000000"
    level = 1 + min(3, int(3 * math.log1p(count) / math.log1p(most) + 0.5)) if most > 1 else 4
    level = min(level, len(FILLS) - 1)
    return FILLS[level], "#ffffff" if level >= 3 else "#000000"


def weight(times: int, most: int) -> float:
    if times <= 0 or most <= 0:
        return 1.0
    return round(1.0 + 4.0 * math.log1p(times) / math.log1p(most), 2)


def moves(lifecycle: Lifecycle) -> list[tuple[str, str, str]]:
    """(event, from, to) of every real move, in definition order (stays are not drawn)."""
    out: list[tuple[str, str, str]] = []
    for t in lifecycle.definition.transitions:
        for source in t.sources:
            dest = source if t.dest == SAME_STATE else t.dest
            if dest != source and (t.trigger, source, dest) not in out:
                out.append((t.trigger, source, dest))
    return out


def _boxes_and_edges(lifecycle: Lifecycle, overlay: Overlay) -> tuple[list[Box], list[Edge]]:
    most = max(overlay.counts.values(), default=0)
    boxes = []
    for spec in lifecycle.definition.states:
        n = overlay.counts.get(spec.name, 0)
        background, ink = fill(n, most)
        boxes.append(Box(spec.name, n, background, ink, spec.terminal, spec.initial))
    drawn = moves(lifecycle)
    names = {b.name for b in boxes}
    extra = [
        m for m in overlay.fired if m not in drawn and {m[1], m[2]} <= names
    ]  # moves of older versions
    top = max(overlay.fired.values(), default=0)
    edges = [
        Edge(e, f, t, overlay.fired.get((e, f, t), 0), weight(overlay.fired.get((e, f, t), 0), top))
        for e, f, t in [*drawn, *sorted(extra)]
    ]
    return boxes, edges


def _quote(*lines: str) -> str:
    """A DOT string; several lines are joined by DOT's own line break."""
    escaped = [x.replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ") for x in lines]
    return '"' + "\\n".join(escaped) + '"'


def dot_source(lifecycle: Lifecycle, overlay: Overlay) -> str:
    boxes, edges = _boxes_and_edges(lifecycle, overlay)
    lines = [
        f"digraph {_quote(lifecycle.name)} {{",
        '  graph [rankdir=LR, bgcolor="transparent", fontname="sans-serif"];',
        '  node [shape=box, style="rounded,filled", fontname="sans-serif", fontsize=11];',
        '  edge [fontname="sans-serif", fontsize=9, color="#555555"];',
    ]
    for b in boxes:
        extra = ", peripheries=2" if b.terminal else ""
        extra += ", penwidth=2" if b.initial else ""
        lines.append(
            f"  {_quote(b.name)} [label={_quote(b.name, str(b.entities))},"
            f" id={_quote('state-' + b.name)}, fillcolor={_quote(b.fill)},"
            f" fontcolor={_quote(b.ink)}, tooltip={_quote(f'{b.name}: {b.entities}')}{extra}];"
        )
    for e in edges:
        label = f"{e.event} {_TIMES}{e.times}" if e.times else e.event
        colour = "#08519c" if e.times else "#999999"
        lines.append(
            f"  {_quote(e.source)} -> {_quote(e.dest)} [label={_quote(label)},"
            f" penwidth={e.width}, color={_quote(colour)},"
            f" id={_quote(f'move-{e.event}-{e.source}-{e.dest}')}];"
        )
    lines.append("}")
    return "\n".join(lines) + "\n"


@functools.lru_cache(maxsize=64)
def _dot_svg(source: str) -> str | None:
    program = shutil.which("dot")
    if program is None:
        return None
    try:
        done = subprocess.run(
            [program, "-Tsvg"],
            input=source.encode("utf-8"),
            capture_output=True,
            timeout=DOT_SECONDS,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    text = done.stdout.decode("utf-8", "replace")
    start = text.find("<svg")
    return text[start:] if start >= 0 else None


def svg(lifecycle: Lifecycle, overlay: Overlay, *, use_dot: bool = True) -> str:
    """The live diagram as an inline SVG element (dot's layout, else the fallback's)."""
    if use_dot:
        drawn = _dot_svg(dot_source(lifecycle, overlay))
        if drawn is not None:
            return drawn
    boxes, edges = _boxes_and_edges(lifecycle, overlay)
    return layered_svg(lifecycle.name, lifecycle.initial, boxes, edges)
