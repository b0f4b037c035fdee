"""HTML building blocks: the page shell and escaped fragments (no template engine, no CDN;
every value is escaped where it is put in)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import datetime
from html import escape
from typing import Any
from urllib.parse import urlencode

NAV = (("/", "Overview"), ("/entities", "Entities"), ("/docs", "API"))


def e(value: object) -> str:
    return escape("" if value is None else str(value), quote=True)


def when(value: datetime | None) -> str:
    if value is None:
        return ""
    text = value.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    return f'<time datetime="{e(value.isoformat())}">{e(text)}</time>'


def link(path: str, params: Mapping[str, Any] | None = None) -> str:
    kept = {k: v for k, v in (params or {}).items() if v not in (None, "", False)}
    return e(path + ("?" + urlencode(kept) if kept else ""))


def compact(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str, ensure_ascii=False)


def json_block(value: Any, testid: str) -> str:
    text = json.dumps(value, indent=2, sort_keys=True, default=str)
    return f'<pre class="json" data-testid="{e(testid)}">{e(text)}</pre>'


def table(headers: Iterable[str], rows: Iterable[str], testid: str, extra: str = "") -> str:
    head = "".join(f"<th>{e(h)}</th>" for h in headers)
    return (
        f'<table data-testid="{e(testid)}" {extra}><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def row(cells: Iterable[str], attrs: str = "") -> str:
    return f"<tr {attrs}>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>"


def page(title: str, body: str, *, active: str, data: Mapping[str, str] | None = None) -> str:
    nav = "".join(
        f'<a href="{href}"{" class=active" if href == active else ""}>{e(label)}</a>'
        for href, label in NAV
    )
    attrs = " ".join(f'data-{e(k)}="{e(v)}"' for k, v in (data or {}).items())
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        '<meta name=viewport content="width=device-width, initial-scale=1">'
        f"<title>{e(title)} · fsm</title>"
        '<link rel=stylesheet href="/static/style.css">'
        '<script src="/static/app.js" defer></script></head>'
        f"<body {attrs}><header><strong>fsm</strong><nav>{nav}</nav>"
        '<span id=live class=live title="live updates">●</span></header>'
        f"<main>{body}</main></body></html>"
    )
