"""Staff see who holds which token, and may revoke one (delete); nobody sees a token or its hash."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from .models import ApiToken
from .services import api_token_revoke


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ["name", "user", "created", "expiry", "last_used_at"]
    list_filter = ["expiry", "created"]
    search_fields = ["name", "user__username"]
    fields = ["name", "user", "created", "expiry", "last_used_at"]
    readonly_fields = fields
    list_select_related = ["user"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # tokens are made by their owners, in the portal, and shown only to them

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def delete_model(self, request: HttpRequest, obj: ApiToken) -> None:
        api_token_revoke(token=obj, actor=request.user)

    def delete_queryset(self, request: HttpRequest, queryset: Any) -> None:
        for token in queryset:
            api_token_revoke(token=token, actor=request.user)
