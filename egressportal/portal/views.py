"""The browser portal for app owners: thin views over selectors (reads) and
services (writes). Every page works without JavaScript; with htmx the egress
panel updates in place and polls while a change is in flight."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.db.models import Q
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.cache import patch_vary_headers
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST
from django_htmx.http import HttpResponseClientRedirect

from egressportal.core import labcheck, selectors, services
from egressportal.core.errors import DomainError
from egressportal.core.models import App, EgressIP, EgressIPStatus, EgressStatus, EgressType

from .allowlist import allowlist_snippets
from .forms import AppSearchForm, EgressToggleForm

APPS_PER_PAGE = 25
EVENTS_PER_PAGE = 20
# Poll delays in seconds by attempt: quick while a toggle usually lands
# (about a second), then backing off so a long retry costs little.
POLL_DELAYS = (1, 2, 3, 4, 5)

STATUS_HINTS = {
    EgressStatus.DISABLED: "Outbound traffic leaves from the shared address of whichever node runs the app.",
    EgressStatus.ASSIGNING: "Configuring gateways and nodes; this usually takes about a second.",
    EgressStatus.ASSIGNED: "All outbound traffic of this app leaves from its dedicated addresses.",
    EgressStatus.DEGRADED: "Dedicated egress is on, but not every gateway is well.",
    EgressStatus.RELEASING: "Going back to shared egress: removing steering, then the addresses.",
    EgressStatus.FAILED: "The last change could not be applied.",
}


def portal_login_required(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """login_required that sends htmx requests to the login page as a full
    navigation, instead of swapping the login form into a fragment."""

    @wraps(view)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if request.user.is_authenticated:
            return view(request, *args, **kwargs)
        if request.htmx:
            login = f"{reverse(settings.LOGIN_URL)}?next={request.htmx.current_url_abs_path or '/'}"
            return HttpResponseClientRedirect(login)
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


def _enable_problem(app: App, held: int) -> str | None:
    """Why enabling would fail right now, told before the user clicks. Mirrors
    what egress_enable refuses, so nothing is offered that cannot happen."""
    if app.delete_requested:
        return "This app is being deleted."
    if not app.source_cidrs.all():
        return "This app has no source CIDRs yet, so there is no traffic to route; deploy it first."
    if held:
        return None  # re-enabling keeps the addresses it holds
    capacity = selectors.region_capacity(app.region)
    if capacity.gateways == 0:
        return capacity.problem()
    needed = max(1, min(settings.EGRESS_IPS_PER_APP, capacity.gateways))
    # Addresses this app or owner held before come back first, even from quarantine.
    reusable = (
        EgressIP.objects.filter(pool__region=app.region_id, status=EgressIPStatus.QUARANTINED)
        .filter(Q(last_app=app) | Q(last_owner=app.owner_id))
        .count()
    )
    if reusable >= needed:
        return None
    return capacity.problem(needed=needed - reusable)


def _poll_delay(attempt: int) -> int:
    return POLL_DELAYS[min(attempt, len(POLL_DELAYS) - 1)]


def _attempt(request: HttpRequest) -> int:
    try:
        return max(0, min(int(request.GET.get("n", 0)), 10_000))
    except ValueError:
        return 0


def _panel_context(app: App, *, attempt: int = 0, error: str | None = None, oob: bool = False) -> dict[str, Any]:
    egress = selectors.egress_summary(app)
    ips = egress["ips"]
    wanted = settings.EGRESS_IPS_PER_APP
    pending = _is_pending(app)
    shared = app.egress_type == EgressType.SHARED
    failed = app.egress_status == EgressStatus.FAILED
    message = egress["message"]
    reduced = app.is_dedicated and 0 < len(ips) < wanted
    return {
        "app": app,
        "egress": egress,
        "status_label": app.get_egress_status_display(),
        "status_hint": STATUS_HINTS.get(app.egress_status, ""),
        "retrying": failed and pending,
        # The reconciler says the same in its own words sometimes; say it once.
        "redundancy_reduced": reduced and "redundancy" not in message.lower(),
        "ips_wanted": wanted,
        "pending": pending,
        "poll_attempt": attempt + 1,
        "poll_delay": _poll_delay(attempt),
        "offer_enable": shared and not app.delete_requested,
        "offer_disable": not shared and not app.delete_requested,
        "offer_retry": failed and not app.delete_requested,
        "retry_type": EgressType.SHARED if shared else EgressType.DEDICATED,
        "enable_problem": _enable_problem(app, held=len(ips)) if shared else None,
        "quarantine_days": settings.EGRESS_QUARANTINE_DAYS,
        "snippets": allowlist_snippets(app_name=app.name, addresses=[ip["address"] for ip in ips]),
        "events_page": Paginator(selectors.app_events(app=app), EVENTS_PER_PAGE).get_page(1),
        "error": error,
        "oob_timeline": oob,
    }


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
    rows = [{"app": app, "ips": selectors.egress_summary(app)["ips"]} for app in page.object_list]
    return render(
        request,
        "portal/dashboard.html",
        {
            "form": form,
            "page": page,
            "rows": rows,
            "filtered": bool(search or status),
            "show_owner": request.user.is_staff,
        },
    )


@portal_login_required
@require_GET
def app_detail(request: HttpRequest, pk: int) -> HttpResponse:
    app = _app_or_404(request, pk)
    context = _panel_context(app)
    context["source_cidrs"] = [c.cidr for c in app.source_cidrs.all()]
    context["can_check_egress"] = labcheck.lab_app_available(app)
    return render(request, "portal/app_detail.html", context)


@portal_login_required
@require_POST
def app_egress(request: HttpRequest, pk: int) -> HttpResponse:
    """The toggle: a plain form post (redirect back) or, from htmx, the panel."""
    app = _app_or_404(request, pk)
    form = EgressToggleForm(request.POST)
    error = None
    changed = False
    if not form.is_valid():
        error = " ".join(form.errors.get("type", ["Choose shared or dedicated egress."]))
    else:
        try:
            app, changed = services.egress_set(app=app, egress_type=form.cleaned_data["type"], actor=request.user)
        except DomainError as exc:
            error = exc.message
        except ValidationError as exc:
            error = " ".join(exc.messages)
    if request.htmx:
        app = _app_or_404(request, pk)
        return render(request, "portal/_egress_panel.html", _panel_context(app, error=error, oob=True))
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
@never_cache
def app_egress_panel(request: HttpRequest, pk: int) -> HttpResponse:
    """The egress panel alone, polled by htmx while a change is in flight."""
    app = _app_or_404(request, pk)
    if not request.htmx:
        return redirect("portal:app_detail", pk=pk)
    return render(request, "portal/_egress_panel.html", _panel_context(app, attempt=_attempt(request), oob=True))


@portal_login_required
@require_POST
def app_check_egress(request: HttpRequest, pk: int) -> HttpResponse:
    """Ask the lab's echo server which address it sees for this app right now."""
    app = _app_or_404(request, pk)
    check = labcheck.egress_check(app)
    if request.htmx:
        return render(request, "portal/_check_egress.html", {"app": app, "check": check})
    (messages.info if not check.error else messages.error)(request, check.summary)
    return redirect("portal:app_detail", pk=pk)


@portal_login_required
@require_GET
def app_events(request: HttpRequest, pk: int) -> HttpResponse:
    """The timeline, one page at a time: a full page, or the next rows for htmx's "show more"."""
    app = _app_or_404(request, pk)
    page = Paginator(selectors.app_events(app=app), EVENTS_PER_PAGE).get_page(request.GET.get("page"))
    template = "portal/_event_items.html" if request.htmx else "portal/app_events.html"
    response = render(request, template, {"app": app, "events_page": page})
    patch_vary_headers(response, ("HX-Request",))
    return response
