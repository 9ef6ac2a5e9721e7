"""Notifications: the writes. An app's status change becomes one delivery per
subscribed webhook (and an email), queued for the workers once the status
change commits; the workers' tasks call ``webhook_attempt`` and own retries."""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.mail import send_mail
from django.db import transaction
from django.utils import timezone

from egressportal.celery import EMAIL_TASK, WEBHOOK_TASK
from egressportal.celery import app as celery_app
from egressportal.core import selectors
from egressportal.core.models import App, EgressStatus
from egressportal.core.services.events import event_record
from egressportal.core.signals import StatusChange

from . import signing, transport
from .models import TEST_EVENT, DeliveryStatus, EmailSubscription, NotificationEvent, WebhookDelivery, WebhookEndpoint
from .transport import url_for_log

__all__ = [
    "WEBHOOK_TASK",
    "EMAIL_TASK",
    "webhook_create",
    "webhook_update",
    "webhook_delete",
    "webhook_rotate_secret",
    "webhook_secret",
    "webhook_send_test",
    "webhook_attempt",
    "email_subscription_set",
    "notifications_app_status_changed",
    "notifications_apps_status_changed",
    "notification_email_send",
]

logger = logging.getLogger(__name__)

MAX_WEBHOOKS_PER_USER = 10

# Status → the event an owner can subscribe to.
STATUS_EVENTS = {
    EgressStatus.ASSIGNED: NotificationEvent.ASSIGNED,
    EgressStatus.DEGRADED: NotificationEvent.DEGRADED,
    EgressStatus.FAILED: NotificationEvent.FAILED,
}


def _allow_http_loopback() -> bool:
    return bool(getattr(settings, "EGRESS_WEBHOOK_ALLOW_HTTP_LOOPBACK", False))


def _clean_events(events: Sequence[str]) -> list[str]:
    unknown = [e for e in events if e not in NotificationEvent.values]
    if unknown:
        raise ValidationError({"events": f"Unknown event {unknown[0]!r}; choose from {', '.join(NotificationEvent.values)}."})
    return [e for e in NotificationEvent.values if e in events]


def _clean_url(url: str) -> str:
    url = (url or "").strip()
    if len(url) > 500:
        raise ValidationError({"url": "The URL is longer than 500 characters."})
    try:
        transport.check_target(url, allow_http_loopback=_allow_http_loopback())
    except transport.WebhookTargetError as exc:
        raise ValidationError({"url": str(exc)}) from None
    return url


def webhook_secret(endpoint: WebhookEndpoint) -> str:
    return signing.derive_secret(settings.SECRET_KEY, endpoint.secret_salt)


def webhook_create(*, owner: Any, url: str, events: Sequence[str], actor: Any = None) -> WebhookEndpoint:
    url = _clean_url(url)
    events = _clean_events(events)
    with transaction.atomic():
        # Lock the owner's row: two concurrent creates cannot both pass the limit.
        get_user_model().objects.select_for_update().filter(pk=owner.pk).first()
        if WebhookEndpoint.objects.filter(owner=owner).count() >= MAX_WEBHOOKS_PER_USER:
            raise ValidationError({"url": f"You can have at most {MAX_WEBHOOKS_PER_USER} webhooks."})
        endpoint = WebhookEndpoint.objects.create(owner=owner, url=url, events=events)
        event_record(kind="webhook.created", message=f"Webhook to {url_for_log(url)} added.", actor=actor or owner,
                     subject=url_for_log(url)[:200], data={"after": {"events": events}})
    return endpoint


def webhook_update(*, endpoint: WebhookEndpoint, url: str | None = None, events: Sequence[str] | None = None,
                   enabled: bool | None = None, actor: Any = None) -> WebhookEndpoint:
    before = {"url": endpoint.url, "events": list(endpoint.events), "enabled": endpoint.enabled}
    if url is not None:
        endpoint.url = _clean_url(url)
    if events is not None:
        endpoint.events = _clean_events(events)
    if enabled is not None:
        endpoint.enabled = enabled
    after = {"url": endpoint.url, "events": endpoint.events, "enabled": endpoint.enabled}
    if after != before:
        endpoint.save(update_fields=["url", "events", "enabled", "updated_at"])
        for state in (before, after):
            state["url"] = url_for_log(state["url"])
        event_record(kind="webhook.updated", message=f"Webhook to {after['url']} changed.", actor=actor,
                     subject=after["url"][:200], data={"before": before, "after": after})
    return endpoint


