"""Structured logs: one JSON object a line (or plain text), each carrying the request or job it was written for.

The web layer puts the request id in `request_id_var` for the length of a request; ingest binds the job id with
`log_context(job_id=...)`. Both formatters read these context variables, so code that logs needs no changes to be
correlated: any line written while serving a request carries that request's id.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import datetime, timezone
from typing import IO, Any

from support_bot.core.config import Settings

# The id of the HTTP request being served (set by the web layer's middleware).
request_id_var: ContextVar[str | None] = ContextVar("support_bot_request_id", default=None)
# Further fields bound for the work in progress (e.g. an ingest job's id).
_fields_var: ContextVar[dict[str, Any]] = ContextVar("support_bot_log_fields", default={})

# Attributes every LogRecord has; anything else on a record came from `extra=` and is written as a field.
# uvicorn adds `color_message`, the same text with terminal colours.
_RECORD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message", "asctime", "taskName", "color_message",
}
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    """Add `fields` to every log line written inside the block (and in code it calls on this thread)."""
    token = _fields_var.set({**_fields_var.get(), **fields})
    try:
        yield
    finally:
        _fields_var.reset(token)


def context_fields() -> dict[str, Any]:
    """The request id and bound fields of the current context, for formatters."""
    fields = dict(_fields_var.get())
    request_id = request_id_var.get()
    if request_id:
        fields["request_id"] = request_id
    return fields


def printable(text: str, limit: int = 512) -> str:
    """`text` cut to `limit` characters with control characters escaped, so a value cannot forge log lines."""
    text = text[:limit]
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, message, request_id / bound fields, extras, exception."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        out.update(context_fields())
        for key, value in record.__dict__.items():
            if key not in _RECORD_ATTRS and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["exception"] = record.exc_text
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        # json.dumps escapes newlines, so a message can never split into two lines (or forge one).
        return json.dumps(out, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """Lines for people: time, level, logger, message, then the request id and bound fields as key=value."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = context_fields()
        if not fields:
            return line
        extra = " ".join(f"{k}={printable(str(v), 200)}" for k, v in fields.items())
        head, sep, rest = line.partition("\n")  # keep a traceback below the first line
        return f"{head} [{extra}]{sep}{rest}"


def log_format(settings: Settings) -> str:
    """The configured format; unset means json in production and text in development."""
    return settings.log.format or ("json" if settings.env == "production" else "text")


def configure_logging(settings: Settings, *, verbose: bool = False, stream: IO[str] | None = None) -> logging.Handler:
    """Send every log line of this process to `stream` (stderr) in the configured format and level.

    For long-running processes (`serve`, `worker`): the root logger gets exactly one handler, and uvicorn's and
    Celery's loggers propagate to it, so all lines share one format and carry request or job ids.
    """
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format(settings) == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers = [handler]
    level = logging.DEBUG if verbose else logging.getLevelName(settings.log.level)
    root.setLevel(level)
    logging.captureWarnings(True)  # Python warnings too, rather than as bare text on stderr
    if not verbose:
        # Chatty libraries: bm25s logs each index build, httpx each request the OpenAI-compatible engine makes,
        # alembic each of its plugins at every start.
        for name in ("bm25s", "httpx", "httpcore", "alembic.runtime.plugins"):
            logging.getLogger(name).setLevel(max(level, logging.WARNING))
    return handler
