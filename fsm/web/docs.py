"""`/docs`: the API as a table, rendered from the app's own OpenAPI on the server (FastAPI's
Swagger page would load its scripts from a CDN, and this view works offline)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from fsm.web.html import e, page, row, table

router = APIRouter(include_in_schema=False)


def operations(spec: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(method, path, parameters, summary) of every operation, in the spec's order."""
    found = []
    for path, methods in spec.get("paths", {}).items():
        for method, op in methods.items():
            params = ", ".join(p["name"] for p in op.get("parameters", []) if p["in"] == "query")
            text = op.get("description") or op.get("summary") or ""
            summary = " ".join(text.split("\n\n")[0].split())
            found.append((method.upper(), path, params, summary))
    return found


@router.get("/docs", response_class=HTMLResponse)
def docs(request: Request) -> HTMLResponse:
    spec = request.app.openapi()
    rows = [
        row([f"<code>{e(m)}</code>", f"<code>{e(p)}</code>", e(q), e(s)])
        for m, p, q, s in operations(spec)
    ]
    writes = "enabled" if request.app.state.writes is not None else "disabled (read-only)"
    body = (
        f"<h1>HTTP API</h1><p>The machine-readable description is "
        f'<a href="/openapi.json">/openapi.json</a> (OpenAPI {e(spec.get("openapi"))}). '
        f"Write endpoints are {writes}; they need <code>Authorization: Bearer TOKEN</code>.</p>"
        + table(["method", "path", "query", "what"], rows, "api")
    )
    return HTMLResponse(page("API", body, active="/docs"))