def webhook_delete(*, endpoint: WebhookEndpoint, actor: Any = None) -> None:
    url = url_for_log(endpoint.url)
    endpoint.delete()
    event_record(kind="webhook.deleted", message=f"Webhook to {url} removed.", actor=actor, subject=url[:200])


def webhook_rotate_secret(*, endpoint: WebhookEndpoint, actor: Any = None) -> WebhookEndpoint:
    endpoint.secret_salt = WebhookEndpoint._meta.get_field("secret_salt").default()
    endpoint.save(update_fields=["secret_salt", "updated_at"])
    url = url_for_log(endpoint.url)
    event_record(kind="webhook.secret_rotated", message=f"Signing secret of the webhook to {url} replaced.",
                 actor=actor, subject=url[:200])
    return endpoint


def email_subscription_set(*, user: Any, events: Sequence[str]) -> EmailSubscription:
    subscription, _ = EmailSubscription.objects.update_or_create(user=user, defaults={"events": _clean_events(events)})
    return subscription


def _app_payload(app: App) -> dict[str, Any]:
    egress = selectors.egress_summary(app)
    return {
        "id": app.pk,
        "name": app.name,
        "region": app.region.slug,
        "egress": {
            "type": egress["type"],
            "status": egress["status"],
            "message": egress["message"],
            "ips": egress["ips"],
            "reserved": [
                {"address": r.address, "reserved_until": r.reserved_until.isoformat() if r.reserved_until else None}
                for r in selectors.app_address_rows(app)
                if r.state == "reserved"
            ],
        },
    }


def _payload(event: str, app_data: dict[str, Any] | None, message: str) -> dict[str, Any]:
    return {
        "id": str(uuid.uuid4()),
        "event": event,
        "created_at": timezone.now().isoformat(),
        "message": message,
        "app": app_data,
    }


def _enqueue(task: str, *args: Any) -> None:
    """Send the task once the current transaction commits (the rows must be there)."""

    def send() -> None:
        if settings.EGRESS_RECONCILE_DISPATCH == "none":
            return  # no broker in this process (tests without workers)
        try:
            celery_app.send_task(task, args=list(args))
        except Exception:  # the status change stands; the delivery stays "pending" in the owner's log
            logger.exception("could not enqueue %s %s", task, args)

    transaction.on_commit(send)


def notifications_app_status_changed(*, app: App, old_status: str, new_status: str, message: str = "") -> int:
    """``notifications_apps_status_changed`` for one app's change."""
    return notifications_apps_status_changed(changes=[StatusChange(app, old_status, new_status, message)])


def notifications_apps_status_changed(*, changes: Sequence[StatusChange]) -> int:
    """Queue the notifications apps' status changes ask for: one per subscribed
    webhook of each app's owner, and an email. Only real changes notify
    (assigned → assigned with new words does not). Returns webhooks queued.

    The owners' webhooks and subscriptions are read once for all the changes (a burst of 1,000 apps
    going "assigned" costs the same few queries as one); only the apps of owners who subscribed to
    something are read again, and only an app whose owner has a webhook for the event has its payload
    read."""
    notifying = [c for c in changes if c.old_status != c.new_status and c.new_status in STATUS_EVENTS]
    if not notifying:
        return 0
    owners = {c.app.owner_id for c in notifying}
    endpoints_of: dict[int, list[WebhookEndpoint]] = {}
    for endpoint in WebhookEndpoint.objects.filter(owner_id__in=owners, enabled=True).order_by("pk"):
        endpoints_of.setdefault(endpoint.owner_id, []).append(endpoint)
    subscriptions = {s.user_id: s for s in EmailSubscription.objects.filter(user_id__in=owners)}
    notifying = [c for c in notifying if c.app.owner_id in endpoints_of or c.app.owner_id in subscriptions]
    if not notifying:
        return 0
    apps = App.objects.select_related("region", "owner").in_bulk([c.app.pk for c in notifying])
    deliveries: list[WebhookDelivery] = []
    for change in notifying:
        app = apps.get(change.app.pk)
        if app is None:
            continue
        event = STATUS_EVENTS[change.new_status]
        text = change.message or app.egress_message or f"{app.name} is now {change.new_status}."
        endpoints = [e for e in endpoints_of.get(app.owner_id, []) if event in e.events]
        if endpoints:
            data = _app_payload(app)
            deliveries += [
                WebhookDelivery(endpoint=endpoint, event=event, app=app, payload=_payload(event, data, text))
                for endpoint in endpoints
            ]
        subscription = subscriptions.get(app.owner_id)
        if subscription and event in subscription.events and app.owner.email:
            _enqueue(EMAIL_TASK, app.owner_id, event, app.pk, text)
    for delivery in WebhookDelivery.objects.bulk_create(deliveries, batch_size=500):
        _enqueue(WEBHOOK_TASK, delivery.pk)
    return len(deliveries)


