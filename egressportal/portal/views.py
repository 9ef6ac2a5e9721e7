"""The browser portal for app owners: thin views over selectors (reads) and
services (writes). Every page works without JavaScript; with htmx the egress
panel updates in place and polls while a change is in flight."""

from __future__ import annotations

import csv
import datetime as dt
from collections.abc import Callable
from functools import wraps
from typing import Any
from urllib.parse import urlencode

from django.conf import settings
from django.contrib import admin, messages
from django.contrib.auth import REDIRECT_FIELD_NAME
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBadRequest, HttpResponseServerError, JsonResponse
from django.shortcuts import redirect, render
from django.template import loader
from django.urls import reverse
from django.utils import timezone
from django.utils.cache import patch_vary_headers
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST

from egressportal.core import capacity, labcheck, roles, selectors, services
from egressportal.core.errors import DomainError
from egressportal.core.models import App, EgressStatus, EgressType, Gateway, HealthStatus

from .allowlist import allowlist_snippets
from .exports import ADDRESS_FIELDS, address_row_dict, csv_safe
from .forms import AppSearchForm, EgressToggleForm
from .presentation import poll_delay, status_view

APPS_PER_PAGE = 25
EVENTS_PER_PAGE = 20


def portal_login_required(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """login_required that, for htmx requests, answers 401 with where to log in
    instead of swapping the login form into a fragment: the page keeps what the
    user was looking at and tells them their session ended (static/portal/portal.js)."""

    @wraps(view)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if request.user.is_authenticated:
            return view(request, *args, **kwargs)
        if request.htmx:
            login = f"{reverse(settings.LOGIN_URL)}?{urlencode({'next': request.htmx.current_url_abs_path or '/'})}"
            return htmx_problem(request, "session-expired", status=401, login_url=login)
        return redirect_to_login(request.get_full_path())

    return wrapped


def _app_or_404(request: HttpRequest, pk: int) -> App:
    try:
        return selectors.app_get(user=request.user, pk=pk)
    except App.DoesNotExist:
        # Someone else's app and no app at all look the same.
        raise Http404("No such app.") from None


def _is_pending(app: App) -> bool:
    """Work in flight: the panel keeps polling. Failed counts while hosts still
    owe the app a reconcile (the workers retry on their own)."""
    if app.egress_status in (EgressStatus.ASSIGNING, EgressStatus.RELEASING):
        return True
    return app.egress_status == EgressStatus.FAILED and app.host_syncs.exists()


def _enable_warning(app: App) -> str | None:
    """Enabling works, but not at full strength right now: say so before the click."""
    gateways = Gateway.objects.filter(region_id=app.region_id, enabled=True, draining=False)
    down = [g.name for g in gateways if g.health == HealthStatus.UNHEALTHY]
    if not down:
        return None
    names = ", ".join(down)
    return (
        f"Gateway {names} is not reachable right now: dedicated egress may take longer to come up "
        "and start with reduced redundancy."
    )


def _attempt(request: HttpRequest) -> int:
    try:
        return max(0, min(int(request.GET.get("n", 0)), 10_000))
    except ValueError:
        return 0


def _panel_context(
    request: HttpRequest, app: App, *, attempt: int = 0, error: str | None = None, oob: bool = False
) -> dict[str, Any]:
    egress = selectors.egress_summary(app)
    reserved = selectors.app_reserved_addresses(app)
    rows = selectors.app_address_rows(app, reserved=reserved)
    assigned = [r for r in rows if r.state != "reserved"]
    wanted = settings.EGRESS_IPS_PER_APP
    pending = _is_pending(app)
    shared = app.egress_type == EgressType.SHARED
    failed = app.egress_status == EgressStatus.FAILED
    unreachable = sorted(_unhealthy_gateways(app)) if pending else []
    view = status_view(
        egress_type=app.egress_type,
        status=app.egress_status,
        rows=rows,
        wanted=wanted,
        retrying=failed and pending,
        unreachable=unreachable,
        next_attempt_at=selectors.app_next_attempt_at(app) if pending or app.host_syncs.exists() else None,
    )
    message = egress["message"]
    return {
        "app": app,
        "egress": egress,
        "view": view,
        "rows": rows,
        "assigned_rows": assigned,
        "reserved_rows": [r for r in rows if r.state == "reserved"],
        "address_states": selectors.ADDRESS_STATES,
        # The worker's own words where they add to the status (why it is failing, degraded, waiting);
        # for "assigned" the status line above already says all of it.
        "message": message if message and app.egress_status != EgressStatus.ASSIGNED and message not in view.hint else "",
        "pending": pending,
        # Degraded changes by itself (the gateway comes back, is repaired, traffic returns): keep watching.
        "polling": pending or app.egress_status == EgressStatus.DEGRADED,
        "poll_attempt": attempt + 1,
        "poll_delay": poll_delay(status=app.egress_status, attempt=attempt),
        "offer_enable": shared and not app.delete_requested,
        "offer_disable": not shared and not app.delete_requested,
        "offer_retry": failed and not app.delete_requested,
        "retry_type": EgressType.SHARED if shared else EgressType.DEDICATED,
        "enable_problem": (
            capacity.egress_enable_problem(app, held=len(assigned), quota=services.quota_usage(app.owner_id))
            if shared else None
        ),
        "enable_warning": _enable_warning(app) if shared else None,
        "quarantine_days": settings.EGRESS_QUARANTINE_DAYS,
        "snippets": allowlist_snippets(
            app_name=app.name, addresses=[a for r in rows for a in (r.address, r.address6) if a]
        ),
        "events_page": Paginator(_events(request, app), EVENTS_PER_PAGE).get_page(1),
        "error": error,
        "oob_timeline": oob,
    }


def _unhealthy_gateways(app: App) -> set[str]:
    return {
        ip.gateway.name
        for ip in app.egress_ips.all()
        if ip.gateway is not None and ip.gateway.health == HealthStatus.UNHEALTHY
    }


def _events(request: HttpRequest, app: App) -> Any:
    # The owner reads what happened to their app; per-host steps are for staff.
    return selectors.app_events(app=app, host_detail=request.user.is_staff)


def _disable_context(app: App) -> dict[str, Any]:
    rows = selectors.app_address_rows(app)
    until = timezone.now() + dt.timedelta(days=settings.EGRESS_QUARANTINE_DAYS)
    return {"app": app, "rows": rows, "reserved_until": until, "quarantine_days": settings.EGRESS_QUARANTINE_DAYS}


@portal_login_required
@require_GET
def dashboard(request: HttpRequest) -> HttpResponse:
    form = AppSearchForm(request.GET)
    search = status = None
    if form.is_valid():
        search = form.cleaned_data["q"].strip() or None
        status = form.cleaned_data["status"] or None
    apps = selectors.app_list(user=request.user, search=search, status=status)
    page = Paginator(apps, APPS_PER_PAGE).get_page(request.GET.get("page"))
    ids = [app.pk for app in page.object_list]
    reserved = selectors.reserved_by_app(ids)
    failed = [app.pk for app in page.object_list if app.egress_status == EgressStatus.FAILED]
    working = selectors.apps_with_pending_work(failed) if failed else set()
    rows = []
    for app in page.object_list:
        addresses = selectors.app_address_rows(app, reserved=reserved.get(app.pk, []))
        rows.append({
            "app": app,
            "rows": addresses,
            "view": status_view(
                egress_type=app.egress_type, status=app.egress_status, rows=addresses,
                wanted=settings.EGRESS_IPS_PER_APP,
                retrying=app.pk in working,  # the same name as on the app's page
            ),
        })
    return render(
        request,
        "portal/dashboard.html",
        {
            "form": form,
            "page": page,
            "rows": rows,
            "filtered": bool(search or status),
            "show_owner": request.user.is_staff,
            "address_states": selectors.ADDRESS_STATES,
            "quota": services.quota_usage(request.user),
        },
    )


@portal_login_required
@require_GET
def app_detail(request: HttpRequest, pk: int) -> HttpResponse:
    app = _app_or_404(request, pk)
    context = _panel_context(request, app)
    context["placements"] = selectors.app_placements(app)
    context["can_check_egress"] = labcheck.lab_app_available(app)
    return render(request, "portal/app_detail.html", context)


@portal_login_required
@require_POST
def app_egress(request: HttpRequest, pk: int) -> HttpResponse:
    """The toggle: a plain form post (redirect back) or, from htmx, the panel.
    Going back to shared egress breaks partners' allow-lists at once, so it
    needs the confirmation step (``confirm=yes``, sent by the confirmation form)."""
    app = _app_or_404(request, pk)
    if roles.source_address_fields_in(request.POST):
        # Nobody says here where an app runs; refused loudly rather than ignored.
        return HttpResponseBadRequest(roles.SOURCE_ADDRESS_REFUSAL, content_type="text/plain; charset=utf-8")
    form = EgressToggleForm(request.POST)
    error = None
    changed = False
    if not form.is_valid():
        error = " ".join(form.errors.get("type", ["Choose shared or dedicated egress."]))
    elif form.needs_confirmation(app):
        return _render_disable_confirm(request, app)
    else:
        try:
            app, changed = services.egress_set(app=app, egress_type=form.cleaned_data["type"], actor=request.user)
        except DomainError as exc:
            error = exc.message
        except ValidationError as exc:
            error = " ".join(exc.messages)
    if request.htmx:
        app = _app_or_404(request, pk)
        return render(request, "portal/_egress_panel.html", _panel_context(request, app, error=error, oob=True))
    if error:
        messages.error(request, error)
    elif not changed:
        messages.info(request, "Nothing to change: egress already is as requested.")
    elif form.cleaned_data["type"] == EgressType.DEDICATED:
        messages.success(request, "Dedicated egress requested. Reload this page to follow its progress.")
    else:
        messages.success(request, "Going back to shared egress. Reload this page to follow its progress.")
    return redirect("portal:app_detail", pk=pk)


@portal_login_required
@require_GET
def app_disable_confirm(request: HttpRequest, pk: int) -> HttpResponse:
    """Are you sure? Names the addresses that stop carrying traffic and how long
    they stay reserved. A fragment for htmx (in place of the panel), else a page."""
    app = _app_or_404(request, pk)
    if app.egress_type == EgressType.SHARED:
        if request.htmx:
            return render(request, "portal/_egress_panel.html", _panel_context(request, app, oob=True))
        return redirect("portal:app_detail", pk=pk)
    return _render_disable_confirm(request, app)


def _render_disable_confirm(request: HttpRequest, app: App) -> HttpResponse:
    context = _disable_context(app)
    if request.htmx:
        return render(request, "portal/_disable_confirm.html", context)
    return render(request, "portal/disable_confirm.html", context)


@portal_login_required
@require_GET
@never_cache
def app_egress_panel(request: HttpRequest, pk: int) -> HttpResponse:
    """The egress panel alone, polled by htmx while a change is in flight."""
    app = _app_or_404(request, pk)
    if not request.htmx:
        return redirect("portal:app_detail", pk=pk)
    return render(request, "portal/_egress_panel.html", _panel_context(request, app, attempt=_attempt(request), oob=True))


@portal_login_required
@require_POST
def app_check_egress(request: HttpRequest, pk: int) -> HttpResponse:
    """Ask the lab's echo server which address it sees for this app right now."""
    app = _app_or_404(request, pk)
    check = labcheck.egress_check(app)
    if request.htmx:
        return render(request, "portal/_check_egress.html", {"app": app, "check": check, "checked_at": timezone.now()})
    (messages.info if not check.error else messages.error)(request, check.summary)
    return redirect("portal:app_detail", pk=pk)


@portal_login_required
@require_GET
def app_events(request: HttpRequest, pk: int) -> HttpResponse:
    """The timeline, one page at a time: a full page, or the next rows for htmx's "show more"."""
    app = _app_or_404(request, pk)
    page = Paginator(_events(request, app), EVENTS_PER_PAGE).get_page(request.GET.get("page"))
    template = "portal/_event_items.html" if request.htmx else "portal/app_events.html"
    response = render(request, template, {"app": app, "events_page": page})
    patch_vary_headers(response, ("HX-Request",))
    return response


@portal_login_required
@require_GET
def addresses(request: HttpRequest) -> HttpResponse:
    """Every address across my apps, for a firewall team: in use, standby, reserved."""
    rows = selectors.address_rows_for(request.user)
    return render(
        request,
        "portal/addresses.html",
        {"rows": rows, "address_states": selectors.ADDRESS_STATES, "show_owner": request.user.is_staff},
    )


@portal_login_required
@require_GET
def addresses_export(request: HttpRequest, fmt: str) -> HttpResponse:
    rows = selectors.address_rows_for(request.user)
    stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
    if fmt == "json":
        response = JsonResponse({"addresses": [address_row_dict(r) for r in rows]}, json_dumps_params={"indent": 2})
        response["Content-Disposition"] = f'attachment; filename="egress-addresses-{stamp}.json"'
        return response
    response = HttpResponse(content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="egress-addresses-{stamp}.csv"'
    writer = csv.DictWriter(response, fieldnames=ADDRESS_FIELDS)
    writer.writeheader()
    for row in rows:
        writer.writerow({k: csv_safe(v) for k, v in address_row_dict(row).items()})
    return response


# Error pages in the portal's look, each with a way back.


def htmx_problem(request: HttpRequest, problem: str, *, status: int, login_url: str = "") -> HttpResponse:
    """An htmx request that cannot be served as asked: no swap; the page shows
    a banner that says why and offers to reload or log in (portal.js)."""
    response = HttpResponse(PROBLEM_TEXT.get(problem, ""), status=status, content_type="text/plain; charset=utf-8")
    response["X-Portal-Problem"] = problem
    if login_url:
        response["X-Portal-Login"] = login_url
    return response


PROBLEM_TEXT = {
    "session-expired": "Your session has ended. Log in again to continue.",
    "csrf": "This page is out of date (you may have logged in again elsewhere). Reload it and try again.",
}


def admin_login(request: HttpRequest, extra_context: dict | None = None) -> HttpResponse:
    """The admin site's login: a signed-in non-staff user is told the admin site
    is for platform admins; anyone else logs in on the portal's login page."""
    if request.user.is_authenticated and not request.user.is_staff:
        return render(
            request,
            "errors/403.html",
            {
                "heading": "The admin site is for platform admins",
                "explanation": "You are signed in, but your account manages apps, not the platform. "
                "Everything about your apps is in the portal.",
            },
            status=403,
        )
    if request.method == "POST":
        # A log-in posted to the admin's own form (scripts, old bookmarks) still works, lockout included.
        return admin.AdminSite.login(admin.site, request, extra_context)
    target = request.GET.get(REDIRECT_FIELD_NAME) or reverse("admin:index")
    if request.user.is_authenticated:  # staff that reached the login page directly
        return redirect(target if url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()}) else "/")
    return redirect_to_login(target)


def csrf_failure(request: HttpRequest, reason: str = "") -> HttpResponse:
    if request.headers.get("HX-Request") == "true":
        return htmx_problem(request, "csrf", status=403)
    return render(request, "errors/403_csrf.html", {"reason": reason}, status=403)


def error_404(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    return render(request, "errors/404.html", status=404)


def error_403(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    return render(request, "errors/403.html", status=403)


def error_500(request: HttpRequest) -> HttpResponse:
    # No context processors: whatever broke may break them too.
    return HttpResponseServerError(loader.get_template("errors/500.html").render({"request": None}))
