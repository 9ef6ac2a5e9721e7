"""Webhooks and their deliveries, read-only for staff (owners manage them in the portal)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from .models import WebhookDelivery, WebhookEndpoint
from .transport import url_for_log


class _ReadOnly(admin.ModelAdmin):
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(_ReadOnly):
    list_display = ["owner", "host", "events", "enabled", "created_at"]
    list_filter = ["enabled"]
    search_fields = ["owner__username"]
    exclude = ["url"]  # the path often is a credential; staff see the host
    readonly_fields = ["owner", "host", "events", "enabled", "created_at", "updated_at"]

    @admin.display(description="host")
    def host(self, obj: WebhookEndpoint) -> str:
        return url_for_log(obj.url)


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(_ReadOnly):
    list_display = ["created_at", "event", "endpoint", "app", "status", "attempts", "last_status_code", "last_attempt_at"]
    list_filter = ["status", "event"]
    exclude = ["payload", "last_response"]
    readonly_fields = ["endpoint", "event", "app", "status", "attempts", "last_status_code", "last_error",
                       "created_at", "last_attempt_at", "next_attempt_at", "delivered_at"]