def webhook_send_test(*, endpoint: WebhookEndpoint) -> WebhookDelivery:
    with transaction.atomic():
        delivery = WebhookDelivery.objects.create(
            endpoint=endpoint,
            event=TEST_EVENT,
            payload=_payload(TEST_EVENT, None, "A test from Egress Portal: your webhook receives events."),
        )
        _enqueue(WEBHOOK_TASK, delivery.pk)
    return delivery


@dataclass(frozen=True)
class AttemptOutcome:
    delivered: bool
    retry: bool


def webhook_attempt(*, delivery_id: int, final: bool = False, retry_in: float | None = None) -> AttemptOutcome:
    """One delivery attempt: sign, post, record what the receiver said.
    ``final``: no retry follows whatever happens; ``retry_in``: when the next
    attempt would be (for the log)."""
    delivery = WebhookDelivery.objects.select_related("endpoint").filter(pk=delivery_id).first()
    if delivery is None or delivery.status in (DeliveryStatus.SUCCEEDED, DeliveryStatus.FAILED):
        return AttemptOutcome(delivered=bool(delivery and delivery.status == DeliveryStatus.SUCCEEDED), retry=False)
    endpoint = delivery.endpoint
    body = json.dumps(delivery.payload, separators=(",", ":"), sort_keys=True).encode()
    timestamp = int(time.time())
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "EgressPortal-Webhook/1",
        "X-Egress-Event": delivery.event,
        "X-Egress-Delivery": str(delivery.payload.get("id", delivery.pk)),
        "X-Egress-Timestamp": str(timestamp),
        signing.SIGNATURE_HEADER: signing.signature_header(webhook_secret(endpoint), timestamp, body),
    }
    result = transport.post(
        endpoint.url, body, headers, timeout=settings.EGRESS_WEBHOOK_TIMEOUT, allow_http_loopback=_allow_http_loopback()
    )
    now = timezone.now()
    retry = not result.ok and result.retryable and not final
    fields: dict[str, Any] = {
        "attempts": delivery.attempts + 1,
        "last_attempt_at": now,
        "last_status_code": result.status,
        "last_response": result.body[:transport.MAX_RESPONSE_BYTES],
        "last_error": result.error,
        "status": DeliveryStatus.SUCCEEDED if result.ok else DeliveryStatus.RETRYING if retry else DeliveryStatus.FAILED,
        "delivered_at": now if result.ok else None,
        "next_attempt_at": now + dt.timedelta(seconds=retry_in) if retry and retry_in is not None else None,
    }
    WebhookDelivery.objects.filter(pk=delivery.pk).update(**fields)
    if not result.ok:
        logger.info("webhook delivery %s to endpoint %s failed: %s", delivery.pk, endpoint.pk, result.error)
    return AttemptOutcome(delivered=result.ok, retry=retry)


def notification_email_send(*, user_id: int, event: str, app_id: int, message: str) -> bool:
    """Email through Django's email backend (the console in development)."""
    user = get_user_model().objects.filter(pk=user_id).first()
    app = App.objects.select_related("region").filter(pk=app_id).first()
    if user is None or not user.email or app is None:
        return False
    label = NotificationEvent(event).label if event in NotificationEvent.values else event
    subject = f"[Egress Portal] {app.name}: {label.split(':')[0]}"
    rows = selectors.app_address_rows(selectors.app_list(user=user).get(pk=app.pk)) if user.is_active else []
    lines = [
        f"{app.name} ({app.region.slug}): {label}.",
        "",
        message,
        "",
        "Addresses of this app (keep all of them in your allow-lists):",
        *[f"  {r.address}  {selectors.ADDRESS_STATES.get(r.state, r.state)}" for r in rows],
        "",
        "You get this email because you asked for it in the portal's notification settings.",
    ]
    send_mail(subject, "\n".join(lines), settings.DEFAULT_FROM_EMAIL, [user.email])
    return True
