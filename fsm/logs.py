"""Logging set-up for the command line (plain text, or one JSON object per line), and the
filter that masks secrets in every log record fsm's handlers emit."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from fsm.redaction import policy

_EXCEPTIONS = logging.Formatter()


def _masked_argument(value: Any) -> Any:
    if isinstance(value, (Mapping, list, tuple)):
        return policy.redact(value)
    return value


class RedactingFilter(logging.Filter):
    """Masks secrets in a record's message, its arguments (a mapping or list argument is
    redacted by key, like a payload) and its exception text, before any handler formats it."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "_fsm_redacted", False):
            return True
        args = record.args
        if isinstance(args, Mapping):
            record.args = policy.redact(args)
        elif args:
            record.args = tuple(_masked_argument(a) for a in args)
        try:
            message = record.getMessage()
        except Exception:  # a malformed record: the handler reports it as logging does
            return True
        record.msg = policy.redact_text(message)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = _EXCEPTIONS.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = policy.redact_text(record.exc_text)
        if record.stack_info:
            record.stack_info = policy.redact_text(record.stack_info)
        record._fsm_redacted = True
        return True


def install_redaction(*handlers: logging.Handler) -> None:
    """Mask secrets in everything these handlers emit (default: the root logger's handlers).
    `configure` does this for its own handler; call it when you set up logging yourself."""
    targets = handlers or tuple(logging.getLogger().handlers)
    for handler in targets:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_text:
            entry["exception"] = record.exc_text
        elif record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def configure(*, json_lines: bool = False, level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter()
        if json_lines
        else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    install_redaction(handler)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("alembic").setLevel(logging.WARNING)
    # a tick still running when the next is due is skipped by design (max_instances=1)
    logging.getLogger("apscheduler").setLevel(logging.ERROR)
