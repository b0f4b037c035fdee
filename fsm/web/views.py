"""The HTML pages: overview, entities, one entity. Rendered on the server from the same
`Reader` as the API; `static/app.js` only adds live updates over SSE."""

from __future__ import annotations

from collections import Counter
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse

from fsm.lifecycle import Lifecycle
from fsm.web import drawing, timeline
from fsm.web.api import QueryDep, ReaderDep, entity_id_of
from fsm.web.html import compact, e, json_block, link, page, row, table, when
from fsm.web.models import Entity, LifecycleOverview, Transition
from fsm.web.overlay import WINDOWS, Overlay
from storage.pages import SORTS, EntityQuery, has_profiles

router = APIRouter(include_in_schema=False)
PENDING = ("id", "command", "due", "arguments")
CHILDREN = ("id", "lifecycle", "state", "updated", "data")


def _diagram(known: dict[str, Lifecycle], lc: LifecycleOverview, use_dot: bool) -> str:
    lifecycle = known.get(lc.name)
    if lifecycle is None:
        return "<p>(no definition known for this lifecycle)</p>"
    fired = Counter({(m.event, m.from_state, m.to_state): m.times for m in lc.moves})
    return drawing.svg(lifecycle, Overlay(lc.name, lc.counts, fired, None), use_dot=use_dot)


def _card(known: dict[str, Lifecycle], lc: LifecycleOverview, use_dot: bool) -> str:
    states = known.get(lc.name)
    order = [s.name for s in states.definition.states] if states else sorted(lc.counts)
    rows = [
        row(
            [
                f'<a href="{link("/entities", {"lifecycle": lc.name, "state": s})}">{e(s)}</a>',
                f'<span data-testid="count">{lc.counts.get(s, 0)}</span>',
            ],
            f'data-state="{e(s)}"',
        )
        for s in order
    ]
    needs = (
        f"<ul class=attention><li>failing observations: <b>{lc.failing_observations}</b></li>"
        f"<li>overdue deadlines: <b>{lc.overdue_deadlines}</b></li>"
        f"<li>lagging refreshes: <b>{lc.lagging_refreshes}</b></li></ul>"
    )
    return (
        f'<section class=card data-testid="lifecycle" data-lifecycle="{e(lc.name)}">'
        f"<h2>{e(lc.name)} <small>{lc.total} entities · version {e(lc.version)}</small></h2>"
        f"<div class=diagram>{_diagram(known, lc, use_dot)}</div>"
        f"<div class=side>{table(['state', 'entities'], rows, 'counts')}{needs}</div></section>"
    )


@router.get("/", response_class=HTMLResponse)
def overview(
    request: Request,
    r: ReaderDep,
    window: Annotated[str, Query(max_length=20)] = "day",
) -> HTMLResponse:
    data = r.overview(window)
    use_dot: bool = request.app.state.use_dot
    windows = " ".join(
        f'<a href="{link("/", {"window": w})}"{" class=active" if w == window else ""}>{e(w)}</a>'
        for w in WINDOWS
    )
    leases = [row([e(worker), str(n)]) for worker, n in data.leases.items()]
    known = r.lifecycles()
    cards = "".join(_card(known, lc, use_dot) for lc in data.lifecycles) or "<p>no entities yet</p>"
    body = (
        f"<h1>Overview</h1><p class=windows>moves fired in the last: {windows}</p>"
        f'<div id=overview data-testid="overview">{cards}'
        f"<h2>Leases by worker</h2>{table(['worker', 'entities'], leases, 'leases')}"
        f'<p data-testid="releases">releases not confirmed yet: <b>{data.releases_pending}</b></p>'
        "</div>"
    )
    return HTMLResponse(page("Overview", body, active="/", data={"page": "overview"}))


def _filters(query: EntityQuery, lifecycles: list[str]) -> str:
    options = "".join(
        f'<option value="{e(n)}"{" selected" if n == query.lifecycle else ""}>{e(n)}</option>'
        for n in ["", *lifecycles]
    )
    sorts = "".join(
        f"<option{' selected' if s == query.sort else ''}>{e(s)}</option>" for s in SORTS
    )
    profile = (
        f'<label>profile <input name=profile value="{e(query.profile)}"></label>'
        if has_profiles()
        else ""
    )
    return (
        '<form class=filters method=get action="/entities" data-testid="filters">'
        f"<label>lifecycle <select name=lifecycle>{options}</select></label>"
        f'<label>state <input name=state value="{e(query.state)}" size=12></label>{profile}'
        f'<label>search <input name=q value="{e(query.text)}" placeholder="id or data"></label>'
        f"<label>sort <select name=sort>{sorts}</select></label>"
        f"<label><input type=checkbox name=desc value=true{' checked' if query.descending else ''}>"
        " descending</label><button type=submit>Apply</button></form>"
    )


def _entity_row(x: Entity) -> str:
    preview = e(compact(x.data)[:80])
    return row(
        [
            f'<a href="/entities/{e(x.id)}">{e(x.id)}</a>',
            e(x.lifecycle),
            f'<span class="state">{e(x.state)}</span>',
            when(x.updated_at),
            f"<code>{preview}</code>",
        ],
        f'data-id="{e(x.id)}"',
    )


