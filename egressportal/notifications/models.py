"""Notifications of an app owner: webhooks (signed JSON posts) and email, each
with the events it wants, and a log of every webhook delivery."""

from __future__ import annotations

import secrets

from django.conf import settings
from django.db import models

from .transport import url_for_log

__all__ = ["NotificationEvent", "WebhookEndpoint", "WebhookDelivery", "DeliveryStatus", "EmailSubscription"]


class NotificationEvent(models.TextChoices):
    ASSIGNED = "egress.assigned", "Assigned: dedicated egress is live"
    DEGRADED = "egress.degraded", "Degraded: a gateway of the app is down"
    FAILED = "egress.failed", "Failed: the app's traffic cannot use dedicated egress"


# Sent only by the "send test" button.
TEST_EVENT = "test"


def _new_salt() -> str:
    return secrets.token_hex(16)


class WebhookEndpoint(models.Model):
    """Where to POST an owner's events. The signing secret is derived from the
    server's SECRET_KEY and this row's salt (notifications.signing): the
    database alone never holds it, and rotating means a new salt."""

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="webhooks")
    url = models.URLField(max_length=500, verbose_name="URL")
    events = models.JSONField(default=list, help_text="Event kinds to send (NotificationEvent values).")
    enabled = models.BooleanField(default=True)
    secret_salt = models.CharField(max_length=64, default=_new_salt, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["created_at", "id"]
        verbose_name = "webhook"

    def __str__(self) -> str:
        return url_for_log(self.url)


class DeliveryStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    RETRYING = "retrying", "Retrying"
    SUCCEEDED = "succeeded", "Delivered"
    FAILED = "failed", "Failed"


class WebhookDelivery(models.Model):
    endpoint = models.ForeignKey(WebhookEndpoint, on_delete=models.CASCADE, related_name="deliveries")
    event = models.CharField(max_length=64)
    app = models.ForeignKey("core.App", on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    payload = models.JSONField(default=dict)
    status = models.CharField(max_length=10, choices=DeliveryStatus.choices, default=DeliveryStatus.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    last_status_code = models.PositiveIntegerField(null=True, blank=True)
    last_response = models.TextField(blank=True, help_text="The start of the last response body.")
    last_error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["endpoint", "-created_at"])]
        verbose_name_plural = "webhook deliveries"

    def __str__(self) -> str:
        return f"{self.event} → {self.endpoint_id} ({self.status})"


class EmailSubscription(models.Model):
    """Which events an owner wants by email, at the address of their account."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="email_subscription")
    events = models.JSONField(default=list)
    updated_at = models.DateTimeField(auto_now=True)
