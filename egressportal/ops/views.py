"""/healthz, /readyz and /metrics."""

from __future__ import annotations

import hmac

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from prometheus_client import CONTENT_TYPE_LATEST

from . import liveness, metrics

__all__ = ["healthz", "readyz", "metrics_view", "metrics_access"]


def _may_see_details(request: HttpRequest) -> bool:
    """Probe details (which check failed, timings, error text naming hosts and ports) are for whoever may
    scrape the metrics: a staff session or the metrics bearer token. Everyone else gets the status only."""
    return metrics_access(request, with_session=hasattr(request, "user")) == 200


def healthz(request: HttpRequest) -> HttpResponse:
    """The process answers: no database, no broker."""
    response = JsonResponse({"status": "ok"})
    response["Cache-Control"] = "no-store"
    return response


def readyz(request: HttpRequest) -> HttpResponse:
    """The database and the broker answer (each within 2 s): 200, else 503. Details only for staff or with
    the metrics token (see _may_see_details); the status code is what a load balancer needs."""
    ok, report = liveness.readiness()
    body = report if _may_see_details(request) else {"status": report["status"]}
    response = JsonResponse(body, status=200 if ok else 503)
    response["Cache-Control"] = "no-store"
    return response


def _bearer_ok(request: HttpRequest) -> bool:
    expected = settings.METRICS_TOKEN
    header = request.headers.get("Authorization", "")
    scheme, _, given = header.partition(" ")
    if not expected or scheme.lower() != "bearer" or not given.strip():
        return False
    return hmac.compare_digest(given.strip().encode(), expected.encode())


def metrics_access(request: HttpRequest, *, with_session: bool = True) -> int:
    """200 when the caller may scrape, else 401 (no or bad credentials) or 403 (signed in, not staff)."""
    if settings.METRICS_PUBLIC or _bearer_ok(request):
        return 200
    user = getattr(request, "user", None) if with_session else None
    if user is not None and user.is_authenticated:
        return 200 if user.is_staff else 403
    return 401


def metrics_view(request: HttpRequest) -> HttpResponse:
    status = metrics_access(request)
    if status != 200:
        response = HttpResponse(
            "Metrics need a staff session or a bearer token (METRICS_TOKEN).\n" if status == 401 else "Staff only.\n",
            status=status,
            content_type="text/plain; charset=utf-8",
        )
        if status == 401:
            response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    response = HttpResponse(metrics.render(), content_type=CONTENT_TYPE_LATEST)
    response["Cache-Control"] = "no-store"
    return response
