"""Request ids, and the probe endpoints answered before anything else runs."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse

from . import logs, views

__all__ = ["RequestIdMiddleware", "ProbeMiddleware", "REQUEST_ID_HEADER", "bind_request", "unbind_request"]

REQUEST_ID_HEADER = "X-Request-ID"
# What a proxy or a client may hand us: short, printable, no spaces, nothing to inject into a log line.
_SANE_REQUEST_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")


def request_id_from(value: str | None) -> str:
    """The caller's id when it is sane, else a fresh one."""
    if value and _SANE_REQUEST_ID.match(value):
        return value
    return uuid.uuid4().hex


class RequestIdMiddleware:
    """Binds a request id to every log line of the request and echoes it in the response."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        # Usually bound already by the request_started signal (see apps.py), so
        # that Django's own lines after the middleware (e.g. "Not Found: ...") carry it too.
        request_id = logs.current().get("request_id") or request_id_from(request.headers.get(REQUEST_ID_HEADER))
        request.request_id = request_id  # type: ignore[attr-defined]
        with logs.log_context(request_id=request_id):
            response = self.get_response(request)
        response[REQUEST_ID_HEADER] = request_id
        return response


def bind_request(environ: dict | None = None, **_: object) -> None:
    """request_started: a fresh log context for the request, with its id."""
    logs.clear()
    logs.bind(request_id=request_id_from((environ or {}).get("HTTP_X_REQUEST_ID")))


def unbind_request(**_: object) -> None:
    """request_finished: nothing of this request leaks into the thread's next log lines."""
    logs.clear()


class ProbeMiddleware:
    """Answers /healthz, /readyz and token-authorized /metrics before the host
    check, the HTTPS redirect and the session: a kubelet or Prometheus calls a
    pod by its IP over plain HTTP, and a probe must not touch the session store.
    A browser session on /metrics or /readyz falls through to the regular view."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        path = request.path_info.rstrip("/")
        if request.method in ("GET", "HEAD"):
            if path == "/healthz":
                return views.healthz(request)
            # A browser session falls through to the regular view, which knows whether it is staff's.
            if path == "/readyz" and settings.SESSION_COOKIE_NAME not in request.COOKIES:
                return views.readyz(request)
            if path == "/metrics" and views.metrics_access(request, with_session=False) == 200:
                return views.metrics_view(request)
        return self.get_response(request)
