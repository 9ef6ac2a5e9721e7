"""Structured logs: JSON lines in production, plain text in development.

Every line carries the request id, app id, host and task id of the work it
concerns (context variables bound by the middleware, the services and the
Celery signals), and secrets are scrubbed before anything is written.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import functools
import json
import logging
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

__all__ = [
    "CONTEXT_FIELDS",
    "ContextFilter",
    "JsonFormatter",
    "PlainFormatter",
    "SecretScrubFilter",
    "bind",
    "clear",
    "current",
    "log_context",
    "logged_with",
    "scrub",
]

CONTEXT_FIELDS = ("request_id", "app_id", "host", "task_id")
_vars: dict[str, contextvars.ContextVar[Any]] = {
    name: contextvars.ContextVar(f"egress_log_{name}", default=None) for name in CONTEXT_FIELDS
}

F = TypeVar("F", bound=Callable[..., Any])


def current() -> dict[str, Any]:
    """The bound context fields that are set."""
    return {name: var.get() for name, var in _vars.items() if var.get() is not None}


def bind(**fields: Any) -> dict[str, contextvars.Token]:
    """Set context fields until ``clear`` or the end of the context; returns reset tokens."""
    return {name: _vars[name].set(value) for name, value in fields.items() if name in _vars}


def clear(tokens: dict[str, contextvars.Token] | None = None) -> None:
    """Undo ``bind`` (with its tokens) or, without tokens, unset every field."""
    if tokens is None:
        for var in _vars.values():
            var.set(None)
        return
    for name, token in tokens.items():
        _vars[name].reset(token)


@contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    tokens = bind(**fields)
    try:
        yield
    finally:
        clear(tokens)


def logged_with(**fields: str) -> Callable[[F], F]:
    """Decorator binding keyword arguments of each call to the log context,
    e.g. ``@logged_with(app_id="app_id")``."""

    def decorate(func: F) -> F:
        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with log_context(**{field: kwargs.get(arg) for field, arg in fields.items() if kwargs.get(arg) is not None}):
                return func(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate


# -- secret scrubbing ------------------------------------------------------------------------------

_REDACTED = "[REDACTED]"
_PRIVATE_KEY = re.compile(
    r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----.*?(?:-----END [A-Z0-9 ]*PRIVATE KEY-----|\Z)", re.DOTALL
)
# scheme://user:password@host (DATABASE_URL, REDIS_URL in error messages)
_URL_CREDENTIALS = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^/\s:@]*:)([^@\s/]+)@")
# Authorization: Bearer abc / 'HTTP_AUTHORIZATION': 'Token abc'
_AUTHORIZATION = re.compile(
    r"(?i)(authorization['\"]?\s*[:=]\s*['\"]?)(?:(bearer|token|basic|digest)\s+)?[^\s'\",;}]+"
)
# A bare "Bearer <long token>" anywhere.
_SCHEME_TOKEN = re.compile(r"(?i)\b(bearer|token)(\s+)[A-Za-z0-9._~+/=-]{16,}")
# password=..., "token": "...", api_key: ...
_KEY_VALUE = re.compile(
    r"(?i)\b([\w.-]*(?:password|passwd|pwd|secret|token|api[_-]?key|access[_-]?key|private[_-]?key|"
    r"sessionid|csrftoken|credentials?))(['\"]?\s*[=:]\s*['\"]?)(?!\[REDACTED)([^\s'\"&,;}]+)"
)


def _authorization(match: re.Match[str]) -> str:
    scheme = f"{match.group(2)} " if match.group(2) else ""
    return f"{match.group(1)}{scheme}{_REDACTED}"


def scrub(text: str) -> str:
    """Remove secrets from a log message: passwords and tokens in key=value
    form, Authorization values, bearer tokens, private keys, URL passwords."""
    if not text:
        return text
    text = _PRIVATE_KEY.sub("[REDACTED PRIVATE KEY]", text)
    text = _URL_CREDENTIALS.sub(rf"\1{_REDACTED}@", text)
    text = _AUTHORIZATION.sub(_authorization, text)
    text = _SCHEME_TOKEN.sub(rf"\1\2{_REDACTED}", text)
    return _KEY_VALUE.sub(rf"\1\2{_REDACTED}", text)


class SecretScrubFilter(logging.Filter):
    """Scrubs the rendered message (and string extras) of every record a handler writes."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string must not lose the line
            message = str(record.msg)
        clean = scrub(message)
        if clean != message or record.args:
            record.msg, record.args = clean, None
        for key, value in list(record.__dict__.items()):
            if key not in _STANDARD_ATTRS and isinstance(value, str):
                setattr(record, key, scrub(value))
        return True


class ContextFilter(logging.Filter):
    """Puts the bound context fields on every record (None when unset)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, var in _vars.items():
            if getattr(record, name, None) is None:
                setattr(record, name, var.get())
        return True


# -- formatters ------------------------------------------------------------------------------------

_STANDARD_ATTRS = frozenset(
    logging.LogRecord("x", logging.INFO, "x", 0, "x", None, None).__dict__
) | {"message", "asctime", "taskName", *CONTEXT_FIELDS}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, the context fields
    that are set, any ``extra=`` fields, and the exception text (scrubbed)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": dt.datetime.fromtimestamp(record.created, tz=dt.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": scrub(record.getMessage()),
        }
        for name in CONTEXT_FIELDS:
            value = getattr(record, name, None)
            if value is None:
                value = _vars[name].get()
            if value is not None:
                entry[name] = value
        for key, value in record.__dict__.items():
            if key not in _STANDARD_ATTRS and not key.startswith("_") and key not in entry:
                entry[key] = value
        if record.exc_info:
            entry["exc"] = scrub(self.formatException(record.exc_info))
        elif record.exc_text:
            entry["exc"] = scrub(record.exc_text)
        if record.stack_info:
            entry["stack"] = scrub(self.formatStack(record.stack_info))
        return json.dumps(entry, default=str, ensure_ascii=False)


class PlainFormatter(logging.Formatter):
    """The development format, with the context fields appended when set."""

    def __init__(self, fmt: str | None = None, *args: Any, **kwargs: Any) -> None:
        super().__init__(fmt or "%(asctime)s %(levelname)s %(name)s %(message)s", *args, **kwargs)

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        context = " ".join(
            f"{name}={value}"
            for name in CONTEXT_FIELDS
            if (value := getattr(record, name, None) or _vars[name].get()) is not None
        )
        first, sep, rest = text.partition("\n")
        return scrub(f"{first} [{context}]{sep}{rest}" if context else text)
