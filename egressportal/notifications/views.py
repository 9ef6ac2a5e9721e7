"""Notification settings in the portal: webhooks (add, test, remove, rotate the
secret, the delivery log) and email. Thin views over the services."""

from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from egressportal.portal.views import portal_login_required

from . import services
from .forms import EmailForm, WebhookForm
from .models import EmailSubscription, WebhookEndpoint

DELIVERIES_SHOWN = 20


def _endpoint_or_404(request: HttpRequest, pk: int) -> WebhookEndpoint:
    # Only one's own webhooks, staff included: they belong to a person, not to the platform.
    endpoint = WebhookEndpoint.objects.filter(owner=request.user, pk=pk).first()
    if endpoint is None:
        raise Http404("No such webhook.")
    return endpoint


def _errors(form_errors: ValidationError) -> str:
    return " ".join(m for messages_ in form_errors.message_dict.values() for m in messages_)


@portal_login_required
def notification_settings(request: HttpRequest) -> HttpResponse:
    webhook_form = WebhookForm()
    subscription = EmailSubscription.objects.filter(user=request.user).first()
    email_form = EmailForm(initial={"events": subscription.events if subscription else []})
    if request.method == "POST":
        if request.POST.get("form") == "email":
            email_form = EmailForm(request.POST)
            if email_form.is_valid():
                services.email_subscription_set(user=request.user, events=email_form.cleaned_data["events"])
                messages.success(request, "Email notifications saved.")
                return redirect("notifications:settings")
        else:
            webhook_form = WebhookForm(request.POST)
            if webhook_form.is_valid():
                try:
                    endpoint = services.webhook_create(
                        owner=request.user, url=webhook_form.cleaned_data["url"],
                        events=webhook_form.cleaned_data["events"],
                    )
                except ValidationError as exc:
                    webhook_form.add_error("url", _errors(exc))
                else:
                    messages.success(request, "Webhook added. Copy its signing secret into your receiver.")
                    return redirect("notifications:webhook", pk=endpoint.pk)
    return render(
        request,
        "notifications/settings.html",
        {
            "webhooks": WebhookEndpoint.objects.filter(owner=request.user),
            "webhook_form": webhook_form,
            "email_form": email_form,
        },
        status=400 if request.method == "POST" else 200,
    )


@portal_login_required
@require_GET
def webhook_detail(request: HttpRequest, pk: int) -> HttpResponse:
    endpoint = _endpoint_or_404(request, pk)
    return render(
        request,
        "notifications/webhook.html",
        {
            "endpoint": endpoint,
            "secret": services.webhook_secret(endpoint),
            "deliveries": endpoint.deliveries.select_related("app")[:DELIVERIES_SHOWN],
            "event_labels": dict(WebhookForm.base_fields["events"].choices),
        },
    )


@portal_login_required
@require_POST
def webhook_action(request: HttpRequest, pk: int, action: str) -> HttpResponse:
    endpoint = _endpoint_or_404(request, pk)
    if action == "test":
        services.webhook_send_test(endpoint=endpoint)
        messages.info(request, "Test event queued; its delivery shows below in a moment.")
    elif action == "rotate":
        services.webhook_rotate_secret(endpoint=endpoint, actor=request.user)
        messages.success(request, "New signing secret: update your receiver, the old one no longer verifies.")
    elif action == "toggle":
        services.webhook_update(endpoint=endpoint, enabled=not endpoint.enabled, actor=request.user)
        messages.success(request, "Webhook resumed." if endpoint.enabled else "Webhook paused.")
    elif action == "delete":
        services.webhook_delete(endpoint=endpoint, actor=request.user)
        messages.success(request, "Webhook removed.")
        return redirect("notifications:settings")
    else:
        raise Http404("No such action.")
    return redirect("notifications:webhook", pk=pk)