@router.get("/entities", response_class=HTMLResponse)
def entities(r: ReaderDep, query: QueryDep) -> HTMLResponse:
    result = r.entities(query)
    params = {
        "lifecycle": query.lifecycle,
        "state": query.state,
        "profile": query.profile,
        "q": query.text,
        "sort": query.sort if query.sort != "id" else None,
        "desc": "true" if query.descending else None,
    }
    more = "+" if result.more_than else ""
    nav = f'<a href="{link("/entities", params)}">first page</a>'
    if result.next_cursor:
        nav += (
            f' · <a rel=next data-testid="next" '
            f'href="{link("/entities", {**params, "after": result.next_cursor})}">next page →</a>'
        )
    rows = [_entity_row(x) for x in result.entities]
    live = {
        k: str(v) for k, v in params.items() if v and k in ("lifecycle", "state", "profile", "q")
    }
    body = (
        f"<h1>Entities <small data-testid=matching>{result.matching}{more} matching</small></h1>"
        f"{_filters(query, sorted(r.lifecycles()))}"
        f"{table(['id', 'lifecycle', 'state', 'updated (UTC)', 'data'], rows, 'entities')}"
        f'<p class=pager>{nav}</p><h2>Live</h2><table data-testid="live"><thead><tr>'
        "<th>recorded</th><th>entity</th><th>move</th><th>event</th><th>source</th></tr></thead>"
        "<tbody></tbody></table>"
    )
    data = {"page": "entities", "stream": link("/api/stream", live)}
    return HTMLResponse(page("Entities", body, active="/entities", data=data))


@router.get("/entities/{entity_id:path}", response_class=HTMLResponse)
def entity(entity_id: str, r: ReaderDep) -> HTMLResponse:
    target = entity_id_of(entity_id)
    shot = r.snapshot(target)
    detail = r.detail(shot)
    history = [Transition.of(t) for t in shot.history]
    x = detail.entity
    now = r.clock()
    band = timeline.svg(shot.entity, shot.history, now) + timeline.legend(
        shot.entity, shot.history, now
    )
    transitions = [
        row(
            [
                str(t.seq),
                f"{e(t.from_state)} → <b>{e(t.to_state)}</b>",
                e(t.event),
                e(t.source),
                when(t.observed_at),
                when(t.recorded_at),
                f"<code>{e(compact(t.payload)) if t.payload else ''}</code>",
            ],
            f'data-seq="{t.seq}"',
        )
        for t in history
    ]
    pending = [
        row([str(c.id), e(c.command), when(c.due_at), f"<code>{e(compact(c.arguments))}</code>"])
        for c in detail.pending_commands
    ]
    kids = [_entity_row(k) for k in detail.children]
    parent = (
        f'<p>parent: <a href="/entities/{e(detail.parent.id)}">{e(detail.parent.id)}</a> '
        f"({e(detail.parent.state)})</p>"
        if detail.parent
        else ""
    )
    release = ""
    if detail.release is not None:
        rel = detail.release
        done = (
            f"released {when(rel.released_at)}"
            if rel.released_at
            else f"<b>not confirmed yet</b>: {rel.attempts} attempt(s), "
            f"next {when(rel.next_attempt_at)}"
            + (f", last error: {e(rel.last_error)}" if rel.last_error else "")
        )
        release = f'<p data-testid="release">release (ended {e(rel.state)}): {done}</p>'
    v = detail.verification
    verdict = (
        '<p class=ok data-testid="verify">verify: no violations</p>'
        if v.ok
        else '<div class=bad data-testid="verify">verify: '
        + "".join(f"<p>{e(p.kind)}: {e(p.detail)}</p>" for p in v.violations)
        + "</div>"
    )
    times = [
        row([name, when(value)])
        for name, value in (
            ("created", x.created_at),
            ("in state since", x.state_entered_at),
            ("deadline", x.deadline_at),
            ("next refresh", x.next_refresh_at),
            ("lease until", x.lease_expires_at),
        )
    ]
    body = (
        f'<h1>{e(x.lifecycle)} <span data-testid="entity-id">{e(x.id)}</span> is '
        f'<span class="state" data-testid="state">{e(x.state)}</span></h1>'
        f"<p>version {x.version} · {x.seq} transitions · lease {e(x.lease_owner or 'none')} · "
        f"failed observations in a row: {x.observation_failures}"
        + (f" · profile {e(x.profile)}" if x.profile else "")
        + f"</p>{parent}{release}{verdict}<h2>Timeline</h2>{band}<h2>Transitions</h2>"
        + table(
            ["seq", "move", "event", "source", "observed (UTC)", "recorded (UTC)", "payload"],
            transitions,
            "history",
        )
        + f"<div class=columns><div><h2>Data</h2>{json_block(x.data, 'data')}</div>"
        f"<div><h2>Times</h2>{table(['', 'UTC'], times, 'times')}"
        f"<h2>Pending commands</h2>{table(PENDING, pending, 'pending')}"
        f"<h2>Children</h2>{table(CHILDREN, kids, 'children')}"
        "</div></div>"
    )
    data = {"page": "entity", "stream": link("/api/stream", {"entity": x.id})}
    return HTMLResponse(page(x.id, body, active="/entities", data=data))
