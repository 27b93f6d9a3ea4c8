"""Structured logs: one JSON object per line on stderr. Never log message bodies or keys.

Every line written while work for one request is under way carries that request's reference
(`ref`), so an operator can follow a request through the logs of every process with one filter.
The reference lives in a context variable: `request_scope()` opens a scope around one unit of
work (a job, a reply, a reviewer's command) and `set_ref()` names the request as soon as it is
known inside it (an inbound message learns its reference only once it is routed).
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}
# A mutable cell per scope, so a reference set deep inside a unit of work (in the same task)
# is seen by every later line of that unit, and by nothing after it.
_current: ContextVar[list[str | None] | None] = ContextVar("lers_request_ref", default=None)


@contextmanager
def request_scope(ref: str | None = None) -> Iterator[None]:
    """Log lines inside carry `ref` (once known); the previous scope is restored after."""
    token = _current.set([ref])
    try:
        yield
    finally:
        _current.reset(token)


def set_ref(ref: str | None) -> None:
    """Name the request the current unit of work is about (no effect outside a scope)."""
    cell = _current.get()
    if cell is not None:
        cell[0] = ref


def current_ref() -> str | None:
    cell = _current.get()
    return cell[0] if cell is not None else None


# each secret, and each form it takes inside a JSON string when that differs (made once, not
# for every line)
_secrets: set[str] = set()


def never_log(*secrets: str) -> None:
    """Secrets of this process (tokens, passwords): every log line is cleaned of them, whatever
    logged it (a library may log a URL with the Telegram token in its path)."""
    for secret in secrets:
        if len(secret) >= 4:
            _secrets.add(secret)
            _secrets.add(json.dumps(secret, ensure_ascii=False)[1:-1])


def redact(line: str) -> str:
    for secret in _secrets:
        if secret in line:
            line = line.replace(secret, "[redacted]")
    return line


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return redact(self._format(record))

    def _format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        ref = current_ref()
        if ref:
            entry["ref"] = ref
        entry.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


def setup_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # the JSON line carries none of these, so they are not worked out for every record (the
    # logging HOWTO's "Optimization" section): the caller's file and line, thread, process names
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    logging._srcfile = None
    for noisy in ("aiosqlite", "sqlalchemy", "mail.log", "asyncio", "alembic", "httpx", "aioimaplib",
                  "aiohttp.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
