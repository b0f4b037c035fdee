"""Errors to HTTP answers: typed errors become a status and one redacted line, never a
traceback; anything unexpected is a 500 that says only that."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from fsm.errors import FsmError, InvalidEvent, InvalidInput, UnknownLifecycle
from fsm.redaction import redact_text
from fsm.web.overlay import WindowError
from storage import EntityNotFound
from storage.errors import DatabaseUnavailable, DuplicateEntity, StorageError, VersionConflict
from storage.pages import InvalidCursor

log = logging.getLogger(__name__)

# most specific first: the first class an error is an instance of decides
STATUS: tuple[tuple[type[Exception], int], ...] = (
    (EntityNotFound, 404),
    (DuplicateEntity, 409),
    (VersionConflict, 409),
    (InvalidEvent, 409),
    (DatabaseUnavailable, 503),
    (InvalidCursor, 400),
    (WindowError, 400),
    (UnknownLifecycle, 400),
    (InvalidInput, 400),
    (FsmError, 400),
    (StorageError, 500),
)


def status_of(exc: BaseException) -> int:
    for kind, status in STATUS:
        if isinstance(exc, kind):
            return status
    return 500


def detail(exc: BaseException) -> str:
    text = " ".join(str(exc).split())[:500] or type(exc).__name__
    return redact_text(text)


def install(app: FastAPI) -> None:
    async def known(_request: Request, exc: Exception) -> JSONResponse:
        status = status_of(exc)
        if status >= 500:
            log.warning("%s: %s", type(exc).__name__, detail(exc))
        return JSONResponse({"detail": detail(exc)}, status_code=status)

    async def unexpected(_request: Request, exc: Exception) -> JSONResponse:
        log.error("internal error: %s: %s", type(exc).__name__, detail(exc))
        return JSONResponse({"detail": "internal error (logged by the server)"}, status_code=500)

    for kind, _status in STATUS:
        app.add_exception_handler(kind, known)
    app.add_exception_handler(Exception, unexpected)
