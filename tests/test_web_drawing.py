"""Diagrams and pages without graphviz, and hostile text: the fallback drawing is complete,
well-formed SVG; nothing an entity's id, data or payload holds is ever markup on a page."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections import Counter

from fastapi.testclient import TestClient

from fsm import Engine
from fsm.lifecycles import builtin_lifecycles
from fsm.web import drawing
from fsm.web.overlay import Overlay
from tests.web_support import app_for, build

SVG = "{http://www.w3.org/2000/svg}"
HOSTILE = '<script>alert("x")</script><img src=x onerror=alert(1)>'


def test_the_fallback_drawing_has_every_state_and_move() -> None:
    for name, lifecycle in builtin_lifecycles().items():
        counts = {lifecycle.initial: 3}
        fired = Counter({drawing.moves(lifecycle)[0]: 2})
        svg = drawing.svg(lifecycle, Overlay(name, counts, fired, None), use_dot=False)
        root = ET.fromstring(svg)  # well-formed
        nodes = {g.get("id") for g in root.iter(f"{SVG}g") if g.get("class") == "node"}
        assert nodes == {f"state-{s}" for s in lifecycle.definition.state_names}
        edges = [g for g in root.iter(f"{SVG}g") if g.get("class") == "edge"]
        assert len(edges) == len(drawing.moves(lifecycle))
        texts = [t.text for t in root.iter(f"{SVG}text")]
        assert "3" in texts and any(t and t.endswith("\N{MULTIPLICATION SIGN}2") for t in texts)


def test_the_overview_without_graphviz(sqlite_url: str) -> None:
    built = build(sqlite_url)
    with TestClient(app_for(sqlite_url, use_dot=False)) as c:
        page = c.get("/?window=all").text
    pending = built.counts[("service", "PENDING")]
    assert f'<g class="node" id="state-PENDING"><title>PENDING: {pending}</title>' in page


def test_hostile_text_is_never_markup(sqlite_url: str) -> None:
    engine = Engine(sqlite_url)
    engine.create("service", {"note": HOSTILE}, id="x<b>y")
    engine.fire("x<b>y", "job_pending", {"why": HOSTILE})
    engine.close()
    with TestClient(app_for(sqlite_url)) as c:
        for path in ("/", "/entities", "/entities?q=script", "/entities/x%3Cb%3Ey"):
            page = c.get(path)
            assert page.status_code == 200, path
            assert "<script>alert" not in page.text and "<img src=x" not in page.text, path
            assert "x<b>y" not in page.text, path
        assert "&lt;script&gt;" in c.get("/entities/x%3Cb%3Ey").text
